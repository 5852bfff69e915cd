"""One teacher per task (``transfer.teachers``, BAM!): each teacher's terms on its own task's
samples only, and teacher annealing λ·L(gold) + (1 − λ)·L(teacher)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnmtl.core import task_losses
from attnmtl.pipeline import train_run
from attnmtl.run.build import build_data, build_model
from attnmtl.run.config import parse_config
from attnmtl.run.trainer import Trainer
from attnmtl.transfer.losses import attention_kl, logit_distillation

from .conftest import toy_config

FAST = {"epochs": 1, "report": False}
HALF = {"missing": 0.5}  # each task labelled on about half the samples, not the same half


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two finished toy runs with different seeds: one teacher per task."""
    out = {}
    for seed, task in enumerate(("cls", "reg")):
        out[task] = tmp_path_factory.mktemp(f"teacher-{task}") / "run"
        train_run(parse_config(toy_config(train={**FAST, "seed": seed})), out[task])
    return out


def trainer_for(transfer: dict) -> Trainer:
    cfg = parse_config(toy_config(train=FAST, data=HALF, transfer=transfer))
    splits = build_data(cfg)
    torch.manual_seed(0)
    return Trainer.from_config(cfg, splits, build_model(cfg, splits))


def per_task(teachers: dict[str, Path], **extra: object) -> dict:
    return {
        "teachers": {
            "cls": {
                "teacher": str(teachers["cls"]),
                "pairs": [{"student": "attention.cls", "loss": "attention_kl"}],
                "logits": {"weight": 0.5, "temperature": 2.0},
                **extra,
            },
            "reg": {
                "teacher": str(teachers["reg"]),
                "pairs": [{"student": "attention.cls", "loss": "attention_kl", "weight": 0.5}],
                "logits": {"weight": 2.0},
            },
        }
    }


def test_each_teachers_terms_are_taken_on_its_tasks_samples(teachers: dict[str, Path]) -> None:
    trainer = trainer_for(per_task(teachers))
    assert trainer.transfer is not None
    cls_teacher, reg_teacher = (slot.model for slot in trainer.transfer.slots)
    batch = trainer.splits.train.batch(torch.arange(32))
    rows = {t: batch.label_mask[t].nonzero()[:, 0] for t in ("cls", "reg")}
    assert 0 < len(rows["cls"]) < 32 and not torch.equal(rows["cls"], rows["reg"])
    model = trainer.model.eval()
    trainer.transfer.begin()
    out = model(batch.inputs, batch.lengths)
    terms = trainer.transfer(out, batch)
    assert set(terms) == {
        "cls/attention_kl:attention.cls",
        "cls/logits:cls",
        "reg/attention_kl:attention.cls",  # the same student record, read by both teachers
        "reg/logits:reg",
    }
    with torch.no_grad():
        taught_cls = cls_teacher(batch.inputs[rows["cls"]])
        taught_reg = reg_teacher(batch.inputs[rows["reg"]])
    r = rows["cls"]
    expected = attention_kl(taught_cls.attention["cls"], out.attention["cls"][r])
    torch.testing.assert_close(terms["cls/attention_kl:attention.cls"], expected)
    q = rows["reg"]
    other = attention_kl(taught_reg.attention["cls"], out.attention["cls"][q])
    torch.testing.assert_close(terms["reg/attention_kl:attention.cls"], 0.5 * other)
    kd = logit_distillation(out.preds["cls"][r], taught_cls.preds["cls"], "multiclass", 2.0)
    torch.testing.assert_close(terms["cls/logits:cls"], 0.5 * kd)
    mse = (out.preds["reg"][rows["reg"]] - taught_reg.preds["reg"]).square().mean()
    torch.testing.assert_close(terms["reg/logits:reg"], 2.0 * mse)


def test_a_batch_without_the_tasks_samples_gets_no_term_from_its_teacher(
    teachers: dict[str, Path],
) -> None:
    trainer = trainer_for(per_task(teachers))
    assert trainer.transfer is not None
    splits = trainer.splits.train
    only_reg = (~splits.label_mask["cls"] & splits.label_mask["reg"]).nonzero()[:4, 0]
    batch = splits.batch(only_reg)
    trainer.transfer.begin()
    terms = trainer.transfer(trainer.model(batch.inputs, batch.lengths), batch)
    assert set(terms) == {"reg/attention_kl:attention.cls", "reg/logits:reg"}


@pytest.mark.parametrize("progress", [0.0, 0.25, 1.0])
def test_annealing_mixes_gold_and_teacher_by_progress(
    teachers: dict[str, Path], progress: float
) -> None:
    """BAM!: λ·L(gold) + (1 − λ)·L(teacher's soft targets, temperature 1), λ = progress."""
    trainer = trainer_for(per_task(teachers, anneal=True))
    assert trainer.transfer is not None
    batch = trainer.splits.train.batch(torch.arange(32))
    trainer.transfer.begin()
    out = trainer.model(batch.inputs, batch.lengths)
    trainer.transfer(out, batch)
    gold = task_losses(out, batch, trainer.splits.tasks)
    mixed = trainer.transfer.anneal(gold, out, batch, progress)
    rows = batch.label_mask["cls"].nonzero()[:, 0]
    with torch.no_grad():
        soft = trainer.transfer.slots[0].model(batch.inputs[rows]).preds["cls"]
    target = soft.softmax(-1)
    teacher_loss = (target * (target.log() - out.preds["cls"][rows].log_softmax(-1))).sum(-1)
    expected = progress * gold["cls"] + (1 - progress) * teacher_loss.mean()
    torch.testing.assert_close(mixed["cls"], expected)
    torch.testing.assert_close(mixed["reg"], gold["reg"])  # not annealed


