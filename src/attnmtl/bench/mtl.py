"""Benchmark: the multi-task gain Δm of each weighting against single-task baselines.

For every seed, one single-task baseline per task and one multi-task model per weighting are
trained in this process, each exactly as ``attnmtl train`` would train it (same data, model,
epochs, batch size, optimizer and schedule — the same budget), and each is scored on the test
split with its checkpoint chosen on validation data only:

* a single-task baseline keeps the configured data and drops every other task's labels (the
  same samples, splits, standardisation and task mask), builds the same model for that one task
  (same encoder, one attention/head), trains with equal weighting and is selected on its task's
  primary metric (``train.monitor=TASK:accuracy`` or ``TASK:mae``) on validation data;
* a multi-task model switches ``weighting.name`` (the config's weighting options are kept only
  for the weighting they belong to) and is selected on its *validation* Δm against the same
  seed's baselines' validation scores — the quantity reported, measured on validation data.
  (LibMTL picks the epoch with the best *test* Δm; nothing here reads test scores before the
  selected checkpoint is fixed.)

Δm (:func:`attnmtl.eval.delta_m.delta_m`, Maninis et al. 2019 as LibMTL defines it) is taken per
weighting and seed over its default metrics (every evaluation metric but ``loss`` and ``r2``;
listed in ``delta_m_metrics``). Seeds change the
training seed (``train.seed`` + 0, 1, ...: initialisation and shuffling); the data (its own
``data.seed``) stays the same for every run.

Results: per task its primary metric (mean ± sample std over seeds, and every run), under
``metrics`` every test metric, and Δm per weighting (per model and weighting, keyed
``MODEL/WEIGHTING``, when ``models`` compares several multi-task models — hard sharing against
MTAN, say — all against the same single-task baselines built on the config's model)::

    {"config", "seeds", "tasks": {TASK: {"metric", "higher_is_better"}},
     "single": {TASK: {"mean", "std", "runs", "metrics": {METRIC: {"mean", "std", "runs"}}}},
     "multi": {WEIGHTING: {"model", "weighting", "tasks": {TASK: {... as single ...}},
                           "delta_m": {"mean", "std", "runs"}}},
     "delta_m_metrics": {TASK: [METRIC, ...]}, "train_seeds", "budget", "selection", "wall_s"}
"""

from __future__ import annotations

import importlib
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from attnmtl.core.io import write_json_atomic, write_text_atomic
from attnmtl.data import DataSplits
from attnmtl.eval.baselines import fit_baselines
from attnmtl.eval.delta_m import default_metrics, delta_m
from attnmtl.eval.metrics import HIGHER_IS_BETTER
from attnmtl.models import list_models
from attnmtl.run.build import build_data, build_model, seed_everything
from attnmtl.run.config import RunConfig, dump_config, load_config, parse_config
from attnmtl.run.trainer import Trainer
from attnmtl.weighting import list_weightings

DEFAULT_WEIGHTINGS = ("equal", "uncertainty", "dwa")
SELECTION = {
    "single": "validation TASK:PRIMARY_METRIC (train.monitor)",
    "multi": "validation delta_m against the same seed's single-task validation scores",
}

Scores = dict[str, dict[str, float]]  # task → metric → value


@dataclass(frozen=True)
class RunSpec:
    """One training run of the benchmark: a single-task baseline or a multi-task model."""

    seed: int
    config: RunConfig
    task: str | None = None  # the baseline's task; None for a multi-task run
    weighting: str | None = None  # the multi-task run's weighting
    model: str | None = None  # the multi-task run's model, when the bench compares models

    @property
    def label(self) -> str:
        """A short name, also the run's folder name under ``--out``."""
        return run_label(self.seed, self.task, self.weighting, self.model)

    @property
    def entry(self) -> str:
        """The multi-task run's key in ``results["multi"]``: its weighting, or model/weighting."""
        return multi_key(str(self.weighting), self.model)


def run_label(
    seed: int, task: str | None = None, weighting: str | None = None, model: str | None = None
) -> str:
    """``seed<N>-single-<task>``, ``seed<N>-<weighting>`` or ``seed<N>-<model>-<weighting>``."""
    if task is not None:
        return f"seed{seed}-single-{task}"
    return f"seed{seed}-" + (f"{model}-{weighting}" if model is not None else str(weighting))


