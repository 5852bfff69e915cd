"""Data parallelism across processes started by torchrun: one global batch, sharded.

Axes: B global batch, K tasks, W processes (world size).

``torchrun --nproc-per-node W -m attnmtl train ...`` starts W processes; each reads its rank
from the environment. Every process draws the same global batch order (the shuffling generator
is seeded alike), takes its shard of each global batch, and ends each step with the same
gradient — the one a single process would compute on the whole global batch:

* **Losses.** A task's loss is the mean over its labelled samples *in the global batch*. Each
  process has the mean over its shard, ``L_k,r`` over ``n_k,r`` samples; one all-reduce of the
  counts and the loss sums gives the global mean ``L_k``. Every strategy receives, per task
  present anywhere in the global batch, ``L_k + (s_k,r · L_k,r − s_k,r · L_k,r.detach())`` with
  ``s_k,r = W · n_k,r / N_k``: its *value* is the global mean (identical on every process, so
  every strategy's state — DWA's history, GradNorm's initial losses, FAMO's log losses,
  uncertainty's log-variances — evolves identically) and its *gradient*, averaged over the W
  processes, is the gradient of the global mean. Any differentiable use of a loss keeps this
  property, because the chain rule multiplies the local gradient by a factor that is a
  function of the (global) value.
* **Gradient methods** combine per-task gradients through their Gram matrix, which must be the
  global one: in ``parameters`` mode the per-task gradients ``G`` (K, P) are averaged across
  processes before the Gram is taken; in ``features`` mode each process holds the rows of its
  own samples, so the Gram is the sum of the local Grams divided by W². Every process then
  solves the same K×K problem, applies the coefficients to its own gradients, and the final
  averaging gives ``cᵀG`` of the global batch.
* **Gradients.** After the strategy's backward pass (and the transfer terms'), every trainable
  parameter's gradient — the model's and the strategy's own — is averaged across processes in
  one flat all-reduce. (torch's ``DistributedDataParallel`` reducer only sees ``backward()``;
  the gradient methods form their update with ``autograd.grad`` and write it themselves, so an
  explicit all-reduce is what makes every method correct.) A frozen teacher has no trainable
  parameter and is never touched.
* **Randomness.** Dropout draws from each process's own stream (seed + rank); a strategy's own
  random draws (RLW's weights, PCGrad's projection order) are broadcast from rank 0.
* **Metrics.** Per-epoch training losses are global (the losses' values are); validation and
  test run on every process over the whole split with identical weights, so every process holds
  the same scores; rank 0 alone logs and writes.
* **Buffers.** BatchNorm normalises each shard with its own statistics (as DDP without
  SyncBatchNorm); running statistics are rank 0's, broadcast before each evaluation (as DDP's
  ``broadcast_buffers``).
* **Failures.** What only rank 0 does (creating the run directory, loading ``last`` on resume,
  writing checkpoints) is checked on, or its outcome shared with, every process, so all of them
  stop with the same error and none waits in a collective for one that has left.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class Distributed:
    """This process's place among the W processes of a torchrun job."""

    rank: int
    world: int
    local_rank: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # NCCL: CUDA

    @property
    def main(self) -> bool:
        """Whether this process logs and writes (rank 0)."""
        return self.rank == 0

    def all_sum(self, tensor: Tensor) -> Tensor:
        """The elementwise sum of ``tensor`` over processes (in place, returned)."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        """Wait until every process gets here."""
        dist.barrier()

    def all_max(self, tensor: Tensor) -> Tensor:
        """The elementwise maximum of ``tensor`` over processes (in place, returned)."""
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def broadcast(self, tensor: Tensor) -> Tensor:
        """Rank 0's ``tensor`` on every process (in place, returned)."""
        dist.broadcast(tensor, src=0)
        return tensor

    def shard(self, index: Tensor) -> Tensor:
        """This process's contiguous part of a global batch's sample indices (B,)."""
        return index.tensor_split(self.world)[self.rank]

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Average every parameter's gradient across processes (one flat all-reduce).

        A parameter without a gradient here counts as zero where another process has one; a
        parameter no process has a gradient for keeps none (as in one process, where Adam then
        leaves it alone), so the buffer carries a has-gradient flag per parameter.
        """
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]
        flags = torch.tensor(
            [p.grad is not None for p in params], dtype=parts[0].dtype, device=parts[0].device
        )
        flat = self.all_sum(torch.cat([*parts, flags]))
        flat[: -len(params)].div_(self.world)
        seen = flat[-len(params) :].tolist()
        offset = 0
        for p, any_grad in zip(params, seen, strict=True):
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone() if any_grad else None
            offset += n

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (e.g. BatchNorm running statistics) in ``module`` everywhere."""
        with torch.no_grad():
            for tensor in module.buffers():
                self.broadcast(tensor.data)

    def broadcast_module(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers in ``module`` on every process."""
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                self.broadcast(tensor.data)

    def global_losses(
        self,
        losses: Mapping[str, Tensor],
        counts: Mapping[str, int],
        tasks: Iterable[str],
        anchor: Callable[[str], Tensor] | None = None,
        device: torch.device | None = None,
    ) -> tuple[dict[str, Tensor], dict[str, int]]:
        """Per task present in the global batch: the straight-through loss (module docstring)
        and the global count of its labelled samples.

        ``anchor(task)``: a zero in this process's graph through that task's branch (e.g.
        ``0 * preds[task].sum()``), added to the loss of a task labelled only on other
        processes so that its loss reaches the graph (with zero gradient from this shard).
        ``device``: where the counts are reduced (the run's device; NCCL needs CUDA tensors).
        """
        names = list(tasks)
        if device is None:
            device = next(iter(losses.values())).device if losses else torch.device("cpu")
        local = torch.zeros(2, len(names), dtype=torch.float64, device=device)
        for i, name in enumerate(names):
            if name in losses:
                local[0, i] = counts[name]
                local[1, i] = losses[name].detach().double() * counts[name]
        total = self.all_sum(local)
        out: dict[str, Tensor] = {}
        global_counts: dict[str, int] = {}
        for i, name in enumerate(names):
            n_global = int(total[0, i])
            if n_global == 0:
                continue
            mean = (total[1, i] / n_global).float()
            global_counts[name] = n_global
            if name in losses:
                scaled = losses[name] * (self.world * counts[name] / n_global)
                out[name] = mean.to(scaled.dtype) + (scaled - scaled.detach())
            else:  # present elsewhere only: its value, no gradient from this shard
                out[name] = mean if anchor is None else mean + anchor(name)
        return out, global_counts

    def gram(self, gram: Tensor, features: bool) -> Tensor:
        """The global Gram matrix from this process's (``features``: sum / W²)."""
        if not features:
            raise ValueError("parameters mode reduces the per-task gradients, not the Gram")
        return self.all_sum(gram.clone()) / self.world**2

    def mean(self, tensor: Tensor) -> Tensor:
        """The elementwise mean of ``tensor`` over processes (a new tensor)."""
        return self.all_sum(tensor.clone()) / self.world


_current: Distributed | None = None


def current() -> Distributed | None:
    """The running job's :class:`Distributed`, or None in a single process."""
    return _current


def world_size_from_env() -> int:
    """WORLD_SIZE as torchrun sets it (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']!r}; expected an integer (set by torchrun)"
        ) from None


def init_distributed(device: str = "auto") -> Distributed | None:
    """Join the torchrun job described by the environment (None when WORLD_SIZE is 1).

    NCCL when the run uses CUDA, gloo on CPU. Each process uses GPU ``LOCAL_RANK``.
    """
    global _current
    if world_size_from_env() <= 1:
        return None
    if _current is not None:
        return _current
    use_cuda = torch.cuda.is_available() and device != "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    where = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    _current = Distributed(dist.get_rank(), dist.get_world_size(), local_rank, where)
    return _current


def shutdown() -> None:
    """Leave the job (after the last collective)."""
    global _current
    if _current is not None and dist.is_initialized():
        dist.destroy_process_group()
    _current = None


def agree(draw: Callable[[], Tensor], job: Distributed | None) -> Tensor:
    """A random draw every process of ``job`` agrees on: rank 0's, broadcast (a plain draw
    without a job)."""
    value = draw()
    if job is not None:
        job.broadcast(value)
    return value