def test_progress_rises_through_training(teachers: dict[str, Path]) -> None:
    trainer = trainer_for(per_task(teachers, anneal=True))
    assert trainer.progress() == 0.0
    trainer.position.batch = 3  # 96 samples, batch 16: 6 steps an epoch, 1 epoch
    assert trainer.progress() == pytest.approx(0.5)


def test_a_run_with_a_teacher_per_task_logs_each_term(
    teachers: dict[str, Path], tmp_path: Path
) -> None:
    transfer = {**per_task(teachers, anneal=True), "cache_teacher": True}
    out = tmp_path / "student"
    train_run(
        parse_config(toy_config(train={**FAST, "epochs": 2}, data=HALF, transfer=transfer)), out
    )
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [x["transfer"] for x in lines if x["event"] == "train"]
    assert logged and set(logged[-1]) == {
        "cls/attention_kl:attention.cls",
        "cls/logits:cls",
        "reg/attention_kl:attention.cls",
        "reg/logits:reg",
    }
    assert set(json.loads((out / "summary.json").read_text())["tasks"]) == {"cls", "reg"}


def test_per_task_teacher_errors(teachers: dict[str, Path]) -> None:
    both = {**per_task(teachers), "teacher": str(teachers["cls"]), "logits": {"weight": 1.0}}
    with pytest.raises(ValueError, match="not both"):
        parse_config(toy_config(transfer=both))
    with pytest.raises(ValueError, match=r"transfer\.teachers\.cls: no pairs"):
        parse_config(toy_config(transfer={"teachers": {"cls": {"teacher": "runs/x"}}}))
    bad_loss = {
        "teachers": {"cls": {"teacher": "runs/x", "pairs": [{"student": "a", "loss": "l9"}]}}
    }
    with pytest.raises(ValueError, match=r"transfer\.teachers\.cls\.pairs: loss='l9'"):
        parse_config(toy_config(transfer=bad_loss))
    unknown = {"teachers": {"nope": {"teacher": str(teachers["cls"]), "anneal": True}}}
    with pytest.raises(ValueError, match="unknown task 'nope'; expected one of: cls, reg"):
        trainer_for(unknown)
    other = {
        "teachers": {
            "cls": {"teacher": str(teachers["cls"]), "logits": {"weight": 1.0, "tasks": ["zz"]}}
        }
    }
    with pytest.raises(ValueError, match=r"transfer\.teachers\.cls\.logits\.tasks=\['zz'\]"):
        trainer_for(other)


def test_two_teachers_read_one_self_attention_module_of_the_student(tmp_path: Path) -> None:
    """Both teachers' pairs read the student's first self-attention layer, which the model
    calls without asking for weights: one hook serves both (two would each rewrite the call)."""
    from attnmtl.transfer import Capture

    model = {
        "encoder": "transformer",
        "encoder_options": {"dim": 8, "num_heads": 2, "num_layers": 1},
    }
    teacher = tmp_path / "teacher"
    train_run(parse_config(toy_config(train=FAST, model=model)), teacher)
    path = "encoder.encoder.layers.0.attn"
    pair = {"student": path, "loss": "attention_kl"}
    spec = {"teacher": str(teacher), "pairs": [pair]}
    cfg = parse_config(
        toy_config(
            train=FAST, data=HALF, model=model, transfer={"teachers": {"cls": spec, "reg": spec}}
        )
    )
    splits = build_data(cfg)
    trainer = Trainer.from_config(cfg, splits, build_model(cfg, splits))
    assert trainer.transfer is not None
    batch = splits.train.batch(torch.arange(32))
    trainer.model.eval()  # no dropout: the two forward passes below see the same weights
    trainer.transfer.begin()
    out = trainer.model(batch.inputs, batch.lengths)
    terms = trainer.transfer(out, batch)
    trainer.transfer.close()
    with Capture(trainer.model, [path]) as mine, torch.no_grad():
        trainer.model(batch.inputs, batch.lengths)
        student = mine.get(path)
    teacher_model = trainer.transfer.slots[0].model
    with Capture(teacher_model, [path]) as theirs, torch.no_grad():
        teacher_model(batch.inputs, batch.lengths)
        taught = theirs.get(path)
    for task in ("cls", "reg"):
        rows = batch.label_mask[task].nonzero()[:, 0]
        expected = attention_kl(taught[rows], student[rows])
        torch.testing.assert_close(terms[f"{task}/attention_kl:{path}"], expected)
