"""``attnmtl bench transfer``: the same student with and without transfer, same budget, N seeds.

Each kind of transfer is one experiment on built-in data, with a target task, a control (the
student alone) and a transfer variant that differs from the control only in its ``transfer:``
section (or, for fusion, in reading frozen source features instead of its own encoder). Every
run is selected on validation data by the target metric and scored on the test split; the
table gives mean ± sample std over the seeds (``train.seed`` = 0, 1, ...; the data and its
label subsets stay fixed), and the gain of the transfer mean over the control mean.

Kinds:

* ``teacher`` — attention-distribution transfer from a stronger teacher: a bidirectional GRU
  (64 per direction) trained on every label teaches a one-way GRU of width 24 that sees a fifth
  of the labels; MiniLM's KL between the teacher's and the student's attention-pooling rows,
  for every task, on every training sample.
* ``cross_task`` — inside one model: ``position`` keeps 10% of its labels, ``digit`` all; the
  position attention is pulled toward the (detached) digit attention.
* ``fusion`` — a frozen source run trained on ``digit`` and ``scale`` is fused by attention
  into a ``position`` model that keeps 5% of its labels; the control trains the same
  architecture as the source from scratch on those labels.
* ``textmt`` — all-MiniLM-L6-v2 (frozen, eager attention) teaches a 2-layer transformer on the
  same tokenizer: KL between the teacher's last-layer attention and the student's last-layer
  attention, heads averaged (12 against 4); needs ``attnmtl[text]``.
* ``textmt_tuned`` — the same, from a *task-tuned* teacher: MiniLM fine-tuned on textmt's two
  tasks (the ``textmt_hf`` config) teaches the student its last-layer attention (MiniLM's KL);
  the other arms are logit-only distillation (``kd``, Hinton's soft targets at temperature 4)
  and both together (``attention+kd``).
* ``multi_teacher`` — one task-tuned teacher per task (``textmt_hf`` trained on ``topic``
  alone and on ``sentiment`` alone) into one multi-task student (``transfer.teachers``), each
  teacher's last-layer attention KL and logits on its own task's samples; the ``bam`` arm is
  BAM!'s logits with teacher annealing (Clark et al., ACL 2019).

Prerequisite runs (the teacher, the source) are trained once, with seed 0, before the seeds.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from attnmtl.bench.mtl import stats
from attnmtl.eval.metrics import HIGHER_IS_BETTER
from attnmtl.pipeline import train_run
from attnmtl.run.config import load_config, parse_config

KINDS = ("teacher", "cross_task", "fusion", "textmt", "textmt_tuned", "multi_teacher")
QUIET = {"report": False, "tensorboard": False, "progress": False, "threads": 1}


@dataclass
class Experiment:
    """One kind: its prerequisite runs, control and transfer configs, and target metric.

    ``control`` and ``transfer`` map a prerequisite name to its run directory and return a
    config mapping (seed set by the caller); ``arms`` are further variants compared with the
    control the same way (e.g. logit-only distillation beside attention transfer).
    """

    kind: str
    task: str
    metric: str
    description: str
    prerequisites: dict[str, dict[str, Any]]
    control: Callable[[Mapping[str, Path]], dict[str, Any]]
    transfer: Callable[[Mapping[str, Path]], dict[str, Any]]
    arms: dict[str, Callable[[Mapping[str, Path]], dict[str, Any]]] = field(default_factory=dict)

    def variants(self) -> dict[str, Callable[[Mapping[str, Path]], dict[str, Any]]]:
        """Every variant trained per seed: the control, the transfer and the other arms."""
        return {"control": self.control, "transfer": self.transfer, **self.arms}


def _default(**sections: Any) -> dict[str, Any]:
    """The shipped default config (mnist1d-mt) with sections' keys replaced, quiet."""
    data = load_config("default").model_dump(mode="json")
    data.pop("transfer")
    for section, values in sections.items():
        data.setdefault(section, {}).update(copy.deepcopy(values))
    data["train"].update(QUIET)
    return data


def _with(config: dict[str, Any], **sections: Any) -> dict[str, Any]:
    out = copy.deepcopy(config)
    for section, values in sections.items():
        out[section] = copy.deepcopy(values)
    return out


