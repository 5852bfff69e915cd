"""Benchmark of multi-head self-attention, forward + backward, against raw SDPA and PyTorch.

Axes: B batch, T sequence length (self-attention, so queries = keys = T), H heads, d head width,
D = H * d model width. The attention matrix is (B, H, T, T).

Variants, all holding the same parameter values so that they compute the same maths (checked
once at a small size before timing):

* ``raw_sdpa``, the reference: a minimal nanoGPT-style self-attention defined in this file
  (:class:`RawSDPASelfAttention`): one packed ``Linear(D, 3D)`` for q, k and v, view/transpose
  to (B, H, T, d), a bare :func:`torch.nn.functional.scaled_dot_product_attention` call,
  transpose back, ``Linear(D, D)``. It has exactly the projections ours has, so the ratio to it
  measures our module's overhead, not the cost of the projections (a bare SDPA call on ready-made
  q, k, v would leave them out and flatter nothing but the reference).
* ``ours_fused``: :class:`~attnmtl.attention.multihead.MultiHeadAttention`,
  ``return_weights=False`` (the SDPA path).
* ``ours_weights``: the same module with ``return_weights=True`` (the explicit reference path,
  which materialises the (B, H, T, T) weights).
* ``torch_mha``: :class:`torch.nn.MultiheadAttention` ``(D, H, batch_first=True)`` called with
  ``need_weights=False``.

One step: gradients reset to None, ``out = variant(x)`` for x (B, T, D) requiring grad,
``out.sum().backward()`` (to the input and every parameter); float32, no mask, no dropout.

Timing: ``warmup`` steps per variant, then ``repeats`` rounds; every round runs each variant once,
in an order rotated by one each round, so drift and noise on a shared machine hit all variants
alike. Reported: the median ms per step and its ratio to the ``raw_sdpa`` median.

Peak memory: the most bytes allocated during one step above what was allocated at its start
(activations, the attention matrix where there is one, gradients). On CPU it comes from
:mod:`torch.profiler` with ``profile_memory=True``: the ``[memory]`` events of
``prof.profiler.kineto_results.events()`` carry the signed size of every allocation and free;
their running sum in time order peaks at the step's peak extra memory. On CUDA it is
``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, less the bytes
allocated before the step.

Memory guard: the with-weights variant holds about four (B, H, T, T) tensors at once (scores,
weights and their gradients); it is skipped at a T where that estimate exceeds ``max_weights_gb``
(GB = 1e9 bytes).

Run ``python benchmarks/attention.py --help`` (or ``python -m attnmtl.bench.attention``).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from attnmtl.attention.multihead import MultiHeadAttention

REFERENCE = "raw_sdpa"
FUSED = "ours_fused"
WEIGHTS = "ours_weights"
TORCH_MHA = "torch_mha"
LABELS = {
    REFERENCE: "raw SDPA (nanoGPT-style)",
    FUSED: "attnmtl MHA, fused",
    WEIGHTS: "attnmtl MHA, with weights",
    TORCH_MHA: "torch nn.MultiheadAttention",
}
WEIGHTS_COPIES = 4  # (B, H, T, T) tensors alive at once on the weights path: scores, weights, grads
FUSED_TARGET = 1.15  # the bound on ours_fused / raw_sdpa
DTYPE = torch.float32


class RawSDPASelfAttention(nn.Module):
    """nanoGPT-style self-attention (no mask, no dropout): the benchmark's raw-SDPA reference.

    Args:
        embed_dim: model width D.
        num_heads: number of heads H; must divide ``embed_dim``.
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.c_attn = nn.Linear(embed_dim, 3 * embed_dim)  # [W_q; W_k; W_v]
        self.c_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D)."""
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q = q.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, H, T, d)
        k = k.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)
        v = v.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, d))


@dataclass(frozen=True)
class Variant:
    """One benchmarked implementation: its module and how to get the output (B, T, D) from x."""

    name: str
    module: nn.Module
    call: Callable[[Tensor], Tensor]


def build_variants(embed_dim: int, heads: int, device: torch.device) -> list[Variant]:
    """The four variants, with the reference's parameter values copied into the others."""
    raw = RawSDPASelfAttention(embed_dim, heads)
    ours = MultiHeadAttention(embed_dim, heads)
    mha = nn.MultiheadAttention(embed_dim, heads, batch_first=True)
    with torch.no_grad():
        ours.in_proj.weight.copy_(raw.c_attn.weight)
        ours.in_proj.bias.copy_(raw.c_attn.bias)
        ours.out_proj.weight.copy_(raw.c_proj.weight)
        ours.out_proj.bias.copy_(raw.c_proj.bias)
        mha.in_proj_weight.copy_(raw.c_attn.weight)
        mha.in_proj_bias.copy_(raw.c_attn.bias)
        mha.out_proj.weight.copy_(raw.c_proj.weight)
        mha.out_proj.bias.copy_(raw.c_proj.bias)
    for module in (raw, ours, mha):
        module.to(device=device, dtype=DTYPE)

    def ours_fused(x: Tensor) -> Tensor:
        out = ours(x, return_weights=False)
        assert isinstance(out, Tensor)
        return out

    def ours_weights(x: Tensor) -> Tensor:
        out = ours(x, return_weights=True)
        assert isinstance(out, tuple)
        return out[0]

    def torch_mha(x: Tensor) -> Tensor:
        return mha(x, x, x, need_weights=False)[0]

    return [
        Variant(REFERENCE, raw, raw),
        Variant(FUSED, ours, ours_fused),
        Variant(WEIGHTS, ours, ours_weights),
        Variant(TORCH_MHA, mha, torch_mha),
    ]


