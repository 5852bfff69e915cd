"""Transfer in training: teacher → student, cross-task, attention fusion, few-label data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from attnmtl.models import AttentionFusionMTL
from attnmtl.pipeline import train_run
from attnmtl.run import load_run_model
from attnmtl.run.build import build_data, build_model
from attnmtl.run.config import parse_config
from attnmtl.run.trainer import Trainer
from attnmtl.run.transfer import TransferObjective

from .conftest import toy_config

FAST = {"epochs": 1, "report": False}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    train_run(parse_config(toy_config(train=FAST)), out)
    return out


def fusion_config(**model: object) -> dict:
    """The toy config with the attention-fusion model."""
    config = toy_config(train=FAST)
    config["model"] = {"name": "attention_fusion", **model}
    return config


def first_grad(module: torch.nn.Module) -> torch.Tensor | None:
    """The gradient of ``module``'s first parameter."""
    return next(module.parameters()).grad


def _trainer(config: dict) -> Trainer:
    cfg = parse_config(config)
    splits = build_data(cfg)
    torch.manual_seed(0)
    return Trainer.from_config(cfg, splits, build_model(cfg, splits))


def test_student_equal_to_teacher_has_zero_transfer_loss(teacher_dir: Path) -> None:
    transfer = {
        "teacher": str(teacher_dir),
        "pairs": [
            {"student": "attention.cls", "loss": "attention_kl"},
            {"student": "encoder", "loss": "activation", "channels_last": True},
        ],
        "logits": {"weight": 1.0, "temperature": 2.0},
    }
    cfg = parse_config(toy_config(train=FAST, transfer=transfer))
    splits = build_data(cfg)
    student = load_run_model(teacher_dir)  # the teacher's own weights
    student.eval()
    objective = TransferObjective(cfg.transfer, student, splits.tasks)
    batch = splits.train.batch(torch.arange(8))
    objective.begin()
    terms = objective(student(batch.inputs, batch.lengths), batch)
    assert set(terms) == {
        "attention_kl:attention.cls",
        "activation:encoder",
        "logits:cls",
        "logits:reg",
    }
    for name, value in terms.items():
        assert abs(float(value.detach())) < 1e-6, name
    # a different student gives positive terms that reach its parameters
    other = build_model(cfg, splits)
    objective.close()
    objective = TransferObjective(cfg.transfer, other, splits.tasks)
    objective.begin()
    terms = objective(other(batch.inputs, batch.lengths), batch)
    assert all(float(v.detach()) > 0 for v in terms.values())
    torch.stack(list(terms.values())).sum().backward()
    assert first_grad(other.attention["cls"]) is not None
    assert all(p.grad is None for p in objective.teacher.parameters())  # type: ignore[union-attr]
    assert not objective.teacher.training  # type: ignore[union-attr]
    objective.close()


def test_teacher_student_run_logs_terms_and_keeps_teacher_out(teacher_dir: Path, tmp_path) -> None:
    transfer = {
        "teacher": str(teacher_dir),
        "pairs": [{"student": "attention.cls", "loss": "attention_kl", "weight": 2.0}],
        "logits": {"weight": 0.5},
    }
    before = load_run_model(teacher_dir).state_dict()
    run_dir, _ = train_run(
        parse_config(toy_config(train=FAST, transfer=transfer)), tmp_path / "student"
    )
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [x["transfer"] for x in lines if x["event"] == "train"]
    assert logged and set(logged[0]) == {"attention_kl:attention.cls", "logits:cls", "logits:reg"}
    assert all(math.isfinite(v) for x in logged for v in x.values())
    after = load_run_model(teacher_dir).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any("teacher" in k for k in load_run_model(run_dir).state_dict())


def test_cross_task_source_is_detached_by_default() -> None:
    for detach in (True, False):
        cross = [{"source": "cls", "target": "reg", "weight": 1.0, "detach": detach}]
        trainer = _trainer(toy_config(train=FAST, transfer={"cross_task": cross}))
        model = trainer.model
        batch = trainer.splits.train.batch(torch.arange(16))
        assert trainer.transfer is not None
        trainer.transfer.begin()
        terms = trainer.transfer(model(batch.inputs, batch.lengths), batch)
        (term,) = terms.values()
        assert float(term.detach()) > 0
        term.backward()
        source_grad = first_grad(model.attention["cls"])
        target_grad = first_grad(model.attention["reg"])
        assert target_grad is not None and float(target_grad.abs().sum()) > 0
        if detach:
            assert source_grad is None
        else:
            assert source_grad is not None and float(source_grad.abs().sum()) > 0