def teacher_experiment(epochs: int) -> Experiment:
    few = {"label_fraction": {"digit": 0.2, "position": 0.2, "scale": 0.2}}
    small = {"encoder_options": {"cell": "gru", "hidden_dim": 24, "bidirectional": False}}
    train = {"epochs": epochs, "monitor": "position:accuracy"}
    student = _default(data=few, model=small, train=train)
    pairs = [
        {"student": f"attention.{t}", "loss": "attention_kl"}
        for t in ("digit", "position", "scale")
    ]
    return Experiment(
        "teacher",
        "position",
        "accuracy",
        "bi-GRU-64 teacher (all labels) → GRU-24 student (20% of labels): attention KL "
        "on each task's pooling",
        {"teacher": _default(train={"epochs": 20})},
        lambda runs: student,
        lambda runs: _with(student, transfer={"teacher": str(runs["teacher"]), "pairs": pairs}),
    )


def cross_task_experiment(epochs: int) -> Experiment:
    config = _default(
        data={"label_fraction": {"position": 0.1}},
        train={"epochs": epochs, "monitor": "position:accuracy"},
    )
    cross = [{"source": "digit", "target": "position", "weight": 1.0}]
    return Experiment(
        "cross_task",
        "position",
        "accuracy",
        "position with 10% of its labels; its attention pulled toward digit's (detached)",
        {},
        lambda runs: config,
        lambda runs: _with(config, transfer={"cross_task": cross}),
    )


def fusion_experiment(epochs: int) -> Experiment:
    target = {"tasks": ["position"], "label_fraction": {"position": 0.05}}
    train = {"epochs": epochs, "monitor": "position:accuracy"}
    control = _default(data=target, train=train)

    def fused(runs: Mapping[str, Path]) -> dict[str, Any]:
        return _with(control, model={"name": "attention_fusion", "sources": [str(runs["source"])]})

    return Experiment(
        "fusion",
        "position",
        "accuracy",
        "frozen digit+scale source fused into a position model with 5% of its labels",
        {"source": _default(data={"tasks": ["digit", "scale"]}, train={"epochs": 20})},
        lambda runs: control,
        fused,
    )


def textmt_experiment(epochs: int) -> Experiment:
    student = textmt_student(epochs)
    pair = {**last_layer_pair(student), "teacher": "model.encoder.layer.5.attention.self"}
    return Experiment(
        "textmt",
        "topic",
        "accuracy",
        "all-MiniLM-L6-v2 → small transformer: last-layer attention KL (heads averaged)",
        {},
        lambda runs: student,
        lambda runs: _with(
            student, transfer={"teacher": "hf:minilm", "pairs": [pair], "cache_teacher": True}
        ),
    )


def textmt_student(epochs: int, threads: int = 1) -> dict[str, Any]:
    """The shipped ``textmt`` student (quiet, ``epochs``, selected on topic accuracy)."""
    student = load_config("textmt").model_dump(mode="json")
    student.pop("transfer")
    student["train"].update(QUIET, epochs=epochs, monitor="topic:accuracy", threads=threads)
    return student


# A fine-tuned MiniLM teaching: its first-epoch forward passes (22.7M parameters, before the
# cache serves them) use both cores; the student's own steps are the same either way.
TAUGHT_THREADS = 2


def tuned_teacher(tasks: Sequence[str]) -> dict[str, Any]:
    """MiniLM fine-tuned on ``tasks`` of textmt (the shipped ``textmt_hf`` recipe), quiet."""
    config = load_config("textmt_hf").model_dump(mode="json")
    config.pop("transfer")
    config["data"]["tasks"] = list(tasks)
    config["train"].update({**QUIET, "threads": config["train"]["threads"]})
    config["train"]["monitor"] = f"{tasks[0]}:accuracy"
    return config


# The last layer of the student and of a fine-tuned MiniLM run (its encoder: hf).
STUDENT_LAST = "encoder.encoder.layers.{last}.attn"
TUNED_LAST = "encoder.encoder.model.encoder.layer.5.attention.self"


def last_layer_pair(student: Mapping[str, Any]) -> dict[str, Any]:
    """MiniLM's attention KL between a tuned MiniLM's last layer and the student's last."""
    layers = student["model"].get("encoder_options", {}).get("num_layers", 2)
    return {
        "student": STUDENT_LAST.format(last=layers - 1),
        "teacher": TUNED_LAST,
        "loss": "attention_kl",
        "heads": "mean",
    }