def multi_key(weighting: str, model: str | None = None) -> str:
    """A multi-task entry's name: the weighting, prefixed by ``model/`` when models are compared."""
    return weighting if model is None else f"{model}/{weighting}"


def scores(results: Mapping[str, Mapping[str, float]]) -> Scores:
    """A summary's per-task results as plain floats (task → metric → value)."""
    return {task: {m: float(v) for m, v in values.items()} for task, values in results.items()}


def check_weightings(weightings: Sequence[str]) -> list[str]:
    """``weightings`` as a list of distinct registered names; ValueError otherwise."""
    names = [w.strip() for w in weightings if w.strip()]
    choices = list_weightings()
    for name in names:
        if name not in choices:
            raise ValueError(f"unknown weighting {name!r}; expected one of: {', '.join(choices)}")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"weightings={list(weightings)!r}; expected distinct names")
    return names


def check_models(models: Sequence[str]) -> list[str]:
    """``models`` as a list of distinct registered model names; ValueError otherwise."""
    names = [m.strip() for m in models if m.strip()]
    choices = list_models()
    for name in names:
        if name not in choices:
            raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(choices)}")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"models={list(models)!r}; expected distinct names")
    return names


def variant(base: RunConfig, changes: Mapping[str, Any]) -> RunConfig:
    """``base`` with ``changes``: ``train`` keys merged in, any other section replaced whole."""
    data = base.model_dump(mode="json")
    for section, values in changes.items():
        data[section] = {**data[section], **values} if section == "train" else dict(values)
    return parse_config(data)


def plan(
    config_name: str,
    overrides: Sequence[str],
    weightings: Sequence[str],
    seeds: int,
    models: Sequence[str] | None = None,
) -> tuple[RunConfig, DataSplits, list[RunSpec]]:
    """The base config, its data and every run, in training order.

    Per seed: the single-task baselines (on the config's model), then the multi-task model per
    weighting — or, with ``models``, each of those models per weighting, built with the config's
    model options (a model that does not take one of them fails in :func:`check_runs`). Raises
    ValueError for a bad config, weighting, model or seed count before anything trains.
    """
    names = check_weightings(weightings)
    compared = check_models(models) if models is not None else None
    if seeds < 1:
        raise ValueError(f"seeds={seeds!r}; expected >= 1")
    fixed = ["train.progress=false", "train.tensorboard=false", "train.test_on=best"]
    base = load_config(config_name, [*overrides, *fixed])
    seed_everything(base.train.seed, base.train.deterministic)  # as train_run does
    splits = build_data(base)  # the same data for every run (its own data.seed)
    runs: list[RunSpec] = []
    for seed in range(base.train.seed, base.train.seed + seeds):
        for name, task in splits.tasks.items():
            monitor = f"{name}:{task.primary_metric}"
            single = {"weighting": {"name": "equal"}, "train": {"seed": seed, "monitor": monitor}}
            runs.append(RunSpec(seed, variant(base, single), task=name))
        options = base.model.model_dump()
        for model in compared if compared is not None else [None]:
            for name in names:
                weighting = (
                    base.weighting.model_dump() if name == base.weighting.name else {"name": name}
                )
                changes: dict[str, Any] = {
                    "weighting": weighting,
                    "train": {"seed": seed, "monitor": "loss"},
                }
                if model is not None:
                    changes["model"] = {**options, "name": model}
                runs.append(RunSpec(seed, variant(base, changes), weighting=name, model=model))
    return base, splits, runs


def run_data(spec: RunSpec, splits: DataSplits) -> DataSplits:
    """The data one run trains on: every task, or the baseline's task only."""
    return splits if spec.task is None else splits.only_tasks([spec.task])


def check_runs(runs: Sequence[RunSpec], splits: DataSplits) -> None:
    """Build every run's model and trainer once (no training), so bad options fail first."""
    quiet = Console(stderr=True, quiet=True)
    for spec in runs:
        data = run_data(spec, splits)
        Trainer.from_config(spec.config, data, build_model(spec.config, data), None, quiet)


