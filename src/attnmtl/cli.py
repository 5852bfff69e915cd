"""The ``attnmtl`` command.

Bad input (an unknown name, an impossible size) ends with one line on stderr naming the bad
value and what was expected, and exit code 2 — never a traceback.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from attnmtl import __version__

app = typer.Typer(
    help="Attention modules, attention encoders and multi-task learning with attention.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Side-by-side benchmarks, timed in one process.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
# Results go to stdout; piped to a file or another program they are never cut to 80 columns
# (rich's width when it sees no terminal): tables take the width their cells need.
console = Console() if sys.stdout.isatty() else Console(width=10_000)
err_console = Console(stderr=True)


class Listable(str, Enum):
    configs = "configs"
    datasets = "datasets"
    encoders = "encoders"
    models = "models"
    weightings = "weightings"


def _version(value: bool) -> None:
    if value:
        console.print(f"attnmtl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """attnmtl: attention, multi-task learning with attention, attention transfer."""


def _registry(what: Listable) -> tuple[Any, tuple[str, ...]]:
    """The registry of a kind of component, and the arguments attnmtl fills in for it."""
    if what is Listable.datasets:
        from attnmtl.data import DATASETS

        return DATASETS, ()
    if what is Listable.models:
        from attnmtl.models import MODELS

        return MODELS, ("tasks", "input_shape", "layout", "input_dim")
    from attnmtl.weighting import WEIGHTINGS

    return WEIGHTINGS, ("tasks",)


@app.command("list")
def list_components(
    what: Annotated[Listable, typer.Argument(help="What to list.")],
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Each one's options: type, default, meaning.")
    ] = False,
) -> None:
    """List the shipped configs or the registered components of one kind."""
    # Names come without importing torch; -v imports the layer asked about for signatures.
    if what is Listable.configs:  # (attnmtl.run.config.shipped_configs, without the run layer)
        from importlib import resources

        folder = resources.files("attnmtl") / "configs"
        names = sorted(
            p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml")
        )
    else:  # names from the source, without importing torch (attnmtl.catalog)
        from attnmtl.catalog import registered_names

        names = registered_names(what.value)
    if not verbose or what is Listable.configs:
        for name in names:
            console.print(name)
        return
    from rich.table import Table

    from attnmtl.core.registry import describe_options

    for name in names:
        if what is Listable.encoders:
            from attnmtl.encoders.registry import encoder_options

            rows = encoder_options(name)
        else:
            registry, skip = _registry(what)
            rows = describe_options(registry.get(name), skip)
        table = Table(title=name, title_justify="left", box=None, show_edge=False)
        for column in ("option", "type", "default", "meaning"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        console.print()


@app.command("train", context_settings={"allow_extra_args": False, "ignore_unknown_options": False})
def train(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Config overrides, e.g. train.epochs=5 model.encoder=cnn."),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option("-c", "--config", help="A YAML file or a shipped config's name."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory to create (default runs/NAME-TIME).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this run directory from its last checkpoint.")
    ] = None,
    allow_imports: Annotated[
        bool,
        typer.Option(
            "--allow-imports",
            help="Allow component names 'package.module:Factory' from outside attnmtl "
            "(imports run that module's code; also ATTNMTL_ALLOW_IMPORTS=1).",
        ),
    ] = False,
) -> None:
    """Train a multi-task model (the built-in default without -c) into a new run directory."""
    from attnmtl.core.registry import allow_imports as allowing
    from attnmtl.pipeline import baselines_table, results_table, resume_run, train_run
    from attnmtl.run.config import load_config

    items = list(overrides or [])
    run_dir: Path | None
    with allowing(allow_imports):
        if resume is not None:
            if config is not None or out is not None:
                raise ValueError("--resume takes the run's own config; drop --config and --out")
            run_dir, summary = resume_run(resume, items, err_console)
        else:
            run_config = load_config(config, items)
            run_dir, summary = train_run(run_config, out, err_console)
    from attnmtl.core.distributed import current, shutdown

    job = current()
    shutdown()
    if job is not None and not job.main:  # under torchrun, rank 0 alone reports
        return
    console.print(results_table(summary["tasks"], f"test results ({summary['selected']} model)"))
    if "baselines" in summary:
        console.print(baselines_table(summary))
    console.print(f"run directory: {run_dir}")


@app.command("eval")
def eval_run(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by attnmtl train.")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Data overrides, e.g. data.iid_noise_scale=0.1."),
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Another registered data set name with the same tasks.")
    ] = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here.")
    ] = None,
) -> None:
    """Evaluate a run's checkpoint on its data (or another data set, or shifted data)."""
    from attnmtl.pipeline import results_table
    from attnmtl.run.evaluate import evaluate_run

    results = evaluate_run(run_dir, data, list(overrides or []), split, checkpoint)
    console.print(results_table(results, f"{split} results ({checkpoint} checkpoint)"))
    if json_path is not None:
        _write_json(json_path, {"tasks": results})