def textmt_tuned_experiment(epochs: int) -> Experiment:
    student = textmt_student(epochs, TAUGHT_THREADS)
    pair = last_layer_pair(student)

    def taught(attention: bool, logits: float) -> Callable[[Mapping[str, Path]], dict[str, Any]]:
        def config(runs: Mapping[str, Path]) -> dict[str, Any]:
            transfer = {
                "teacher": str(runs["teacher"]),
                "pairs": [pair] if attention else [],
                "logits": {"weight": logits},
                "cache_teacher": True,
            }
            return _with(student, transfer=transfer)

        return config

    return Experiment(
        "textmt_tuned",
        "topic",
        "accuracy",
        "MiniLM fine-tuned on textmt → small transformer: last-layer attention KL (heads "
        "averaged); arms: logit KD, both",
        {"teacher": tuned_teacher(["topic", "sentiment"])},
        lambda runs: student,
        taught(True, 0.0),
        {"kd": taught(False, 1.0), "attention+kd": taught(True, 1.0)},
    )


def multi_teacher_experiment(epochs: int) -> Experiment:
    student = textmt_student(epochs, TAUGHT_THREADS)
    pair = last_layer_pair(student)
    tasks = ("topic", "sentiment")

    def taught(bam: bool) -> Callable[[Mapping[str, Path]], dict[str, Any]]:
        def config(runs: Mapping[str, Path]) -> dict[str, Any]:
            teachers = {
                task: (
                    {"teacher": str(runs[task]), "logits": {"weight": 1.0}, "anneal": True}
                    if bam
                    else {"teacher": str(runs[task]), "pairs": [pair], "logits": {"weight": 1.0}}
                )
                for task in tasks
            }
            return _with(student, transfer={"teachers": teachers, "cache_teacher": True})

        return config

    return Experiment(
        "multi_teacher",
        "topic",
        "accuracy",
        "one fine-tuned MiniLM per task → one multi-task student: each teacher's attention KL "
        "and logit KD on its task's samples; arm bam: logits with teacher annealing",
        {task: tuned_teacher([task]) for task in tasks},
        lambda runs: student,
        taught(False),
        {"bam": taught(True)},
    )


BUILDERS = {
    "teacher": teacher_experiment,
    "cross_task": cross_task_experiment,
    "fusion": fusion_experiment,
    "textmt": textmt_experiment,
    "textmt_tuned": textmt_tuned_experiment,
    "multi_teacher": multi_teacher_experiment,
}


def check_kinds(kinds: Sequence[str]) -> list[str]:
    """The kinds, checked against :data:`KINDS`."""
    kinds = [k.strip() for k in kinds if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"--kinds {','.join(kinds)!r}; expected some of: {', '.join(KINDS)}")
    return kinds


def check_reuse(kinds: Sequence[str], items: Sequence[str]) -> dict[str, Path]:
    """``KIND/NAME=RUN_DIR`` items as {"KIND/NAME": RUN_DIR}, each naming a prerequisite of a
    chosen kind and a finished run (its ``summary.json``)."""
    reused: dict[str, Path] = {}
    for item in items:
        key, sep, path = item.partition("=")
        kind, _, name = key.partition("/")
        if not sep or kind not in kinds:
            raise ValueError(
                f"--reuse {item!r}; expected KIND/NAME=RUN_DIR with KIND among: {', '.join(kinds)}"
            )
        wanted = BUILDERS[kind](1).prerequisites
        if name not in wanted:
            raise ValueError(
                f"--reuse {item!r}: {kind} has no prerequisite {name!r}; expected one of: "
                f"{', '.join(wanted) or '(none)'}"
            )
        if not (Path(path) / "summary.json").is_file():
            raise ValueError(f"--reuse {item!r}: {path} is not a finished run (no summary.json)")
        reused[key] = Path(path)
    return reused


def train_config(data: Mapping[str, Any], out: Path) -> dict[str, Any]:
    """Train one run into ``out`` (quiet); its summary."""
    _, summary = train_run(parse_config(data), out, Console(stderr=True, quiet=True))
    return summary