def test_transfer_gradient_reaches_encoder_through_a_feature_split() -> None:
    """With a gradient method that cuts the representation per task, the step's encoder
    gradient is the method's plus exactly the transfer term's."""
    cross = [{"source": "cls", "target": "reg", "weight": 3.0}]
    grads = {}
    for name, transfer in (("without", {}), ("with", {"cross_task": cross})):
        trainer = _trainer(
            toy_config(
                train=FAST,
                weighting={"name": "mgda", "mode": "features"},
                transfer=transfer,
                optimizer={"lr": 1e-12, "weight_decay": 0.0},
            )
        )
        assert trainer.split_features
        batch = trainer.splits.train.batch(torch.arange(16))
        trainer.step(batch)
        grads[name] = [p.grad.clone() for p in trainer.model.encoder.parameters()]
    reference = _trainer(toy_config(train=FAST, transfer={"cross_task": cross}))
    model, batch = reference.model, reference.splits.train.batch(torch.arange(16))
    reference.transfer.begin()
    (term,) = reference.transfer(model(batch.inputs, batch.lengths), batch).values()
    expected = torch.autograd.grad(term, list(model.encoder.parameters()))
    for g_with, g_without, g_term in zip(grads["with"], grads["without"], expected, strict=True):
        torch.testing.assert_close(g_with - g_without, g_term, atol=1e-6, rtol=1e-4)


def test_label_fraction_keeps_a_fraction_of_train_and_val_labels() -> None:
    cfg = parse_config(toy_config(data={"label_fraction": {"reg": 0.25}}))
    splits = build_data(cfg)
    assert splits.train.label_counts() == {"cls": 96, "reg": 24}
    assert splits.val.label_counts() == {"cls": 32, "reg": 8}
    assert splits.test.label_counts() == {"cls": 32, "reg": 32}
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        build_data(parse_config(toy_config(data={"label_fraction": {"nope": 0.5}})))
    with pytest.raises(ValueError, match=r"label_fraction.reg=1.5"):
        build_data(parse_config(toy_config(data={"label_fraction": {"reg": 1.5}})))


def test_transfer_config_errors() -> None:
    with pytest.raises(ValueError, match=r"need transfer\.teacher"):
        parse_config(toy_config(transfer={"pairs": [{"student": "attention.cls"}]}))
    with pytest.raises(ValueError, match=r"no transfer\.pairs"):
        parse_config(toy_config(transfer={"teacher": "runs/x"}))
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        _trainer(toy_config(transfer={"cross_task": [{"source": "nope", "target": "cls"}]}))
    with pytest.raises(ValueError, match="not a run directory"):
        _trainer(toy_config(transfer={"teacher": "/nonexistent", "logits": {"weight": 1.0}}))


def test_fusion_trains_only_fusion_pooling_and_heads(teacher_dir: Path, tmp_path) -> None:
    second = tmp_path / "second"
    train_run(parse_config(toy_config(train={**FAST, "seed": 1})), second)
    trainer = _trainer(fusion_config(sources=[str(teacher_dir), str(second)]))
    model = trainer.model
    assert isinstance(model, AttentionFusionMTL)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fusion", "attention", "heads"}
    torch.testing.assert_close(model.fusion.value.weight, torch.eye(8))
    frozen = {k: v.clone() for k, v in model.sources.state_dict().items()}
    model.train()
    assert not any(m.training for m in model.sources.modules())
    batch = trainer.splits.train.batch(torch.arange(16))
    out = model(batch.inputs, batch.lengths)
    weights = out.extras["fusion"]
    assert weights.shape == (16, 12, 2)
    torch.testing.assert_close(weights.sum(-1), torch.ones(16, 12))
    for _ in range(3):
        trainer.step(batch)
    assert all(torch.equal(frozen[k], v) for k, v in model.sources.state_dict().items())
    per_sample = model.fusion_weights(batch.inputs, batch.lengths)
    assert per_sample.shape == (16, 2)
    torch.testing.assert_close(per_sample.sum(-1), torch.ones(16))


def test_fusion_errors(teacher_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"model\.sources is empty"):
        _trainer(fusion_config(sources=[]))
    with pytest.raises(ValueError, match=r"model\.base=3"):
        _trainer(fusion_config(sources=[str(teacher_dir)], base=3))