@app.command("predict")
def predict_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by attnmtl train.")],
    source: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="A CSV/Parquet/NPZ file with the run's input columns, or a data set name.",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Output file: .csv, .parquet or .jsonl (default: CSV on stdout)."),
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    attention: Annotated[
        bool, typer.Option("--attention", help="Also write each task's attention weights.")
    ] = False,
    split: Annotated[str, typer.Option(help="The split of a data set INPUT.")] = "test",
    batch_size: Annotated[int, typer.Option(min=1, help="Inputs per forward pass.")] = 1024,
) -> None:
    """Predict every task for new inputs: one row per input, classes with their probabilities
    and regression values in natural units."""
    from attnmtl.run.predict import predict_run

    rows = predict_run(run_dir, source, out, checkpoint, attention, split, batch_size, err_console)
    if out is not None:
        err_console.print(f"{rows} predictions: {out}", soft_wrap=True)


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by attnmtl train.")],
    format: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    out: Annotated[
        Path | None, typer.Option(help="The file (default RUN_DIR/export/model.onnx or .pt).")
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    attention: Annotated[
        bool, typer.Option("--attention", help="Also output each task's attention weights.")
    ] = False,
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="Largest allowed difference from PyTorch.")
    ] = 1e-4,
) -> None:
    """Export a run as one graph (an output per task), checked against PyTorch on held-out
    inputs before it is kept."""
    from attnmtl.run.export import export_run

    report = export_run(run_dir, format, out, checkpoint, attention, tolerance)
    worst = max(report["max_abs_diff"].values())
    console.print(
        f"{report['format']}: {report['path']} (outputs {', '.join(report['outputs'])}; "
        f"max |difference| from PyTorch {worst:.2e} <= {report['tolerance']:g} on "
        f"{report['checked_inputs']} test inputs)",
        soft_wrap=True,
    )


@app.command("report")
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by attnmtl train.")],
    examples: Annotated[
        int, typer.Option(min=1, help="Test inputs whose attention is drawn, per task.")
    ] = 4,
) -> None:
    """Write RUN_DIR/report.html: config, metrics, curves, task weights, attention maps."""
    from attnmtl.report import build_report

    path = build_report(run_dir, examples=examples)
    console.print(f"report: {path}", soft_wrap=True)


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{option}={text!r}; expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise ValueError(f"{option}={text!r}; expected positive integers")
    return values


@bench_app.command("attention")
def bench_attention(
    seq_lens: Annotated[
        str, typer.Option(help="Sequence lengths T, comma-separated.")
    ] = "128,512,2048",
    batch: Annotated[int, typer.Option(min=1, help="Batch size B.")] = 32,
    heads: Annotated[int, typer.Option(min=1, help="Heads H.")] = 8,
    head_dim: Annotated[int, typer.Option(min=1, help="Head width.")] = 64,
    repeats: Annotated[int, typer.Option(min=1, help="Timed rounds (median reported).")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed rounds first.")] = 1,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    max_weights_gb: Annotated[
        float, typer.Option(help="Skip the with-weights variant above this estimated memory.")
    ] = 16.0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write results here.")
    ] = None,
) -> None:
    """Multi-head attention, fused and with weights, against raw SDPA and torch's MHA."""
    lengths = _int_list(seq_lens, "--seq-lens")
    from attnmtl.bench.attention import render, run

    results = run(
        seq_lens=lengths,
        batch=batch,
        heads=heads,
        head_dim=head_dim,
        repeats=repeats,
        warmup=warmup,
        device=device,
        max_weights_gb=max_weights_gb,
        log=console.log,
    )
    console.print(render(results))
    if json_path is not None:
        _write_json(json_path, results)


@bench_app.command("trainer")
def bench_trainer(
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Config overrides, e.g. train.batch_size=128.")
    ] = None,
    config: Annotated[str, typer.Option("-c", "--config", help="Config to train.")] = "default",
    rounds: Annotated[int, typer.Option(min=1, help="Timed one-epoch rounds per side.")] = 3,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads.")] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write results here.")
    ] = None,
) -> None:
    """Training samples/s of the Trainer against a bare PyTorch loop on the same model."""
    from attnmtl.bench.trainer import render, run

    items = list(overrides or []) + ([f"train.threads={threads}"] if threads else [])
    results = run(config, items, rounds, None, log=err_console.log)
    console.print(render(results))
    if json_path is not None:
        _write_json(json_path, results)