def run(
    kinds: Sequence[str] = KINDS,
    seeds: int = 3,
    epochs: int = 12,
    out: Path | None = None,
    log: Callable[[str], None] = print,
    reuse: Mapping[str, Path] | None = None,
) -> dict[str, Any]:
    """Every kind's prerequisites (or the finished runs ``reuse`` names for them, keyed
    ``KIND/NAME``), then every variant per seed; the results."""
    kinds = check_kinds(kinds)
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already exists; choose a new (or empty) directory")
    experiments = [BUILDERS[k](epochs) for k in kinds]
    results: dict[str, Any] = {"seeds": seeds, "epochs": epochs, "kinds": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="attnmtl-bench-transfer-") as tmp:
        root = out if out is not None else Path(tmp)
        for exp in experiments:
            runs: dict[str, Path] = {}
            for name, config in exp.prerequisites.items():
                if f"{exp.kind}/{name}" in (reuse or {}):
                    runs[name] = (reuse or {})[f"{exp.kind}/{name}"]
                    log(f"{exp.kind}/{name}: reusing {runs[name]}")
                    continue
                runs[name] = root / exp.kind / name
                tick = time.perf_counter()
                train_config(config, runs[name])
                log(f"{exp.kind}/{name}: trained ({time.perf_counter() - tick:.0f} s)")
            variants = exp.variants()
            scores: dict[str, list[float]] = {name: [] for name in variants}
            others: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
            for seed in range(seeds):
                for variant, make in variants.items():
                    config = make(runs)
                    config = _with(config, train={**config["train"], "seed": seed})
                    tick = time.perf_counter()
                    summary = train_config(config, root / exp.kind / f"{variant}-seed{seed}")
                    value = float(summary["tasks"][exp.task][exp.metric])
                    scores[variant].append(value)
                    others[variant].append(primary_scores(summary))
                    log(
                        f"{exp.kind}/{variant} seed {seed}: {exp.task}:{exp.metric}={value:.4f} "
                        f"({time.perf_counter() - tick:.0f} s)"
                    )
            results["kinds"][exp.kind] = summarise(exp, scores)
            results["kinds"][exp.kind]["tasks"] = {
                task: {v: stats([run[task] for run in others[v]]) for v in others}
                for task in others["control"][0]
            }
    results["wall_s"] = time.perf_counter() - start
    return results


def primary_scores(summary: Mapping[str, Any]) -> dict[str, float]:
    """task → its primary metric on test data (accuracy, or MAE for regression)."""
    return {
        task: float(values["accuracy"] if "accuracy" in values else values["mae"])
        for task, values in summary["tasks"].items()
    }


def summarise(exp: Experiment, scores: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Mean ± std per variant, the gain (positive = transfer helped) and whether it exceeds
    both variants' std. (``run`` adds ``tasks``: every task's primary metric per variant.)"""
    control, transfer = stats(scores["control"]), stats(scores["transfer"])
    sign = 1.0 if HIGHER_IS_BETTER[exp.metric] else -1.0
    gain = sign * (transfer["mean"] - control["mean"])
    entry: dict[str, Any] = {
        "description": exp.description,
        "task": exp.task,
        "metric": exp.metric,
        "control": control,
        "transfer": transfer,
        "gain": gain,
        "beats_std": gain > max(control["std"], transfer["std"]),
    }
    arms = {}
    for name in exp.arms:
        arm = stats(scores[name])
        arm_gain = sign * (arm["mean"] - control["mean"])
        arms[name] = {
            **arm,
            "gain": arm_gain,
            "beats_std": arm_gain > max(control["std"], arm["std"]),
        }
    if arms:
        entry["arms"] = arms
    return entry


def render(results: Mapping[str, Any]) -> Table:
    """The results as a rich table."""
    table = Table(title=f"bench transfer ({results['seeds']} seeds, {results['epochs']} epochs)")
    for column in ("kind", "target", "control", "transfer", "gain", "> std"):
        table.add_column(column, justify="left" if column in ("kind", "target") else "right")
    for kind, entry in results["kinds"].items():
        table.add_row(
            kind,
            f"{entry['task']}:{entry['metric']}",
            f"{entry['control']['mean']:.4f} ± {entry['control']['std']:.4f}",
            f"{entry['transfer']['mean']:.4f} ± {entry['transfer']['std']:.4f}",
            f"{entry['gain']:+.4f}",
            "yes" if entry["beats_std"] else "no",
        )
        for name, arm in entry.get("arms", {}).items():
            table.add_row(
                f"{kind} ({name})",
                f"{entry['task']}:{entry['metric']}",
                f"{entry['control']['mean']:.4f} ± {entry['control']['std']:.4f}",
                f"{arm['mean']:.4f} ± {arm['std']:.4f}",
                f"{arm['gain']:+.4f}",
                "yes" if arm["beats_std"] else "no",
            )
    return table
