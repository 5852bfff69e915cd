"""What a model costs: parameters, FLOPs per sample, latency, throughput, peak memory.

Axes: B batch, T time, F features.

:func:`measure_efficiency` measures a model on samples of a data set, in eval mode without
gradient (training throughput is the trainer's ``train_samples_per_s`` in ``summary.json``):

* ``parameters``: total, trainable, shared and per task (a parameter several tasks own counts
  in each; ``shared`` and ``per_task`` only for models with ``shared_parameters()`` /
  ``task_parameters(task)``).
* ``flops_per_sample``: :class:`torch.utils.flop_counter.FlopCounterMode` on one forward pass
  of a batch, divided by its size. It counts matrix products (``mm``, ``addmm``, ``bmm``,
  ``baddbmm``), convolutions and fused attention kernels, at 2 FLOPs per multiply-add; it does
  not count elementwise work (activations, gates, softmax, normalisation, bias additions) —
  nor does this module, so every layer is counted by the same rule. Recurrent layers
  (``nn.RNN``/``GRU``/``LSTM``) decompose into counted ``addmm``/``mm`` calls on CPU, but run
  as one uncounted fused kernel under cuDNN or oneDNN; when FlopCounterMode sees no FLOPs in a
  recurrent layer, its matrix products are counted by :func:`rnn_flops` instead (the same
  number, ``tests/eval/test_efficiency.py``). Packed sequences count only their real steps.
* ``latency_ms_p50`` / ``latency_ms_p95``: wall time of one forward pass at batch 1, after
  ``warmup`` passes, over ``latency_repeats`` passes (``time.perf_counter``; CUDA is
  synchronised around each pass).
* ``throughput_samples_per_s``: samples per second of forward passes at ``throughput_batch``.
* ``peak_memory_mib``: on CUDA, ``torch.cuda.max_memory_allocated`` over the measurements
  (statistics reset first: weights plus the largest batch's activations); on CPU, the
  process's resident-set high-water mark (``getrusage`` ``ru_maxrss``) — process-wide and
  since the process started, so it includes the interpreter, the data and anything run
  before; ``peak_memory_kind`` says which.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.flop_counter import FlopCounterMode

from attnmtl.core.batch import Batch
from attnmtl.data.dataset import MultiTaskDataset

RNN_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}


def rnn_flops(rnn: nn.RNNBase, steps: int) -> int:
    """Matrix-product FLOPs of ``rnn`` over ``steps`` (batch × real time steps) inputs.

    Per step, direction and layer: ``2·G·H·(I + R)`` for the input and recurrent products
    (G gates: 1 RNN, 3 GRU, 4 LSTM; H hidden size; I the layer's input size; R the recurrent
    state size, ``proj_size`` or H), plus ``2·H·P`` for an LSTM projection of size P.
    """
    gates = RNN_GATES[rnn.mode]
    hidden, proj = rnn.hidden_size, rnn.proj_size
    state = proj or hidden
    dirs = 2 if rnn.bidirectional else 1
    total = 0
    for layer in range(rnn.num_layers):
        inputs = rnn.input_size if layer == 0 else state * dirs
        total += 2 * gates * hidden * (inputs + state) + 2 * hidden * proj
    return steps * dirs * total


def _rnn_steps(x: Tensor | PackedSequence) -> int:
    """Batch × real time steps of one recurrent call's input."""
    if isinstance(x, PackedSequence):
        return int(x.batch_sizes.sum())
    if x.dim() == 2:  # unbatched (T, F)
        return int(x.shape[0])
    return int(x.shape[0] * x.shape[1])