@bench_app.command("predict")
def bench_predict(
    run_dir: Annotated[
        Path | None, typer.Option("--run", help="A csv_example-like run (default: train one).")
    ] = None,
    rows: Annotated[int, typer.Option(min=1, help="Input rows to predict.")] = 100_000,
    rounds: Annotated[int, typer.Option(min=1, help="Timed rounds per side (median).")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per forward pass.")] = 1024,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write results here.")
    ] = None,
) -> None:
    """predict's throughput against a bare loop calling the model on the same tensors."""
    from attnmtl.bench.predict import render, run

    results = run(run_dir, rows, rounds, batch_size, log=err_console.log)
    console.print(render(results))
    if json_path is not None:
        _write_json(json_path, results)


@bench_app.command("finetune")
def bench_finetune(
    model: Annotated[
        str, typer.Option(help="Pretrained model: minilm or a Hugging Face folder.")
    ] = "minilm",
    variants: Annotated[
        str, typer.Option(help="Comma-separated: full, last2, lora, full+checkpointing.")
    ] = "full,last2,lora,full+checkpointing",
    batch_size: Annotated[int, typer.Option(min=1, help="Samples per step.")] = 32,
    seq_len: Annotated[int, typer.Option(min=2, help="Tokens per sample.")] = 64,
    steps: Annotated[int, typer.Option(min=1, help="Steps per timed round.")] = 3,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds per variant (median).")] = 5,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Intra-op threads (default: torch's).")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write results here.")
    ] = None,
) -> None:
    """Multi-task fine-tuning speed of encoder: hf — full, last 2 layers, LoRA — interleaved."""
    from attnmtl.bench.finetune import check_variants, render, run

    names = check_variants([v.strip() for v in variants.split(",") if v.strip()])
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    results = run(model, names, batch_size, seq_len, steps, rounds, log=err_console.log)
    console.print(render(results))
    if json_path is not None:
        _write_json(json_path, results)


@bench_app.command("weighting")
def bench_weighting(
    tasks: Annotated[str, typer.Option(help="Task counts T, comma-separated.")] = "2,4,8",
    methods: Annotated[
        str | None, typer.Option(help="Gradient methods, comma-separated (default: all).")
    ] = None,
    modes: Annotated[
        str, typer.Option(help="Gradient modes: parameters, features.")
    ] = "parameters,features",
    rounds: Annotated[int, typer.Option(min=1, help="Timed rounds (median reported).")] = 7,
    steps: Annotated[int, typer.Option(min=1, help="Steps per variant per round.")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 256,
    threads: Annotated[int, typer.Option(min=1, help="torch threads.")] = 2,
    naive: Annotated[
        bool, typer.Option(help="Also time the naive engine (one backward pass per task).")
    ] = True,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write results here.")
    ] = None,
    params: Annotated[
        int | None,
        typer.Option(
            min=1000,
            help="Scale the shared MLP to about this many parameters and measure peak memory "
            "per engine instead (each variant in its own process; --methods, first --tasks).",
        ),
    ] = None,
    depth: Annotated[int, typer.Option(min=1, help="Hidden layers with --params.")] = 4,
    engines: Annotated[
        str, typer.Option(help="Engines measured with --params.")
    ] = "batched,gramian,loop",
) -> None:
    """ms per training step of every gradient method and mode, and its ratio to equal
    weighting, on the reference MLP (64→256→256, T heads, batch 256, Adam); with --params,
    the peak memory of each engine on the MLP scaled up."""
    if params is not None:
        from attnmtl.bench.weighting import memory, render_memory

        chosen = [m.strip() for m in (methods or "upgrad").split(",") if m.strip()]
        scaled = memory(
            params,
            depth=depth,
            count=_int_list(tasks, "--tasks")[-1],
            methods=chosen,
            engines=[e.strip() for e in engines.split(",") if e.strip()],
            batch_size=batch_size,
            threads=threads,
            log=err_console.log,
        )
        console.print(render_memory(scaled))
        if json_path is not None:
            _write_json(json_path, scaled)
        return
    from attnmtl.bench.weighting import render, run

    results = run(
        task_counts=_int_list(tasks, "--tasks"),
        methods=None if methods is None else [m.strip() for m in methods.split(",") if m.strip()],
        modes=[m.strip() for m in modes.split(",") if m.strip()],
        batch_size=batch_size,
        rounds=rounds,
        steps=steps,
        naive=naive,
        threads=threads,
        log=err_console.log,
    )
    console.print(render(results))
    if json_path is not None:
        _write_json(json_path, results)


