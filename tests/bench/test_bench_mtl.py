"""``attnmtl bench mtl``: baselines on one task each, Δm by its definition, selection on val."""

import json

import pytest

from attnmtl.bench import mtl
from attnmtl.cli import main
from attnmtl.eval.metrics import evaluate
from attnmtl.run import load_run
from attnmtl.run.trainer import Trainer

TINY = [
    "data.num_train=128",
    "data.num_val=64",
    "data.num_test=64",
    "data.tasks=[digit, scale]",
    "model.encoder=mlp",
    "model.encoder_options={hidden_dims: [16]}",
    "train.epochs=2",
    "train.threads=1",
]
# Metric directions written out from their definitions (s = +1 higher is better, -1 lower).
SIGN = {"accuracy": 1, "f1": 1, "auroc": 1, "mae": -1, "rmse": -1}
NOT_IN_DELTA_M = ("loss", "r2")  # attnmtl.eval.delta_m's documented default


def cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def delta_m_by_hand(multi, single):
    """Δm = 1/T Σ_t 1/M_t Σ_m s_m (N − B) / B × 100, from {task: {metric: value}}."""
    per_task = [
        sum(SIGN[m] * (multi[t][m] - b) / b for m, b in single[t].items()) / len(single[t])
        for t in single
    ]
    return 100 * sum(per_task) / len(per_task)


def delta_m_scores(results):
    return {t: {m: v for m, v in r.items() if m not in NOT_IN_DELTA_M} for t, r in results.items()}