def _forward(model: nn.Module, batch: Batch) -> Any:
    return model(batch.inputs, batch.lengths)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def count_flops(model: nn.Module, batch: Batch) -> tuple[float, dict[str, float]]:
    """FLOPs per sample of one forward pass on ``batch``, in total and by operator.

    See the module docstring for what is counted. Recurrent layers that FlopCounterMode does
    not see into are counted by :func:`rnn_flops` (operator ``rnn (formula)``).
    """
    calls: list[tuple[nn.RNNBase, tuple[Any, ...], dict[str, Any]]] = []

    def record(
        module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        assert isinstance(module, nn.RNNBase)
        calls.append((module, args, kwargs))

    rnns = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    handles = [m.register_forward_hook(record, with_kwargs=True) for m in rnns]
    try:
        with FlopCounterMode(display=False) as counter:
            _forward(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    counts = counter.get_flop_counts().get("Global", {})
    by_op = {str(op).removeprefix("aten."): float(n) for op, n in counts.items()}
    extra = 0
    for rnn, args, kwargs in calls:
        with FlopCounterMode(display=False) as inner:
            rnn(*args, **kwargs)
        if inner.get_total_flops() == 0:  # a fused kernel: count its products by formula
            extra += rnn_flops(rnn, _rnn_steps(args[0] if args else kwargs["input"]))
    if extra:
        by_op["rnn (formula)"] = float(extra)
    size = len(batch)
    return sum(by_op.values()) / size, {op: n / size for op, n in by_op.items()}


def _timings(
    call: Callable[[], Any], device: torch.device, warmup: int, repeats: int
) -> list[float]:
    """Seconds of each of ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def peak_rss_mib() -> float:
    """The process's resident-set high-water mark since it started, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _check_positive(values: Mapping[str, int]) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name}={value!r}; expected >= 1")


@torch.no_grad()
def measure_efficiency(
    model: nn.Module,
    data: MultiTaskDataset,
    device: torch.device | str = "cpu",
    *,
    latency_repeats: int = 50,
    warmup: int = 5,
    throughput_batch: int = 256,
    throughput_repeats: int = 5,
    flops_batch: int = 64,
) -> dict[str, Any]:
    """Parameters, FLOPs per sample, latency, throughput and peak memory of ``model``.

    Args:
        model: a model called as ``model(inputs, lengths)``; moved to ``device`` and run in
            eval mode (its training mode is restored afterwards).
        data: samples to run it on (the first ``flops_batch`` for FLOPs, the first one for
            latency, the first ``throughput_batch``, cycled if there are fewer, for
            throughput).
        device: where to run it.
        latency_repeats: timed batch-1 passes (the percentiles are over these).
        warmup: untimed passes before each timing.
        throughput_batch: batch size of the throughput passes.
        throughput_repeats: timed throughput passes.
        flops_batch: batch size of the counted pass.

    Returns:
        ``parameters`` (dict), ``flops_per_sample``, ``flops_by_op`` (per sample),
        ``latency_ms_p50``, ``latency_ms_p95``, ``latency_repeats``,
        ``throughput_samples_per_s``, ``throughput_batch``, ``peak_memory_mib``,
        ``peak_memory_kind`` (``cuda_max_allocated`` or ``process_rss``), ``device`` and
        ``threads`` (torch intra-op threads); see the module docstring for how each is measured.
    """
    _check_positive(
        {
            "latency_repeats": latency_repeats,
            "throughput_batch": throughput_batch,
            "throughput_repeats": throughput_repeats,
            "flops_batch": flops_batch,
        }
    )
    if warmup < 0:
        raise ValueError(f"warmup={warmup!r}; expected >= 0")
    if len(data) == 0:
        raise ValueError("measure_efficiency needs a data set with at least one sample")
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        counted = data.batch(torch.arange(min(flops_batch, len(data)))).to(device)
        flops, by_op = count_flops(model, counted)
        single = data.batch(torch.arange(1)).to(device)
        latency = np.array(
            _timings(lambda: _forward(model, single), device, warmup, latency_repeats)
        )
        large = data.batch(torch.arange(throughput_batch) % len(data)).to(device)
        elapsed = _timings(
            lambda: _forward(model, large), device, min(warmup, 2), throughput_repeats
        )
    finally:
        model.train(was_training)
    if device.type == "cuda":
        memory, kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    else:
        memory, kind = peak_rss_mib(), "process_rss"
    seconds = sum(elapsed)
    return {
        "parameters": count_parameters(model),
        "flops_per_sample": flops,
        "flops_by_op": by_op,
        "latency_ms_p50": float(np.percentile(latency, 50)) * 1e3,
        "latency_ms_p95": float(np.percentile(latency, 95)) * 1e3,
        "latency_repeats": latency_repeats,
        "throughput_samples_per_s": throughput_batch * throughput_repeats / seconds
        if seconds > 0
        else math.inf,
        "throughput_batch": throughput_batch,
        "peak_memory_mib": memory,
        "peak_memory_kind": kind,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def count_parameters(model: nn.Module) -> dict[str, Any]:
    """Total, trainable, shared and per-task parameter counts."""
    counts: dict[str, Any] = {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    shared = getattr(model, "shared_parameters", None)
    if shared is not None:
        counts["shared"] = sum(p.numel() for p in shared())
        tasks = getattr(model, "tasks", None)
        if isinstance(tasks, dict):
            counts["per_task"] = {
                t: sum(p.numel() for p in model.task_parameters(t))  # type: ignore[operator]
                for t in tasks
            }
    return counts