@bench_app.command("mtl")
def bench_mtl(
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Config overrides, e.g. train.epochs=5.")
    ] = None,
    config: Annotated[str, typer.Option("-c", "--config", help="Config to train.")] = "default",
    weightings: Annotated[
        str, typer.Option(help="Weightings of the multi-task model, comma-separated.")
    ] = "equal,uncertainty,dwa",
    models: Annotated[
        str | None,
        typer.Option(
            help="Multi-task models to compare, comma-separated (e.g. segnet,segnet_mtan), each "
            "with every weighting (default: the config's model)."
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Training seeds (train.seed + 0, 1, ...).")] = 3,
    out: Annotated[
        Path | None,
        typer.Option(help="Keep the runs, bench.json and the report here (default: not kept)."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write results here.")
    ] = None,
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines", help="Also score majority, logistic/ridge and boosting per task."
        ),
    ] = False,
) -> None:
    """Δm of each weighting against single-task baselines with the same budget (mean ± std
    over seeds; every model selected on validation data, scored on test data)."""
    from attnmtl.bench.mtl import render, run

    if json_path is not None and not json_path.parent.is_dir():  # fail before hours of training
        raise ValueError(f"--json {json_path}: the folder {json_path.parent} does not exist")
    results = run(
        config,
        list(overrides or []),
        weightings.split(","),
        seeds,
        out,
        log=err_console.log,
        baselines=baselines,
        models=models.split(",") if models is not None else None,
    )
    console.print(render(results))
    if json_path is not None:
        _write_json(json_path, results)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point.

    Usage errors (click's, raised by typer) and ValueErrors from attnmtl's own checks both end as
    one line on stderr with exit code 2. A training run stopped by SIGINT or SIGTERM (the
    trainer's ``TrainingInterrupted``, which has click's ``format_message``/``exit_code``) ends
    with one line saying how to resume, and exit code 130 or 143.
    """
    try:
        code = app(args=argv, prog_name="attnmtl", standalone_mode=False)
    except ValueError as err:
        _fail(str(err), 2)
    except OSError as err:  # a path that cannot be written or read
        _fail(f"{err.strerror or err}: {err.filename}" if err.filename else str(err), 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as err:
        message = getattr(err, "format_message", None)
        if message is None:
            raise
        context = getattr(err, "ctx", None)
        if not message() and context is not None:  # no arguments: show the help
            print(context.get_help(), file=sys.stderr)
            sys.exit(2)
        _fail(message(), int(getattr(err, "exit_code", 2)))
    sys.exit(code if isinstance(code, int) else 0)


@bench_app.command("transfer")
def bench_transfer(
    kinds: Annotated[
        str,
        typer.Option(
            help="Kinds of transfer: teacher, cross_task, fusion, textmt, textmt_tuned, "
            "multi_teacher."
        ),
    ] = "teacher,cross_task,fusion,textmt",
    seeds: Annotated[int, typer.Option(min=1, help="Training seeds (0, 1, ...).")] = 3,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of every compared run.")] = 12,
    out: Annotated[
        Path | None, typer.Option(help="Keep the runs here (default: not kept).")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write results here.")
    ] = None,
    reuse: Annotated[
        list[str] | None,
        typer.Option(
            help="KIND/NAME=RUN_DIR: a finished run to use as that prerequisite (e.g. "
            "textmt_tuned/teacher=runs/minilm) instead of training it; repeatable."
        ),
    ] = None,
) -> None:
    """The same student trained with and without each kind of transfer (same budget, seeds
    0..N-1): mean ± std of the target metric on test data, selected on validation data."""
    from attnmtl.bench.transfer import check_kinds, check_reuse, render, run

    chosen = check_kinds(kinds.split(","))
    reused = check_reuse(chosen, reuse or [])
    if json_path is not None and not json_path.parent.is_dir():  # fail before training
        raise ValueError(f"--json {json_path}: the folder {json_path.parent} does not exist")
    results = run(chosen, seeds, epochs, out, log=err_console.log, reuse=reused)
    console.print(render(results))
    if json_path is not None:
        _write_json(json_path, results)


def _write_json(path: Path, data: object) -> None:
    from attnmtl.core.io import write_json_atomic

    if not path.parent.is_dir():
        raise ValueError(f"--json {path}: the folder {path.parent} does not exist")
    write_json_atomic(path, data)


def _fail(message: str, code: int) -> None:
    """Print ``message`` (one line per problem, each line's spacing tidied) and exit."""
    first, *rest = message.strip().splitlines() or [""]
    lines = [f"attnmtl: error: {' '.join(first.split())}"]
    lines += [f"  {' '.join(line.split())}" for line in rest if line.strip()]
    print("\n".join(lines), file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