def test_cached_teacher_gives_the_same_terms_and_skips_the_teacher(teacher_dir: Path) -> None:
    transfer = {
        "teacher": str(teacher_dir),
        "pairs": [
            {"student": "attention.cls", "loss": "attention_kl"},
            {"student": "encoder", "loss": "activation", "channels_last": True},
        ],
        "logits": {"weight": 1.0},
    }
    plain = _trainer(toy_config(train=FAST, transfer=transfer))
    cached = _trainer(toy_config(train=FAST, transfer={**transfer, "cache_teacher": True}))
    calls = []
    cached.transfer.teacher.register_forward_hook(lambda *a: calls.append(1))
    batch = cached.splits.train.batch(torch.tensor([3, 7, 11, 20]))
    assert batch.index is not None and batch.index.tolist() == [3, 7, 11, 20]
    for trainer in (plain, cached):
        trainer.model.eval()
    for _ in range(2):
        terms = {}
        for name, trainer in (("plain", plain), ("cached", cached)):
            trainer.transfer.begin()
            out = trainer.model(batch.inputs, batch.lengths)
            terms[name] = trainer.transfer(out, batch)
        for key in terms["plain"]:
            torch.testing.assert_close(terms["cached"][key], terms["plain"][key])
    assert len(calls) == 1  # the second time came from the cache
    # a batch with an unseen sample runs the teacher again
    cached.transfer.begin()
    other = cached.splits.train.batch(torch.tensor([3, 8]))
    cached.transfer(cached.model(other.inputs, other.lengths), other)
    assert len(calls) == 2


def test_a_teacher_that_does_not_fit_fails_before_the_run_directory(tmp_path) -> None:
    other = tmp_path / "other"  # a narrower teacher on the same data
    train_run(
        parse_config(toy_config(train=FAST, model={"encoder_options": {"hidden_dim": 6}})),
        other,
    )
    # same data, a pair whose teacher module path does not exist
    bad_path = {
        "teacher": str(other),
        "pairs": [
            {"student": "attention.cls", "teacher": "attention.nope", "loss": "attention_kl"}
        ],
    }
    with pytest.raises(ValueError, match=r"attention\.nope"):
        train_run(parse_config(toy_config(train=FAST, transfer=bad_path)), tmp_path / "a")
    assert not (tmp_path / "a").exists()
    # a module that returns no attention weights is named
    never = {
        "teacher": str(other),
        "pairs": [{"student": "encoder.encoder.pool", "loss": "attention_kl"}],
    }
    with pytest.raises(
        ValueError,
        match=r"'encoder\.encoder\.pool' \(MaskedPooling\) returned no attention weights",
    ):
        train_run(parse_config(toy_config(train=FAST, transfer=never)), tmp_path / "b")
    assert not (tmp_path / "b").exists()


RELATIONAL = ["pkd", "rkd_distance", "rkd_angle", "similarity", "pkt"]


@pytest.mark.parametrize("loss", RELATIONAL)
def test_relational_pairs_vanish_on_the_teacher_and_train_another_student(
    teacher_dir: Path, loss: str
) -> None:
    transfer = {"teacher": str(teacher_dir), "pairs": [{"student": "encoder", "loss": loss}]}
    cfg = parse_config(toy_config(train=FAST, transfer=transfer))
    splits = build_data(cfg)
    batch = splits.train.batch(torch.arange(8))
    student = load_run_model(teacher_dir).eval()  # the teacher's own weights
    objective = TransferObjective(cfg.transfer, student, splits.tasks)
    objective.begin()
    (term,) = objective(student(batch.inputs, batch.lengths), batch).values()
    assert abs(float(term.detach())) < 1e-6
    objective.close()
    torch.manual_seed(1)
    other = build_model(cfg, splits)
    objective = TransferObjective(cfg.transfer, other, splits.tasks)
    objective.begin()
    (term,) = objective(other(batch.inputs, batch.lengths), batch).values()
    assert float(term.detach()) > 0
    term.backward()
    assert first_grad(other.encoder) is not None
    objective.close()


def test_dist_logits_on_the_chosen_multiclass_task(teacher_dir: Path, tmp_path) -> None:
    transfer = {
        "teacher": str(teacher_dir),
        "logits": {"weight": 1.0, "loss": "dist", "temperature": 1.0, "tasks": ["cls"]},
    }
    run_dir, _ = train_run(
        parse_config(toy_config(train=FAST, transfer=transfer)), tmp_path / "student"
    )
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [x["transfer"] for x in lines if x["event"] == "train"]
    assert logged and set(logged[0]) == {"logits:cls"}
    bad = {**transfer, "logits": {"weight": 1.0, "loss": "dist"}}  # reg has no classes
    with pytest.raises(ValueError, match="loss=dist relates class probabilities; a regression"):
        _trainer(toy_config(train=FAST, transfer=bad))
    unknown = {**transfer, "logits": {"weight": 1.0, "loss": "nope"}}
    with pytest.raises(ValueError, match=r"logits.loss='nope'; expected one of: dist, kd"):
        parse_config(toy_config(train=FAST, transfer=unknown))
    missing = {**transfer, "logits": {"weight": 1.0, "tasks": ["nope"]}}
    with pytest.raises(ValueError, match=r"logits.tasks=\['nope'\]; expected some of"):
        _trainer(toy_config(train=FAST, transfer=missing))