def train_one(
    spec: RunSpec, splits: DataSplits, run_dir: Path, reference: Scores | None = None
) -> dict[str, Any]:
    """Train one run into ``run_dir`` as ``train_run`` does; returns its summary.

    ``reference`` (multi-task runs): the baselines' validation scores for Δm selection.
    """
    config, data = spec.config, run_data(spec, splits)
    seed_everything(config.train.seed, config.train.deterministic)  # model init: own stream
    model = build_model(config, data)
    quiet = Console(stderr=True, quiet=True)
    options: dict[str, Any] = {}
    if reference is not None:  # keep, as best, the epoch with the highest validation Δm
        options["score"] = lambda val: -delta_m(val, reference)
    trainer = Trainer.from_config(config, data, model, run_dir, quiet, **options)
    run_dir.mkdir(parents=True)
    write_text_atomic(run_dir / "config.yaml", dump_config(config))
    role: dict[str, Any] = (
        {"task": spec.task}
        if spec.task is not None
        else {"weighting": spec.weighting, "model": spec.config.model.name}
    )
    selection = SELECTION["single" if spec.task is not None else "multi"]
    write_json_atomic(run_dir / "bench.json", {**role, "seed": spec.seed, "selection": selection})
    return trainer.fit()


def run(
    config_name: str = "default",
    overrides: Sequence[str] = (),
    weightings: Sequence[str] = DEFAULT_WEIGHTINGS,
    seeds: int = 3,
    out: Path | None = None,
    log: Callable[[str], None] = print,
    baselines: bool = False,
    models: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train every baseline and multi-task model (see the module docstring); the results.

    ``models``: compare these multi-task models (each with every weighting; ``results["multi"]``
    keys become ``model/weighting``) instead of the config's model alone.

    ``baselines``: also fit the classical baselines (:mod:`attnmtl.eval.baselines`) on the
    same training rows and score them on the same test rows (``results["classical"]``).

    ``out``: keep the runs under ``out/runs/`` and write ``out/bench.json`` (and the HTML
    report when :mod:`attnmtl.report` provides it); otherwise the runs go to a temporary
    folder that is removed at the end.
    """
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already exists; choose a new (or empty) directory")
    base, splits, runs = plan(config_name, overrides, weightings, seeds, models)
    check_runs(runs, splits)
    start = time.perf_counter()
    summaries: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="attnmtl-bench-") as tmp:
        root = (out if out is not None else Path(tmp)) / "runs"
        for spec in runs:
            reference = None
            if spec.task is None:  # the baselines of this seed ran before it
                reference = {
                    t: scores(summaries[run_label(spec.seed, t)]["val"])[t] for t in splits.tasks
                }
            tick = time.perf_counter()
            summary = summaries[spec.label] = train_one(spec, splits, root / spec.label, reference)
            shown = ", ".join(
                f"{t}:{task.primary_metric}={summary['tasks'][t][task.primary_metric]:.4f}"
                for t, task in splits.tasks.items()
                if t in summary["tasks"]
            )
            log(f"{spec.label}: test {shown} ({time.perf_counter() - tick:.1f} s)")
    results = collect(base, splits, runs, summaries)
    if baselines:
        log("classical baselines: majority/mean, logistic/ridge, gradient boosting")
        results["classical"] = fit_baselines(splits, seed=base.train.seed)
    results["wall_s"] = time.perf_counter() - start
    if out is not None:
        write_json_atomic(out / "bench.json", results)
        page = write_report(results, out)
        log(f"report: {page}" if page is not None else "report: attnmtl.report not available")
    return results


def collect(
    base: RunConfig,
    splits: DataSplits,
    runs: Sequence[RunSpec],
    summaries: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The results (module docstring) from every run's summary."""
    metric_of = {name: task.primary_metric for name, task in splits.tasks.items()}
    seeds = list(dict.fromkeys(spec.seed for spec in runs))
    single = {
        s: {t: scores(summaries[run_label(s, t)]["tasks"])[t] for t in metric_of} for s in seeds
    }
    results: dict[str, Any] = {
        "config": base.name,
        "seeds": len(seeds),
        "tasks": {
            t: {"metric": m, "higher_is_better": HIGHER_IS_BETTER[m]} for t, m in metric_of.items()
        },
        "single": {t: task_stats([single[s][t] for s in seeds], m) for t, m in metric_of.items()},
        "multi": {},
        "delta_m_metrics": {t: default_metrics(single[seeds[0]][t]) for t in metric_of},
        "train_seeds": seeds,
        "budget": budget(base),
        "selection": dict(SELECTION),
    }
    entries = {spec.entry: spec for spec in runs if spec.task is None}
    for key, spec in entries.items():
        multi = {
            s: scores(summaries[run_label(s, weighting=spec.weighting, model=spec.model)]["tasks"])
            for s in seeds
        }
        results["multi"][key] = {
            "model": spec.config.model.name,
            "weighting": spec.weighting,
            "tasks": {t: task_stats([multi[s][t] for s in seeds], m) for t, m in metric_of.items()},
            "delta_m": stats([delta_m(multi[s], single[s]) for s in seeds]),
        }
    return results


def budget(config: RunConfig) -> str:
    """The training budget every run shares, in words."""
    opt, train = config.optimizer, config.train
    return (
        f"{train.epochs} epochs, batch {train.batch_size}, {opt.name} lr {opt.lr:g} "
        f"(weight decay {opt.weight_decay:g}), {config.schedule.name} schedule, "
        f"model {config.model.name}"
    )


def stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value) and the values."""
    runs = [float(v) for v in values]
    std = statistics.stdev(runs) if len(runs) > 1 else 0.0
    return {"mean": statistics.fmean(runs), "std": std, "runs": runs}


def task_stats(per_seed: Sequence[Mapping[str, float]], metric: str) -> dict[str, Any]:
    """The primary ``metric``'s stats, and every metric's under ``metrics``."""
    names = list(per_seed[0])
    return {
        **stats([values[metric] for values in per_seed]),
        "metrics": {m: stats([values[m] for values in per_seed]) for m in names},
    }


def write_report(results: Mapping[str, Any], out: Path) -> Path | None:
    """The HTML report with the Pareto plot (:func:`attnmtl.report.build_bench_report`).

    Returns None while :mod:`attnmtl.report` (or its ``build_bench_report``) does not exist.
    """
    try:
        module = importlib.import_module("attnmtl.report")
    except ModuleNotFoundError as err:
        if err.name not in ("attnmtl.report", "attnmtl"):
            raise  # a dependency of the report is missing: say so
        return None
    build = getattr(module, "build_bench_report", None)
    if build is None:
        return None
    page = build(results, out)
    return Path(page) if page is not None else out


def render(results: Mapping[str, Any]) -> Table:
    """A rich table: test scores (mean ± std over seeds) per task, and Δm, per weighting."""
    tasks: Mapping[str, Mapping[str, Any]] = results["tasks"]
    seeds = int(results["seeds"])
    table = Table(
        title=f"bench mtl: {results['config']}, {seeds} seed(s)"
        + (" (mean ± std)" if seeds > 1 else ""),
        caption="test scores of the checkpoints selected on validation data; "
        "Δm: % gain over the single-task baselines",
    )
    table.add_column("model")
    for task, info in tasks.items():
        arrow = "↑" if info["higher_is_better"] else "↓"
        table.add_column(f"{task} {info['metric']} {arrow}", justify="right")
    table.add_column("Δm % ↑", justify="right")
    table.add_row("single-task", *(_pm(results["single"][t], seeds) for t in tasks), "0")
    for name, entry in results["multi"].items():
        table.add_row(
            f"multi: {name}",
            *(_pm(entry["tasks"][t], seeds) for t in tasks),
            _pm(entry["delta_m"], seeds, digits=2),
        )
    for name, classical in results.get("classical", {}).items():
        cells = [classical.get(t, {}).get(info["metric"]) for t, info in tasks.items()]
        table.add_row(f"classical: {name}", *("-" if v is None else f"{v:.4f}" for v in cells), "-")
    return table


def _pm(entry: Mapping[str, Any], seeds: int, digits: int = 4) -> str:
    """``mean ± std``, or the mean alone for one seed."""
    text = f"{entry['mean']:.{digits}f}"
    return text + f" ± {entry['std']:.{digits}f}" if seeds > 1 else text
