"""The ``attnmtl`` command.

Bad input (an unknown name, an impossible size) ends with one line on stderr naming the bad
value and what was expected, and exit code 2 — never a traceback.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

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
console = Console()


class Listable(str, Enum):
    models = "models"


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


@app.command("list")
def list_components(what: Annotated[Listable, typer.Argument(help="What to list.")]) -> None:
    """List the registered components of one kind."""
    from attnmtl.models import list_models

    for name in list_models():
        console.print(name)


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
        json_path.write_text(json.dumps(results, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point.

    Usage errors (click's, raised by typer) and ValueErrors from attnmtl's own checks both end as
    one line on stderr with exit code 2.
    """
    try:
        code = app(args=argv, prog_name="attnmtl", standalone_mode=False)
    except ValueError as err:
        _fail(str(err), 2)
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


def _fail(message: str, code: int) -> None:
    print(f"attnmtl: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