def make_input(batch: int, seq_len: int, embed_dim: int, device: torch.device) -> Tensor:
    """A seeded input x (B, T, D) that requires grad."""
    gen = torch.Generator().manual_seed(seq_len)
    x = torch.randn(batch, seq_len, embed_dim, generator=gen, dtype=DTYPE)
    return x.to(device).requires_grad_(True)


def clear_grads(variant: Variant, x: Tensor) -> None:
    """Drop the gradients of x and of the variant's parameters (set them to None)."""
    x.grad = None
    for p in variant.module.parameters():
        p.grad = None


def step(variant: Variant, x: Tensor) -> Tensor:
    """One forward + backward (loss = out.sum()) from fresh gradients; returns the output."""
    clear_grads(variant, x)
    out = variant.call(x)
    out.sum().backward()
    return out


def check_same_maths(
    variants: Sequence[Variant],
    embed_dim: int,
    device: torch.device,
    batch: int = 2,
    seq_len: int = 16,
) -> None:
    """Raise RuntimeError unless all variants give the reference's output and input gradient."""
    x = make_input(batch, seq_len, embed_dim, device)
    ref_out = step(variants[0], x).detach().clone()
    assert x.grad is not None
    ref_grad = x.grad.clone()
    for variant in variants[1:]:
        out = step(variant, x).detach()
        assert x.grad is not None
        for what, got, want in (("output", out, ref_out), ("input grad", x.grad, ref_grad)):
            try:
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
            except AssertionError as err:
                raise RuntimeError(
                    f"{variant.name} {what} differs from {REFERENCE}: {err}"
                ) from err


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on CUDA; nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(variant: Variant, x: Tensor) -> float:
    """Milliseconds of one step."""
    synchronize(x.device)
    start = time.perf_counter()
    step(variant, x)
    synchronize(x.device)
    return (time.perf_counter() - start) * 1e3


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (the profiler's native library logs every start/stop)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def running_peak(deltas: Sequence[int]) -> int:
    """The highest running sum of signed byte counts (0 if it never rises above the start)."""
    total = peak = 0
    for delta in deltas:
        total += delta
        peak = max(peak, total)
    return peak


def cpu_peak_bytes(variant: Variant, x: Tensor) -> int:
    """Peak extra CPU bytes of one step, from the profiler's allocation and free events."""
    clear_grads(variant, x)  # frees now, not inside the profile where they would offset the peak
    with (
        quiet_native_stderr(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        step(variant, x)
    assert prof.profiler is not None and prof.profiler.kineto_results is not None
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    return running_peak([e.nbytes() for e in events])


def cuda_peak_bytes(variant: Variant, x: Tensor) -> int:
    """Peak extra CUDA bytes of one step, from the caching allocator's statistics."""
    synchronize(x.device)
    clear_grads(variant, x)
    torch.cuda.reset_peak_memory_stats(x.device)
    base = torch.cuda.memory_allocated(x.device)
    step(variant, x)
    synchronize(x.device)
    return torch.cuda.max_memory_allocated(x.device) - base


def peak_mb(variant: Variant, x: Tensor) -> float:
    """Peak extra memory (MB = 1e6 bytes) of one step on x's device."""
    if x.device.type == "cuda":
        return cuda_peak_bytes(variant, x) / 1e6
    return cpu_peak_bytes(variant, x) / 1e6


def weights_gb(batch: int, heads: int, seq_len: int) -> float:
    """Estimated GB the with-weights variant needs for its (B, H, T, T) tensors."""
    itemsize = torch.empty((), dtype=DTYPE).element_size()
    return WEIGHTS_COPIES * batch * heads * seq_len * seq_len * itemsize / 1e9


def time_rounds(
    variants: Sequence[Variant],
    x: Tensor,
    repeats: int,
    warmup: int,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Warm up, then time ``repeats`` rounds, each running every variant once in rotated order."""
    for variant in variants:
        for _ in range(warmup):
            step(variant, x)
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(repeats):
        shift = r % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            times[variant.name].append(time_step(variant, x))
        if log is not None:
            done = ", ".join(f"{name} {t[-1]:.1f}" for name, t in times.items())
            log(f"T={x.shape[1]} round {r + 1}/{repeats} (ms): {done}")
    return times


def bench_seq_len(
    variants: Sequence[Variant],
    seq_len: int,
    batch: int,
    heads: int,
    embed_dim: int,
    repeats: int,
    warmup: int,
    device: torch.device,
    max_weights_gb: float,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Times and peak memory of every variant at one T (the with-weights one may be skipped)."""
    need_gb = weights_gb(batch, heads, seq_len)
    skipped = need_gb > max_weights_gb
    active = [v for v in variants if not (skipped and v.name == WEIGHTS)]
    names = {v.name for v in active}
    x = make_input(batch, seq_len, embed_dim, device)
    times = time_rounds(active, x, repeats, warmup, log)
    ref = statistics.median(times[REFERENCE])
    rows: dict[str, dict[str, Any]] = {}
    for variant in variants:
        if variant.name not in names:
            rows[variant.name] = {
                "skipped": "memory",
                "estimated_gb": round(need_gb, 2),
                "ms": None,
                "ratio_to_sdpa": None,
                "peak_mb": None,
                "times_ms": [],
            }
            continue
        ms = statistics.median(times[variant.name])
        paired = [t / r for t, r in zip(times[variant.name], times[REFERENCE], strict=True)]
        rows[variant.name] = {
            "ms": round(ms, 3),
            "ratio_to_sdpa": round(ms / ref, 4),
            "paired_ratio_median": round(statistics.median(paired), 4),
            "peak_mb": round(peak_mb(variant, x), 3),
            "times_ms": [round(t, 3) for t in times[variant.name]],
        }
    del x
    gc.collect()
    return rows


def memory_growth(results: dict[str, Any], variant: str = FUSED) -> list[dict[str, float]]:
    """Peak-memory growth of ``variant`` between consecutive T: the T ratio, the memory ratio and
    the exponent log(memory ratio) / log(T ratio) (1 linear, 2 quadratic)."""
    rows = [
        (int(t), r[variant]["peak_mb"])
        for t, r in results["results"].items()
        if r[variant].get("peak_mb")
    ]
    rows.sort()
    growth = []
    for (t0, m0), (t1, m1) in itertools.pairwise(rows):
        growth.append(
            {
                "from_t": t0,
                "to_t": t1,
                "t_ratio": t1 / t0,
                "memory_ratio": round(m1 / m0, 3),
                "exponent": round(math.log(m1 / m0) / math.log(t1 / t0), 3),
            }
        )
    return growth


def run(
    seq_lens: Sequence[int] = (128, 512, 2048),
    batch: int = 32,
    heads: int = 8,
    head_dim: int = 64,
    repeats: int = 5,
    warmup: int = 1,
    device: str = "cpu",
    max_weights_gb: float = 16.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns JSON-able ``{"config", "results", "fused_memory_growth"}``.

    Args:
        seq_lens: the T values, each timed separately.
        batch, heads, head_dim: B, H and d (D = H * d).
        repeats: timed rounds per T (each runs every variant once).
        warmup: untimed steps per variant per T before the rounds.
        device: ``"cpu"`` or ``"cuda"``.
        max_weights_gb: skip the with-weights variant where its estimated (B, H, T, T) memory
            exceeds this many GB.
        log: called with a progress line per round and per T (e.g. ``print``); None for silence.

    ``results[str(T)][variant]`` holds ``ms`` (median), ``ratio_to_sdpa`` (median / raw-SDPA
    median), ``peak_mb``, ``times_ms`` (every round) and ``paired_ratio_median`` (median of the
    per-round ratios); a skipped variant has ``skipped: "memory"`` and None values.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats!r}, warmup={warmup!r}; expected >= 1 and >= 0")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available")
    embed_dim = heads * head_dim
    torch.manual_seed(0)
    variants = build_variants(embed_dim, heads, dev)
    check_same_maths(variants, embed_dim, dev)
    config = {
        "batch": batch,
        "heads": heads,
        "head_dim": head_dim,
        "embed_dim": embed_dim,
        "seq_lens": list(seq_lens),
        "repeats": repeats,
        "warmup": warmup,
        "device": str(dev),
        "dtype": str(DTYPE).removeprefix("torch."),
        "max_weights_gb": max_weights_gb,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "reference": "nanoGPT-style module: Linear(D,3D) -> F.scaled_dot_product_attention -> "
        "Linear(D,D)",
        "memory_method": "torch.cuda.max_memory_allocated"
        if dev.type == "cuda"
        else "torch.profiler profile_memory: peak running sum of [memory] events",
    }
    results: dict[str, Any] = {"config": config, "results": {}}
    for seq_len in seq_lens:
        start = time.perf_counter()
        results["results"][str(seq_len)] = bench_seq_len(
            variants, seq_len, batch, heads, embed_dim, repeats, warmup, dev, max_weights_gb, log
        )
        if log is not None:
            log(f"T={seq_len}: done in {time.perf_counter() - start:.1f} s")
    results["fused_memory_growth"] = memory_growth(results)
    return results


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def render(results: dict[str, Any]) -> Table:
    """The results as a rich table (one row per T and variant)."""
    cfg = results["config"]
    table = Table(
        title=(
            f"Multi-head self-attention, forward + backward: B={cfg['batch']}, H={cfg['heads']}, "
            f"d={cfg['head_dim']}, {cfg['dtype']}, {cfg['device']}, {cfg['threads']} threads, "
            f"median of {cfg['repeats']} interleaved rounds"
        ),
        caption=(
            "raw SDPA = nanoGPT-style module: packed Linear(D,3D) -> view/transpose -> bare "
            "F.scaled_dot_product_attention -> Linear(D,D); the same projections as ours, so its "
            "ratio is our module's overhead.\npeak MB = extra memory during one forward+backward "
            f"({escape(cfg['memory_method'])})."
        ),
        caption_justify="left",
    )
    for column in ("T", "variant", "median ms", "x raw SDPA", "peak MB", "min-max ms"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for seq_len, rows in results["results"].items():
        for i, (name, row) in enumerate(rows.items()):
            label = LABELS.get(name, name)
            if row.get("skipped"):
                skip = f"skipped ({row['skipped']})"
                table.add_row(
                    seq_len if i == 0 else "",
                    label,
                    skip,
                    "—",
                    "—",
                    "—",
                    end_section=i == len(rows) - 1,
                )
                continue
            times = row["times_ms"]
            table.add_row(
                seq_len if i == 0 else "",
                label,
                f"{row['ms']:.2f}",
                f"{row['ratio_to_sdpa']:.3f}",
                _fmt(row["peak_mb"], ".1f" if row["peak_mb"] >= 10 else ".3f"),
                f"{min(times):.1f}-{max(times):.1f}",
                end_section=i == len(rows) - 1,
            )
    return table


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The fused path's memory growth in T and the verdict on the 1.15x bound."""
    steps = [
        f"T {g['from_t']}->{g['to_t']} (x{g['t_ratio']:g}): x{g['memory_ratio']:.2f} "
        f"(exponent {g['exponent']:.2f})"
        for g in results.get("fused_memory_growth", [])
    ]
    lines = []
    if steps:
        lines.append(
            "Fused peak-memory growth: "
            + "; ".join(steps)
            + " — linear in T is exponent 1 (x4 per 4x T), quadratic exponent 2 (x16)."
        )
    ratios = {t: r[FUSED]["ratio_to_sdpa"] for t, r in results["results"].items()}
    worst = max(ratios.values())
    verdict = "within" if worst <= FUSED_TARGET else "NOT within"
    per_t = ", ".join(f"T={t}: {v:.3f}" for t, v in ratios.items())
    lines.append(f"Fused / raw SDPA: {per_t}; worst {worst:.3f}x, {verdict} {FUSED_TARGET}x.")
    return lines


def _seq_lens(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return values


def _log_stderr(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options (defaults: the issue's configuration)."""
    parser = argparse.ArgumentParser(
        description="Multi-head attention forward+backward: attnmtl (fused, with weights) vs raw "
        "SDPA (nanoGPT-style module) vs torch.nn.MultiheadAttention."
    )
    parser.add_argument("--seq-lens", type=_seq_lens, default=(128, 512, 2048), help="T values")
    parser.add_argument("--batch", type=int, default=32, help="B")
    parser.add_argument("--heads", type=int, default=8, help="H")
    parser.add_argument("--head-dim", type=int, default=64, help="d (D = H * d)")
    parser.add_argument("--repeats", type=int, default=5, help="timed interleaved rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--max-weights-gb",
        type=float,
        default=16.0,
        help="skip the with-weights variant where its (B,H,T,T) tensors would exceed this",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line: print the table and optionally write JSON."""
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 130)
    results = run(
        seq_lens=args.seq_lens,
        batch=args.batch,
        heads=args.heads,
        head_dim=args.head_dim,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        max_weights_gb=args.max_weights_gb,
        log=_log_stderr,
    )
    console.print(render(results))
    for line in summary_lines(results):
        console.print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        console.print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