def summary_of(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def epoch_vals(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [e["val"] for e in map(json.loads, lines) if e["event"] == "epoch"]


def test_bench_mtl_tiny_run(tmp_path, capsys, monkeypatch):
    seen = []  # (validation results, criterion) of every model-selection call, in order

    original_init = Trainer.__init__

    def init(self, *args, **kwargs):  # every trainer's model-selection score, spied on
        original_init(self, *args, **kwargs)
        score = self.score

        def spied(val):
            value = score(val)
            seen.append((json.loads(json.dumps(val)), value))
            return value

        self.score = spied

    monkeypatch.setattr(Trainer, "__init__", init)
    out, json_path = tmp_path / "bench", tmp_path / "results.json"
    argv = ["bench", "mtl", "--weightings", "equal,dwa", "--seeds", "1", "--out", str(out)]
    argv.append("--baselines")
    code, stdout, _ = cli([*argv, "--json", str(json_path), *TINY], capsys)
    assert code == 0 and "Δm" in stdout and "dwa" in stdout and "classical: boosting" in stdout
    results = json.loads(json_path.read_text())
    assert json.loads((out / "bench.json").read_text()) == results
    assert (out / "report.html").is_file()  # attnmtl.report's page, with the Pareto plot
    assert set(results["classical"]) == {"majority", "linear", "boosting"}
    assert set(results["classical"]["linear"]) == {"digit", "scale"}

    # The shape the report renders.
    assert results["config"] == "default" and results["seeds"] == 1
    assert results["tasks"] == {
        "digit": {"metric": "accuracy", "higher_is_better": True},
        "scale": {"metric": "mae", "higher_is_better": False},
    }
    assert set(results["single"]) == {"digit", "scale"}
    assert list(results["multi"]) == ["equal", "dwa"]
    for entry in [*results["single"].values(), *results["multi"]["dwa"]["tasks"].values()]:
        assert {"mean", "std", "runs"} <= set(entry) and len(entry["runs"]) == 1
        assert entry["std"] == 0.0 and entry["mean"] == entry["runs"][0]
    assert set(results["multi"]["equal"]) == {"model", "weighting", "tasks", "delta_m"}
    assert results["multi"]["dwa"]["model"] == "attention_mtl"
    assert results["delta_m_metrics"] == {"digit": ["accuracy", "f1"], "scale": ["mae", "rmse"]}
    assert set(results["single"]["scale"]["metrics"]) == {"mae", "rmse", "r2", "loss"}

    runs = out / "runs"
    single, criterion = {}, {}  # criterion: what each run minimised, by hand, per epoch
    for task, metric in (("digit", "accuracy"), ("scale", "mae")):
        run_dir = runs / f"seed0-single-{task}"
        summary = summary_of(run_dir)
        # Trained and scored on its task only, as the JSON records it.
        assert set(summary["tasks"]) == set(summary["val"]) == {task}
        train_events = [
            json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        ]
        assert all(set(e.get("loss", {task: 0})) == {task} for e in train_events)
        assert results["single"][task]["runs"] == [summary["tasks"][task][metric]]
        single[task] = delta_m_scores(summary["tasks"])[task]
        # Selected on its own primary metric on validation data.
        config = (run_dir / "config.yaml").read_text()
        assert f"monitor: {task}:{metric}" in config and "test_on: best" in config
        vals = [v[task][metric] for v in epoch_vals(run_dir)]
        best = max(vals) if metric == "accuracy" else min(vals)
        assert summary["best_epoch"] == vals.index(best)
        criterion[f"seed0-single-{task}"] = [-v if metric == "accuracy" else v for v in vals]
        # A kept baseline loads (as a teacher or for predict): the run's one task, its scores.
        loaded = load_run(run_dir)
        assert list(loaded.tasks) == [task]
        again = evaluate(loaded.model, loaded.splits.test, loaded.tasks)[task]
        if metric == "accuracy":  # (scale's summary MAE is in natural units, evaluate's not)
            assert again[metric] == pytest.approx(summary["tasks"][task][metric], rel=1e-5)

    for weighting in ("equal", "dwa"):
        run_dir = runs / f"seed0-{weighting}"
        summary = summary_of(run_dir)
        assert f"name: {weighting}" in (run_dir / "config.yaml").read_text()
        multi = delta_m_scores(summary["tasks"])
        entry = results["multi"][weighting]
        assert entry["tasks"]["digit"]["runs"] == [multi["digit"]["accuracy"]]
        assert entry["tasks"]["scale"]["metrics"]["rmse"]["runs"] == [multi["scale"]["rmse"]]
        assert entry["delta_m"]["runs"][0] == pytest.approx(delta_m_by_hand(multi, single))
        # Selected on validation Δm against the baselines' validation scores.
        single_val = {
            t: delta_m_scores(summary_of(runs / f"seed0-single-{t}")["val"])[t]
            for t in ("digit", "scale")
        }
        scores = [
            delta_m_by_hand({t: {m: v[t][m] for m in single_val[t]} for t in v}, single_val)
            for v in epoch_vals(run_dir)
        ]
        assert summary["best_epoch"] == scores.index(max(scores))
        criterion[f"seed0-{weighting}"] = [-score for score in scores]

    # Model selection saw each epoch's logged validation results (never test results) and
    # minimised the criterion above, run after run in training order.
    order = ["seed0-single-digit", "seed0-single-scale", "seed0-equal", "seed0-dwa"]
    assert sorted(p.name for p in runs.iterdir()) == sorted(order)
    assert [val for val, _ in seen] == [v for name in order for v in epoch_vals(runs / name)]
    assert [value for _, value in seen] == pytest.approx([c for n in order for c in criterion[n]])


def test_plan_selects_on_validation_with_the_same_budget():
    base, splits, runs = mtl.plan("default", [*TINY, "train.seed=5"], ["equal", "dwa"], 2)
    assert [r.label for r in runs] == [
        "seed5-single-digit",
        "seed5-single-scale",
        "seed5-equal",
        "seed5-dwa",
        "seed6-single-digit",
        "seed6-single-scale",
        "seed6-equal",
        "seed6-dwa",
    ]
    for spec in runs:
        train = spec.config.train
        assert train.test_on == "best" and not train.tensorboard and not train.progress
        assert spec.config.data == base.data and spec.config.model == base.model
        assert spec.config.optimizer == base.optimizer and spec.config.schedule == base.schedule
        assert (train.epochs, train.batch_size) == (base.train.epochs, base.train.batch_size)
        if spec.task is not None:
            assert spec.config.weighting.name == "equal"
            assert train.monitor == f"{spec.task}:{splits.tasks[spec.task].primary_metric}"
        else:
            assert spec.config.weighting.name == spec.weighting
    one = splits.only_tasks(["scale"])
    assert list(one.tasks) == ["scale"] and len(one.train) == len(splits.train) == 128
    assert one.test.labels["scale"] is splits.test.labels["scale"]
    assert one.train.augment is splits.train.augment  # a baseline trains on the same draws


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--weightings", "equal,nope"], "unknown weighting 'nope'; expected one of:"),
        (["--weightings", "equal,equal"], "expected distinct names"),
        (["--seeds", "0"], "--seeds"),
        (["--json", "/nonexistent/x.json"], "the folder /nonexistent does not exist"),
        (["model.name=nope"], "model.name: unknown model 'nope'"),
        (["--models", "hard_sharing,nope"], "unknown model 'nope'; expected one of:"),
        (["--models", "mtan,mtan"], "expected distinct names"),
    ],
)
def test_bad_input_fails_before_training(args, needle, capsys, monkeypatch):
    def no_training(*_args, **_kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr(mtl, "train_one", no_training)
    code, out, err = cli(["bench", "mtl", *args], capsys)
    assert code == 2 and out == "" and needle in err and err.count("\n") == 1


def test_models_compared_against_the_same_baselines(tmp_path, capsys):
    """``--models``: every model × weighting, against one set of single-task baselines."""
    json_path = tmp_path / "results.json"
    argv = ["bench", "mtl", "--models", "hard_sharing,attention_mtl", "--weightings", "equal,dwa"]
    argv += ["--seeds", "1", "--out", str(tmp_path / "bench"), "--json", str(json_path)]
    code, stdout, _ = cli([*argv, *TINY], capsys)
    assert code == 0 and "hard_sharing/dwa" in stdout
    results = json.loads(json_path.read_text())
    keys = ["hard_sharing/equal", "hard_sharing/dwa", "attention_mtl/equal", "attention_mtl/dwa"]
    assert list(results["multi"]) == keys
    runs = tmp_path / "bench" / "runs"
    names = ["seed0-single-digit", "seed0-single-scale"]
    names += ["seed0-" + key.replace("/", "-") for key in keys]
    assert sorted(p.name for p in runs.iterdir()) == sorted(names)
    single = {
        t: delta_m_scores(summary_of(runs / f"seed0-single-{t}")["tasks"])[t]
        for t in ("digit", "scale")
    }
    # The baselines are built on the config's model, the multi-task runs on each compared one.
    assert "name: attention_mtl" in (runs / "seed0-single-digit" / "config.yaml").read_text()
    for key in keys:
        model, weighting = key.split("/")
        run_dir = runs / f"seed0-{model}-{weighting}"
        config = (run_dir / "config.yaml").read_text()
        assert f"name: {model}" in config and f"name: {weighting}" in config
        assert "hidden_dims:" in config  # the config's model options, kept
        assert json.loads((run_dir / "bench.json").read_text())["model"] == model
        entry = results["multi"][key]
        assert (entry["model"], entry["weighting"]) == (model, weighting)
        multi = delta_m_scores(summary_of(run_dir)["tasks"])
        assert entry["delta_m"]["runs"][0] == pytest.approx(delta_m_by_hand(multi, single))


def test_stats_use_the_sample_std():
    assert mtl.stats([1.0, 2.0, 4.0]) == {
        "mean": 7 / 3,
        "std": pytest.approx(((16 / 9 + 1 / 9 + 25 / 9) / 2) ** 0.5),
        "runs": [1.0, 2.0, 4.0],
    }
    assert mtl.stats([3.0])["std"] == 0.0
