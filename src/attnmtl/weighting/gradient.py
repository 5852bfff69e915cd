"""Gradient-based balancing: per-task gradients, one small K×K problem, one update.

Axes: K tasks present in the batch, N entries of a task's gradient (all shared parameters in
``parameters`` mode, the shared representation of the batch in ``features`` mode).

Every gradient method here is a function of the Gram matrix ``GGᵀ`` (K, K) of the per-task
gradients ``G`` (K, N) (and, for some, of the losses): it returns coefficients ``c`` (K,) and the
shared update is ``d = cᵀG`` — PCGrad's and GradVac's projections, CAGrad's and Aligned-MTL's
directions all stay in the span of the task gradients, so they too are a ``c``. This split is what
makes them fast and identical in both modes:

- the per-task gradients come from batched backward passes (:func:`task_gradients`), never one
  full backward pass per task;
- each method solves its K×K problem in torch, on the device, in float64;
- the update is formed from the gradients already computed (``cᵀG``), with no further backward
  pass through the encoder (``features`` mode finishes the one backward pass it needs:
  ``root.backward(cᵀG)``).

How the per-task gradients are taken (``engine="batched"``, the default):

1. The model cuts its shared representation per task (:class:`~attnmtl.models.base.FeatureSplit`),
   so one backward pass of ``Σ_k L_k`` through the task branches gives every task's gradient at
   the representation, and every task-specific parameter's gradient.
2. ``features`` mode: those gradients are ``G``. ``parameters`` mode: one vmapped backward pass
   through the encoder (``torch.autograd.grad(..., is_grads_batched=True)``) maps the K
   cotangents to the K gradients of the shared parameters; where an operation has no batching
   rule, a loop of K backward passes through the encoder alone takes over (with a warning, once).

``engine="gramian"`` (``parameters`` mode) never holds the K×P matrix (TorchJD's "autogram"
idea): it takes the same K cotangents, then accumulates ``GGᵀ`` one layer at a time. A shared
``nn.Linear`` recorded in the forward pass (:meth:`GradientBased.capture`) contributes from
its input ``x`` and its output's K cotangents ``δ``: ``∇W_k = Σ_n δ_k[n]ᵀx[n]`` is formed a
chunk of rows at a time and multiplied out (:func:`linear_gram`); any other layer's (K, P_l)
block comes from a vmapped backward pass to its parameters and is dropped once multiplied
out. Once the method has its coefficients, one backward pass of the combined cotangent
``cᵀ(cotangents)`` writes the update. At 10M shared parameters and K = 8 its peak memory was
1.9× the parameters' above a plain backward pass (median of three), where ``batched`` needs
about K×; it costs a few partial backward passes per layer more.

Models without a split (cross-stitch, MTAN, MMoE have no single shared representation) run in
``parameters`` mode with the K backward passes vmapped from the losses. ``engine="loop"`` is the
naive reference the benchmark compares against: one full backward pass per task from the losses,
as LibMTL does.

Task-specific parameters receive their own task's gradient unweighted (``task_gradients="raw"``,
as in MGDA, PCGrad, CAGrad, IMTL, GradVac, UPGrad) or scaled by the task's coefficient
(``"weighted"``, as in GradNorm and Nash-MTL, whose papers minimise ``Σ_k c_k L_k``).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from attnmtl.core.distributed import Distributed
from attnmtl.models.base import FeatureSplit, MultiTaskModel
from attnmtl.weighting.base import LOSS_FLOOR, GradientStats, StepContext, Weighting

Mode = Literal["parameters", "features"]
Engine = Literal["batched", "loop", "gramian"]
MODES: tuple[Mode, ...] = ("parameters", "features")
ENGINES: tuple[Engine, ...] = ("batched", "loop", "gramian")


@dataclass
class TaskGradients:
    """The per-task gradients of one step and where their combination goes.

    Attributes:
        blocks: gradient blocks, each (K, n_i); their concatenation along dim 1 is ``G``.
        targets: what each block's combined row is written to: shared parameters
            (``parameters`` mode) or, with ``root`` set, the single block is the cotangent of
            ``root`` (``features`` mode).
        root: the shared representation to backpropagate the combined block into, or None.
        task_grads: per present task, the gradients of its own parameters (raw, unweighted).
        task_params: per present task, its parameters (aligned with ``task_grads``).
        deferred: the task losses (K,) when the shared side is still to be differentiated
            (a step reusing coefficients without a split): :meth:`apply` then takes the
            gradient of ``Σ_k c_k L_k``, one backward pass.
    """

    blocks: list[Tensor]
    targets: list[nn.Parameter]
    root: Tensor | None
    task_grads: list[list[Tensor | None]]
    task_params: list[list[nn.Parameter]]
    deferred: Tensor | None = None
    lazy: Layerwise | None = None

    def gram(self) -> Tensor:
        """``GGᵀ`` (K, K) in float64, summed block by block (no concatenated copy of ``G``).

        Float64 whatever the gradients' dtype: the solvers' answers hinge on cancellations in
        ``GGᵀ`` (at a Pareto-stationary point a non-negative combination of the rows vanishes)
        that a float32 product loses — on K = 8 rows of 1,000 entries summing to zero, its
        rounding errors left ``1ᵀC1`` at 4e-3 (``C`` the Gram of the unit rows) and Nash-MTL
        a "solution" along the noise. It costs K²N multiply-adds, one block copy at a time.
        """
        if self.lazy is not None:
            return self.lazy.gram(None)
        return gram_of(self.blocks)

    def apply(self, coefficients: Tensor, weighted: bool, job: Distributed | None = None) -> bool:
        """Write ``cᵀG`` to the shared side and each task's gradient to its own parameters;
        False (nothing written) when the gramian engine must solve the step again
        (:meth:`Layerwise.apply`)."""
        c = coefficients
        if self.lazy is not None:
            if not self.lazy.apply(c, job):
                return False
        elif self.deferred is not None:
            c = coefficients.to(self.deferred.dtype)
            combined = (c * self.deferred).sum()
            shared_grads = torch.autograd.grad(combined, self.targets, allow_unused=True)
            for param, sgrad in zip(self.targets, shared_grads, strict=True):
                if sgrad is not None:
                    accumulate(param, sgrad)
        elif self.root is not None:
            c = coefficients.to(self.blocks[0].dtype)
            if self.root.requires_grad:
                self.root.backward((c @ self.blocks[0]).view_as(self.root))
        else:
            c = coefficients.to(self.blocks[0].dtype)
            for param, block in zip(self.targets, self.blocks, strict=True):
                accumulate(param, (c @ block).view_as(param))
        self.apply_own(c, weighted)
        return True

    def apply_direction(self, direction: Tensor, coefficients: Tensor, weighted: bool) -> None:
        """Write the shared update ``direction`` (N,) — the blocks' columns, concatenated — and
        each task's gradient to its own parameters (scaled by ``coefficients`` if weighted)."""
        if self.root is not None:
            if self.root.requires_grad:
                self.root.backward(direction.to(self.root.dtype).view_as(self.root))
        else:
            parts = direction.split([block.shape[1] for block in self.blocks])
            for param, part in zip(self.targets, parts, strict=True):
                accumulate(param, part.to(param.dtype).view_as(param))
        self.apply_own(coefficients, weighted)

    def apply_own(self, coefficients: Tensor, weighted: bool) -> None:
        """Each task's gradient to its own parameters, scaled by its coefficient if weighted."""
        for k, (params, own) in enumerate(zip(self.task_params, self.task_grads, strict=True)):
            for param, grad in zip(params, own, strict=True):
                if grad is not None:
                    accumulate(param, grad * coefficients[k] if weighted else grad)


# Entries of one chunk of a Linear layer's per-task weight gradients (K rows × chunk × in):
# the gramian engine never holds more of them at once.
CHUNK_ENTRIES = 2**20


# Tasks whose cotangents one vector-Jacobian product of the gramian engine carries: the
# backward pass holds this many copies of the activations it traverses, not K. One: at 10M
# shared parameters and K = 8 it kept the engine's extra memory at 1.7-2.0x the parameters'
# (2.1-2.3x with two tasks a vjp, for 12% less time).
TASK_CHUNK = 1


@dataclass
class Captured:
    """One call of a shared ``nn.Linear`` in the forward pass: its input (values) and output
    (in the graph), recorded by :meth:`GradientBased.capture`."""

    module: nn.Linear
    inputs: Tensor
    output: Tensor
    versions: tuple[int, int] = (0, 0)  # the input's and output's, when recorded
    forward: int = -1  # which of the model's forward passes it came from (-1: not counted)

    def intact(self) -> bool:
        """Whether neither tensor was changed in place since (``ReLU(inplace=True)`` after the
        layer would make ``output`` another operation's result)."""
        return (self.inputs._version, self.output._version) == self.versions


def linear_gram(inputs: Tensor, delta: Tensor, bias: bool, job: Distributed | None) -> Tensor:
    """The Gram matrix (K, K) of a Linear layer's per-task gradients from its input ``x``
    (..., in) and the per-task cotangents of its output ``δ`` (K, ..., out):
    ``∇W_k = Σ_n δ_k[n]ᵀ x[n]`` is formed a chunk of output rows at a time (at most
    :data:`CHUNK_ENTRIES` entries), multiplied out in float64 and dropped; ``∇b_k = Σ_n δ_k[n]``.
    """
    k, width = delta.shape[0], inputs.shape[-1]
    dtype = torch.promote_types(delta.dtype, torch.float32)  # (float64 models stay float64)
    x = inputs.reshape(-1, width).to(dtype)  # (N, in)
    d = delta.reshape(k, -1, delta.shape[-1]).to(dtype)  # (K, N, out)
    gram = torch.zeros(k, k, dtype=torch.float64, device=delta.device)
    chunk = max(1, CHUNK_ENTRIES // (k * width))
    for start in range(0, d.shape[-1], chunk):
        rows = torch.einsum("kno,ni->koi", d[..., start : start + chunk], x).reshape(k, -1)
        if job is not None:
            rows = job.mean(rows)
        rows_64 = rows.double()
        gram += rows_64 @ rows_64.T
    if bias:
        rows = d.sum(1)
        if job is not None:
            rows = job.mean(rows)
        gram += rows.double() @ rows.double().T
    return gram


def linear_cross_gram(
    inputs: tuple[Tensor, Tensor], deltas: tuple[Tensor, Tensor], bias: bool
) -> Tensor:
    """``G_a G_bᵀ`` (K, K) of a Linear layer's per-task gradients on two disjoint
    sets of samples a and b, from each set's inputs ``x`` (..., in) and its output's per-task
    cotangents ``δ`` (K, ..., out), without forming either gradient:

        ⟨∇W_{a,k}, ∇W_{b,l}⟩ = Σ_{n∈a, m∈b} (δ_{a,k}[n]·δ_{b,l}[m]) (x_a[n]·x_b[m])
                             = ⟨Δ_{a,k}, (X_a X_bᵀ) Δ_{b,l}⟩,

    plus ``(Σ_n δ_{a,k}[n])·(Σ_m δ_{b,l}[m])`` for the bias. It costs
    ``N_a N_b (in + K out) + K² N_a out`` multiply-adds where forming both gradients costs
    ``K (N_a + N_b) in out`` (:func:`cross_rule_pays`). Summed in the inputs' precision (at
    least float32), as the rows' product is, and returned in float64.
    """
    k = deltas[0].shape[0]
    dtype = torch.promote_types(deltas[0].dtype, torch.float32)
    x_a, x_b = (x.reshape(-1, x.shape[-1]).to(dtype) for x in inputs)
    d_a, d_b = (d.reshape(k, -1, d.shape[-1]).to(dtype) for d in deltas)
    mixed = torch.matmul(x_a @ x_b.T, d_b)  # (K, N_a, out): (X_a X_bᵀ) Δ_{b,l}
    gram = (d_a.reshape(k, -1) @ mixed.reshape(k, -1).T).double()  # (as rows @ rowsᵀ is)
    if bias:
        gram += (d_a.sum(1) @ d_b.sum(1).T).double()
    return gram


def rule_agrees(rule: Tensor, direct: Tensor, precision: torch.dtype) -> bool | None:
    """Whether a layer's rule gave its rows' Gram matrix — to 1e-4 of the largest entry, or to
    4 ε of ``precision`` (the cotangents' format: float16 and bfloat16 rows under AMP carry
    their own rounding) where that is looser — or None when this step cannot tell: every
    entry zero, or not finite (an AMP overflow)."""
    scale = float(torch.maximum(direct.abs().max(), rule.abs().max()))
    if not math.isfinite(scale) or scale == 0:
        return None
    tolerance = max(1e-4, 4 * torch.finfo(precision).eps)
    return float((rule - direct).abs().max()) <= tolerance * scale


def cross_rule_pays(n_a: int, n_b: int, width_in: int, width_out: int, tasks: int) -> bool:
    """Whether :func:`linear_cross_gram` costs less than forming both parts' per-task
    gradients of the layer (and its ``N_a × N_b`` product stays under :data:`CHUNK_ENTRIES`
    × 16 entries)."""
    rule = n_a * n_b * (width_in + tasks * width_out) + tasks * tasks * n_a * width_out
    rows = tasks * (n_a + n_b) * width_in * width_out
    return rule < rows and n_a * n_b <= 16 * CHUNK_ENTRIES


@dataclass
class Layerwise:
    """The ``gramian`` engine's per-task gradients, kept as cotangents: ``G`` is never formed.

    Attributes:
        output: the tensor the cotangents belong to (the shared representation, or the
            stacked task losses when the model has no split).
        cotangents: (K, *output.shape), one per task.
        groups: the shared parameters, layer by layer.
    """

    output: Tensor
    cotangents: Tensor
    groups: list[list[nn.Parameter]]
    linear: list[Captured] = field(default_factory=list)
    # ids of Linear modules whose recorded call was checked to carry all their gradient, and
    # of those found not to (a weight also used elsewhere): shared across steps by the strategy
    verified: set[int] = field(default_factory=set)
    unsafe: set[int] = field(default_factory=set)
    # modules recorded for the first time this step: their rule's local Gram, checked in apply
    pending: dict[int, tuple[nn.Module, Tensor]] = field(default_factory=dict)

    def gram(self, job: Distributed | None) -> Tensor:
        """``GGᵀ`` (K, K) in float64, accumulated layer by layer, never the K×P matrix: a
        captured Linear layer's part from its input and its output's K cotangents
        (:func:`linear_gram`, a chunk of rows at a time); any other layer's (K, P_l) block from
        a vmapped backward pass to its parameters, alive only while it is multiplied out (in
        column chunks). Rows are averaged over the job first, as the other engines do."""
        k = self.cotangents.shape[0]
        gram = torch.zeros(k, k, dtype=torch.float64, device=self.cotangents.device)
        shared = {id(p) for params in self.groups for p in params}
        calls: dict[int, int] = {}
        for c in self.linear:
            calls[id(c.module)] = calls.get(id(c.module), 0) + 1
        linear = [  # a module called once, all of whose parameters are shared
            c
            for c in self.linear
            if calls[id(c.module)] == 1
            and id(c.module) not in self.unsafe
            and c.intact()
            and c.output.requires_grad
            and all(id(p) in shared for p in c.module.parameters())
        ]
        parts: dict[int, Tensor] = {}
        for c in linear:  # the K cotangents a few tasks at a time: K× activations never live
            delta = c.output.new_empty((k, *c.output.shape))
            for start in range(0, k, TASK_CHUNK):
                part = self.cotangents[start : start + TASK_CHUNK]
                delta[start : start + TASK_CHUNK] = vjp_rows(
                    self.output, [c.output], part, retain_graph=True
                )[0]
            bias = c.module.bias is not None
            local = linear_gram(c.inputs, delta, bias, None)
            if id(c.module) not in self.verified:  # checked against the update (see apply)
                self.pending[id(c.module)] = (c.module, local)
            parts[id(c.module)] = local if job is None else linear_gram(c.inputs, delta, bias, job)
            del delta
        covered = {id(p) for c in linear if id(c.module) in parts for p in c.module.parameters()}
        for part_gram in parts.values():
            gram += part_gram
        for params in self.groups:
            rest = [p for p in params if id(p) not in covered]
            if not rest:
                continue
            rows = vjp_rows(self.output, rest, self.cotangents, retain_graph=True)
            for block in rows:
                flat = block.flatten(1)
                if job is not None:
                    flat = job.mean(flat)
                step = max(1, CHUNK_ENTRIES // k)
                for start in range(0, flat.shape[1], step):
                    part = flat[:, start : start + step].double()
                    gram += part @ part.T
            del rows
        return gram

    def apply(self, coefficients: Tensor, job: Distributed | None = None) -> bool:
        """One backward pass of ``Σ_k c_k cotangent_k`` to the shared parameters.

        A Linear recorded for the first time is checked here, on the gradient this pass
        computes anyway: its parameters' ``‖∇Σ_k c_k L_k‖²`` must equal ``cᵀ G_m c`` of its
        rule's Gram (1e-4 relative). A weight also used outside its call (tied, or read
        directly) fails; it is then marked for vector-Jacobian products, nothing is written and
        False returned, for the caller to solve the step again (the graph is kept for it).
        Every process of a job agrees on the verdict.
        """
        c = coefficients.to(self.cotangents.dtype)
        combined = torch.tensordot(c, self.cotangents, dims=1)  # (*output.shape)
        shared = [p for params in self.groups for p in params]
        checking = bool(self.pending)
        grads = torch.autograd.grad(
            self.output, shared, combined, allow_unused=True, retain_graph=checking
        )
        if checking:
            found = dict(zip(map(id, shared), grads, strict=True))
            c64 = coefficients.double().to(self.cotangents.device)
            bad = []
            for key, (module, gram) in self.pending.items():
                direct = sum(  # (a norm, no float64 copy of a layer's gradient)
                    float(torch.dot(found[id(p)].reshape(-1), found[id(p)].reshape(-1)))
                    for p in module.parameters()
                    if found.get(id(p)) is not None
                )
                rule = float(c64 @ gram.to(c64) @ c64)
                if abs(direct - rule) > 1e-4 * max(direct, rule, 1e-30):
                    bad.append(key)
            flag = torch.tensor([float(bool(bad))], device=self.cotangents.device)
            if job is not None:
                flag = job.all_max(flag)
            if float(flag) > 0:
                self.unsafe.update(bad)
                if not bad:  # another process found one: the same modules go everywhere
                    self.unsafe.update(self.pending)
                self.pending.clear()
                return False
            self.verified.update(self.pending)
            self.pending.clear()
        for param, grad in zip(shared, grads, strict=True):
            if grad is not None:
                accumulate(param, grad)
        return True


@contextlib.contextmanager
def recording_linear(
    model: nn.Module,
    shared: Sequence[nn.Parameter],
    sink: list[Captured],
    forward: Callable[[], int] | None = None,
) -> Iterator[None]:
    """Append to ``sink`` every call, with gradient enabled, of an ``nn.Linear`` of ``model``
    all of whose parameters are in ``shared`` and held by no other module (a weight shared
    by two modules is taken by its rows): its input (values), its output (in the graph) and,
    given ``forward``, the index of the model's forward pass it came from."""
    ids = {id(p) for p in shared}
    holders: dict[int, int] = {}  # parameter → the modules holding it
    linear = []
    for m in model.modules():
        for param in m.parameters(recurse=False):
            holders[id(param)] = holders.get(id(param), 0) + 1
        if isinstance(m, nn.Linear):
            linear.append(m)

    def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        if torch.is_grad_enabled() and isinstance(output, Tensor) and args:
            assert isinstance(module, nn.Linear)
            x = args[0].detach()
            index = -1 if forward is None else forward()
            sink.append(Captured(module, x, output, (x._version, output._version), index))

    handles = [
        m.register_forward_hook(hook)
        for m in linear
        if all(id(p) in ids and holders[id(p)] == 1 for p in m.parameters())
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def by_part(calls: Sequence[Captured], parts: int) -> list[dict[int, Captured]]:
    """Per part, id(module) → its call, from calls recorded with the index of the forward pass
    (one per part) they came from; a module called other than once in a part is left out of
    that part."""
    count: dict[tuple[int, int], int] = {}
    for call in calls:
        key = (call.forward, id(call.module))
        count[key] = count.get(key, 0) + 1
    out: list[dict[int, Captured]] = [{} for _ in range(parts)]
    for call in calls:
        if 0 <= call.forward < parts and count[(call.forward, id(call.module))] == 1:
            out[call.forward][id(call.module)] = call
    return out


def layer_groups(ctx: StepContext) -> list[list[nn.Parameter]]:
    """The shared parameters by layer (``ctx.groups``), or one tensor per group."""
    shared = list(ctx.shared_parameters)
    if ctx.groups is None:
        return [[p] for p in shared]
    return [[shared[i] for i in group] for group in ctx.groups if len(group)]


def gram_of(blocks: Sequence[Tensor]) -> Tensor:
    """``Σ_b B_b B_bᵀ`` (K, K) in float64 over blocks (K, n_b), each copied to float64 a chunk
    of :data:`CHUNK_ENTRIES` at a time (never a float64 copy of a whole block)."""
    k = blocks[0].shape[0]
    gram = torch.zeros(k, k, dtype=torch.float64, device=blocks[0].device)
    step = max(1, CHUNK_ENTRIES // k)
    for block in blocks:
        for start in range(0, block.shape[1], step):
            rows = block[:, start : start + step].double()
            gram += rows @ rows.T
    return gram


def global_gram(grads: TaskGradients, job: Distributed | None) -> Tensor:
    """``GGᵀ`` of the global batch: this process's alone, or across a torchrun job (the
    per-task gradients averaged in ``parameters`` mode; the local Grams summed over W² in
    ``features`` mode, where each process holds the rows of its own samples)."""
    if grads.lazy is not None:
        return grads.lazy.gram(job)
    if job is None:
        return grads.gram()
    if grads.root is not None:
        return job.gram(grads.gram(), features=True)
    averaged = [job.mean(block) for block in grads.blocks]
    return TaskGradients(averaged, [], None, [], []).gram()


def accumulate(param: nn.Parameter, grad: Tensor) -> None:
    """Add ``grad`` to ``param.grad`` (setting it when there is none), as backward does."""
    if param.grad is None:
        param.grad = grad.detach()
    else:
        param.grad.add_(grad.detach())


_warned_fallback: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """One warning per distinct ``key`` in a process."""
    if key not in _warned_fallback:
        _warned_fallback.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def vjp_rows(
    output: Tensor, inputs: Sequence[Tensor], cotangents: Tensor, retain_graph: bool
) -> list[Tensor]:
    """Per row ``k`` of ``cotangents`` (K, *output.shape), the vector-Jacobian product with
    ``inputs``: one vmapped backward pass, or a loop where an operation has no batching rule.

    Returns one tensor (K, *input.shape) per input (zeros for inputs ``output`` does not reach).
    """
    k = cotangents.shape[0]
    if k > 1:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*performance drop.*")
                rows = torch.autograd.grad(
                    output,
                    inputs,
                    cotangents,
                    retain_graph=retain_graph,
                    allow_unused=True,
                    is_grads_batched=True,
                )
            return [or_zeros(r, x, k) for x, r in zip(inputs, rows, strict=True)]
        except RuntimeError as error:  # an operation without a batching rule
            warn_once(
                "vmap",
                "per-task gradients: the vmapped backward pass failed "
                f"({str(error).splitlines()[0]}); using one backward pass per task",
            )
    per_task = [
        torch.autograd.grad(
            output,
            inputs,
            cotangents[i],
            retain_graph=retain_graph or i < k - 1,
            allow_unused=True,
        )
        for i in range(k)
    ]
    return [torch.stack([or_zeros(p[j], x) for p in per_task]) for j, x in enumerate(inputs)]


def loop_rows(losses: Tensor, inputs: Sequence[Tensor]) -> list[Tensor]:
    """The naive reference: one full backward pass per task loss (graph retained)."""
    per_task = [
        torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True) for loss in losses
    ]
    return [torch.stack([or_zeros(p[j], x) for p in per_task]) for j, x in enumerate(inputs)]


def task_gradients(
    losses: Tensor,
    tasks: Sequence[str],
    ctx: StepContext,
    mode: Mode,
    engine: Engine = "batched",
    need_shared: bool = True,
    captured: Sequence[Captured] = (),
    checked: tuple[set[int], set[int]] = (set(), set()),
) -> TaskGradients:
    """The per-task gradients of ``losses`` (K,) (already scaled for AMP) for ``tasks``.

    ``need_shared=False`` is for steps that reuse earlier coefficients: it skips the per-task
    gradients of the shared parameters, and the returned object applies ``cᵀG`` with the
    single backward pass it then needs (through ``root``, or of ``Σ_k c_k L_k``).
    """
    task_params = [list(ctx.task_parameters.get(t, ())) for t in tasks]
    flat_task = [p for params in task_params for p in params]
    shared = list(ctx.shared_parameters)
    split = ctx.split
    if split is not None and split.root is not None:
        if engine == "loop":
            raise ValueError(
                f"engine={engine!r} takes the gradients from the losses; "
                "run the forward pass without split_features"
            )
        leaves = [split.leaves[t] for t in tasks]
        live = [x for x in leaves if x.requires_grad]
        wanted = live + flat_task
        grads = torch.autograd.grad(losses.sum(), wanted, allow_unused=True) if wanted else ()
        at_leaf: dict[int, Tensor | None] = dict(
            zip(map(id, live), grads[: len(live)], strict=True)
        )
        cotangents = torch.stack([or_zeros(at_leaf.get(id(x)), x) for x in leaves])
        task_grads = unflatten(list(grads[len(live) :]), task_params)
        root = split.root
        if mode == "features" or not need_shared or not root.requires_grad:
            return TaskGradients([cotangents.flatten(1)], [], root, task_grads, task_params)
        if engine == "gramian":
            lazy = Layerwise(root, cotangents, layer_groups(ctx), list(captured), *checked)
            return TaskGradients([], shared, None, task_grads, task_params, lazy=lazy)
        blocks = vjp_rows(root, shared, cotangents, retain_graph=False)
        return TaskGradients([b.flatten(1) for b in blocks], shared, None, task_grads, task_params)
    if mode == "features":
        features = ctx.features
        if features is None or not features.requires_grad:
            raise ValueError(
                "the features gradient mode needs the model's shared representation (a model "
                "with splits_features, such as attention_mtl or hard_sharing); use mode=parameters"
            )
        if engine == "loop":  # naive: one backward pass per task through its branch
            rows = loop_rows(losses, [features])[0]
        else:
            eye = torch.eye(len(tasks), dtype=losses.dtype, device=losses.device)
            rows = vjp_rows(losses, [features], eye, retain_graph=True)[0]
        task_grads = unflatten(
            list(torch.autograd.grad(losses.sum(), flat_task, allow_unused=True, retain_graph=True))
            if flat_task
            else [],
            task_params,
        )
        return TaskGradients([rows.flatten(1)], [], features, task_grads, task_params)
    if engine == "gramian" and need_shared:
        eye = torch.eye(len(tasks), dtype=losses.dtype, device=losses.device)
        task_grads = unflatten(
            list(torch.autograd.grad(losses.sum(), flat_task, allow_unused=True, retain_graph=True))
            if flat_task
            else [],
            task_params,
        )
        lazy = Layerwise(losses, eye, layer_groups(ctx), list(captured), *checked)
        return TaskGradients([], shared, None, task_grads, task_params, lazy=lazy)
    if not need_shared:
        blocks, deferred = [], losses
    elif engine == "loop":
        blocks, deferred = loop_rows(losses, shared), None
    else:
        eye = torch.eye(len(tasks), dtype=losses.dtype, device=losses.device)
        blocks, deferred = vjp_rows(losses, shared, eye, retain_graph=True), None
    task_grads = unflatten(
        list(
            torch.autograd.grad(
                losses.sum(), flat_task, allow_unused=True, retain_graph=deferred is not None
            )
        )
        if flat_task
        else [],
        task_params,
    )
    return TaskGradients(
        [b.flatten(1) for b in blocks], shared, None, task_grads, task_params, deferred
    )


def or_zeros(grad: Tensor | None, like: Tensor, rows: int | None = None) -> Tensor:
    """``grad``, or zeros shaped like ``like`` (with ``rows`` in front) where autograd found no
    path (None)."""
    if grad is not None:
        return grad
    if rows is None:
        return torch.zeros_like(like)
    return torch.zeros((rows, *like.shape), dtype=like.dtype, device=like.device)


def unflatten(
    grads: list[Tensor | None], groups: Sequence[Sequence[nn.Parameter]]
) -> list[list[Tensor | None]]:
    """Split a flat list of gradients back into the per-task parameter groups."""
    out, start = [], 0
    for group in groups:
        out.append(grads[start : start + len(group)])
        start += len(group)
    return out


class GradientBased(Weighting):
    """What every method built on per-task gradients shares: the options, the gradient
    context, the log-loss objective and :meth:`gradient_stats`.

    Two families derive from it. :class:`GradientWeighting` methods are functions of the Gram
    matrix (they return coefficients ``c`` and the update is ``cᵀG``); :class:`RowWeighting`
    methods need the gradient rows themselves (momentum buffers of past gradients, per-entry
    masks) and return the update vector.

    Args:
        tasks: names of all tasks, in order.
        mode: ``parameters`` (per-task gradients of every shared parameter) or ``features``
            (per-task gradients at the shared representation, as MGDA-UB; needs a model that
            cuts it per task, such as ``attention_mtl`` or ``hard_sharing``).
        update_every: solve for new coefficients every this many steps and reuse the last ones
            in between (Nash-MTL's amortisation, Navon et al. 2022 §5.3); 1 (off) by default.
            A step that reuses them costs about one equal-weighting step.
        engine: ``batched`` (vmapped per-task gradients; the default), ``gramian`` (the Gram
            matrix accumulated layer by layer, never the K×P matrix, then one weighted backward
            pass: for models too big for K copies of their gradient; the same as ``batched`` in
            ``features`` mode) or ``loop`` (one full backward pass per task, the naive
            reference the benchmark compares against).
        log_losses: run the method on the gradients of ``log L_k`` instead of ``L_k``
            (``g_k / L_k``: every task's gradient is divided by its loss, so no task's scale
            dominates), as FAMO's code runs MGDA, CAGrad and IMTL-G, and as DB-MTL balances
            loss scales. The weight reported is then the factor on the raw loss, ``c_k / L_k``.

    Every step that solves leaves its Gram matrix for :meth:`gradient_stats` (the trainer logs
    the task gradients' pairwise cosines and norms from it, at no extra cost).
    """

    task_gradients: ClassVar[Literal["raw", "weighted"]] = "raw"
    coefficients: Tensor
    job: Distributed | None = None  # the running step's torchrun job (StepContext.job)
    # The last solved step's Gram matrix of the (unscaled) task gradients, and its tasks.
    last_gram: Tensor | None = None
    last_tasks: tuple[str, ...] = ()
    captured: list[Captured]  # the gramian engine's record of this step's Linear calls

    def __init__(
        self,
        tasks: Sequence[str],
        mode: Mode = "parameters",
        update_every: int = 1,
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(tasks)
        if not isinstance(log_losses, bool):
            raise ValueError(f"log_losses={log_losses!r}; expected true or false")
        self.log_losses = log_losses
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; expected one of: {', '.join(MODES)}")
        if engine not in ENGINES:
            raise ValueError(f"engine={engine!r}; expected one of: {', '.join(ENGINES)}")
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"update_every={update_every!r}; expected an integer >= 1")
        self.mode: Mode = mode
        self.needs = mode
        self.update_every = update_every
        self.engine: Engine = engine
        self.captured = []
        # the gramian engine's Linear modules checked once (Layerwise.verify): safe, unsafe
        self.verified_linear: set[int] = set()
        self.unsafe_linear: set[int] = set()
        self.register_buffer("coefficients", torch.ones(len(self.tasks)))

    def wants_split(self) -> bool:
        """The batched and gramian engines take per-task gradients at the representation's
        cut."""
        return self.engine != "loop"

    def capture(self, model: nn.Module) -> AbstractContextManager[object]:
        """With the ``gramian`` engine in ``parameters`` mode, record every call of a shared
        ``nn.Linear`` in the forward pass (its input and output), so the Gram matrix of its
        gradients comes from them (:func:`linear_gram`) without a K×P block; a no-op
        otherwise. Outside it (your own forward pass) the engine still works, layer by layer
        through vector-Jacobian products."""
        if self.engine != "gramian" or self.mode != "parameters":
            return contextlib.nullcontext()
        return self._recording(model)

    @contextlib.contextmanager
    def _recording(self, model: nn.Module) -> Iterator[None]:
        self.captured = []
        shared_of = getattr(model, "shared_parameters", None)
        shared = shared_of() if callable(shared_of) else ()
        with recording_linear(model, shared, self.captured):
            yield

    def take_captured(self) -> list[Captured]:
        """What :meth:`capture` recorded for this step (then forgotten)."""
        captured, self.captured = self.captured, []
        return captured

    def gradient_stats(self) -> GradientStats | None:
        """The task gradients' norms and pairwise cosines at the last step that solved."""
        if self.last_gram is None:
            return None
        return GradientStats.from_gram(self.last_gram, self.last_tasks)

    def prepare(
        self, losses: Mapping[str, Tensor], ctx: StepContext
    ) -> tuple[list[str], list[int], Tensor, Tensor]:
        """The present tasks, their positions, their losses (K,) and the objective (K,)
        whose gradients the method takes (the losses, or their logs)."""
        order = self.present(losses)
        missing = [t for t in order if t not in ctx.task_parameters]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: StepContext.task_parameters has no entry for "
                f"{', '.join(map(repr, missing))}, so those tasks' own parameters (heads, "
                "attention) would get no gradient; build the context with "
                "StepContext.from_model(model, output, step, epoch)"
            )
        self.job = ctx.job  # (methods that draw random numbers agree on them across processes)
        stacked = torch.stack([losses[t] for t in order])
        objective = stacked.clamp_min(LOSS_FLOOR).log() if self.log_losses else stacked
        return order, [self.index(t) for t in order], stacked, objective

    def report(self, order: Sequence[str], c: Tensor, losses: Tensor) -> dict[str, Tensor]:
        """task → the factor its raw loss received (``c_k``, or ``c_k / L_k`` on log losses)."""
        reported = c / losses.detach().clamp_min(LOSS_FLOOR) if self.log_losses else c
        return {t: reported[k].detach() for k, t in enumerate(order)}


class GradientWeighting(GradientBased):
    """Base of the Gram-matrix methods: subclasses implement :meth:`combine`.

    See :class:`GradientBased` for the arguments.
    """

    @abstractmethod
    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        """Coefficients ``c`` (K,) of the update ``d = cᵀG`` from the Gram matrix.

        Args:
            gram: ``GGᵀ`` (K, K), float64, of the present tasks' gradients (unscaled by AMP).
            losses: the present tasks' losses (K,), detached.
            index: the present tasks' positions in :attr:`tasks` (for per-task state).
        """

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Per-task gradients, :meth:`combine`, and the combined update, in one go."""
        order, index, stacked, objective = self.prepare(losses, ctx)
        solve = ctx.step % self.update_every == 0
        grads = task_gradients(
            ctx.scale(objective),
            order,
            ctx,
            self.mode,
            self.engine,
            need_shared=solve,
            captured=self.take_captured(),
            checked=(self.verified_linear, self.unsafe_linear),
        )
        if solve:
            c = self.solve(grads, ctx, stacked.detach(), order, index)
            self.coefficients[index] = c.detach().to(self.coefficients.dtype)
        else:
            c = self.coefficients[index].to(stacked.dtype)
        weighted = self.task_gradients == "weighted"
        while not grads.apply(c, weighted, ctx.job):  # a recorded Linear's rule did not hold:
            # solve again without it (each failure marks modules, so this ends; a stateful
            # method's state then takes this first step twice)
            c = self.solve(grads, ctx, stacked.detach(), order, index)
            self.coefficients[index] = c.detach().to(self.coefficients.dtype)
        return self.report(order, c, stacked)

    def solve(
        self,
        grads: TaskGradients,
        ctx: StepContext,
        losses: Tensor,
        order: Sequence[str],
        index: list[int],
    ) -> Tensor:
        """This step's coefficients (K,) from the global Gram matrix (unscaled for AMP),
        which is also kept for :meth:`gradient_stats`."""
        gram = global_gram(grads, ctx.job).double()
        factor = ctx.scale(torch.ones((), dtype=losses.dtype, device=losses.device))
        gram = gram / factor.double() ** 2
        self.last_gram, self.last_tasks = gram.detach(), tuple(order)
        if not bool(torch.isfinite(gram).all()):
            # overflow under AMP: GradScaler skips this step; keep the solver out of it
            return torch.ones(len(order), dtype=losses.dtype, device=losses.device)
        return self.combine(gram, losses.double(), index).to(losses.dtype)


@dataclass
class Rows:
    """The per-task gradients of one step as one matrix, for :meth:`RowWeighting.direction`.

    Attributes:
        matrix: ``G`` (K, N), unscaled for AMP, averaged over a torchrun job in ``parameters``
            mode (each process's own rows in ``features`` mode).
        features: ``features`` mode: the shared representation (its values; its shape is
            ``matrix.shape[1:]`` unflattened); None in ``parameters`` mode.
    """

    matrix: Tensor
    features: Tensor | None


class RowWeighting(GradientBased):
    """Base of the methods whose update needs the gradient rows, not only their Gram matrix:
    subclasses implement :meth:`direction`.

    The per-task gradients are taken as for :class:`GradientWeighting` (batched, in either
    mode), concatenated into ``G`` (K, N) — the memory a K×N matrix needs, which these methods
    hold anyway in their buffers — and the update ``d`` (N,) the method returns is written to
    the shared parameters (or backpropagated from the representation). Its Gram matrix is
    still kept for :meth:`gradient_stats`. ``update_every`` is 1: these methods update their
    state from every step's gradients.

    ``modes`` lists the gradient modes a method's definition admits: a method whose buffers
    hold gradients across steps runs in ``parameters`` mode only (the representation's
    gradient belongs to one batch's samples and cannot be averaged over steps).

    See :class:`GradientBased` for the arguments.
    """

    modes: ClassVar[tuple[Mode, ...]] = MODES
    # Buffers with one row per task and one column per gradient entry, created at the first
    # step (when N is known); checkpoints restore them at their saved size.
    row_buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        tasks: Sequence[str],
        mode: Mode = "parameters",
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(tasks, mode=mode, update_every=1, engine=engine, log_losses=log_losses)
        if engine == "gramian":
            raise ValueError(
                f"engine='gramian'; {type(self).__name__} needs the gradient rows themselves, "
                "which the gramian engine never forms: use batched or loop"
            )
        if mode not in self.modes:
            raise ValueError(
                f"mode={mode!r}; {type(self).__name__} runs in {' or '.join(self.modes)} mode only"
            )

    def row_buffer(self, name: str, like: Tensor) -> Tensor:
        """The (all tasks, N) buffer ``name``, zeros at the first step; ``like`` (K, N)."""
        buffer: Tensor = getattr(self, name)
        shape = (len(self.tasks), like.shape[1])
        if buffer.numel() == 0:
            buffer = torch.zeros(shape, dtype=like.dtype, device=like.device)
            setattr(self, name, buffer)
        elif tuple(buffer.shape) != shape:
            raise ValueError(
                f"{type(self).__name__}: its {name} buffer holds gradients of "
                f"{buffer.shape[1]} entries but this step's have {shape[1]}; the model's "
                "shared part changed since the strategy started"
            )
        return buffer

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        for name in self.row_buffers:  # restore at the saved size (empty before a first step)
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args)

    @abstractmethod
    def direction(self, rows: Rows, losses: Tensor, index: list[int]) -> tuple[Tensor, Tensor]:
        """The shared update ``d`` (N,) and per-task coefficients ``c`` (K,).

        ``c`` weights the task-specific parameters' gradients where ``task_gradients`` is
        ``weighted``, and is the weight reported for each task.

        Args:
            rows: this step's per-task gradients.
            losses: the present tasks' losses (K,), detached.
            index: the present tasks' positions in :attr:`tasks` (for per-task state).
        """

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Per-task gradients, :meth:`direction`, and its update, in one go."""
        order, index, stacked, objective = self.prepare(losses, ctx)
        grads = task_gradients(ctx.scale(objective), order, ctx, self.mode, self.engine)
        factor = ctx.scale(torch.ones((), dtype=stacked.dtype, device=stacked.device))
        blocks = grads.blocks
        if ctx.job is not None and grads.root is None:
            blocks = [ctx.job.mean(block) for block in blocks]
        matrix = torch.cat(blocks, dim=1)  # (K, N)
        if float(factor) != 1.0:
            matrix /= factor
        gram = gram_of([matrix])
        self.last_gram, self.last_tasks = gram.detach(), tuple(order)
        if not bool(torch.isfinite(gram).all()):  # overflow under AMP: the step is skipped
            d, c = matrix.sum(0), torch.ones_like(stacked)
        else:
            features = grads.root.detach() if grads.root is not None else None
            d, c = self.direction(Rows(matrix, features), stacked.detach(), index)
        c = c.to(stacked.dtype)
        self.coefficients[index] = c.detach().to(self.coefficients.dtype)
        grads.apply_direction(d * factor, c, weighted=self.task_gradients == "weighted")
        return self.report(order, c, stacked)


@dataclass
class PartGradients:
    """The gradients of the task objectives of ``S`` disjoint parts of a batch, taken only as
    a method asks for them, each part at most once (unscaled for AMP, averaged over a torchrun
    job): :meth:`rows` gives a part's K per-task rows (K, P) — a vmapped K-row backward pass —,
    :meth:`gram` two parts' cross-Gram matrix (K, K) — a vmapped backward pass per part — and
    :meth:`combined` one weighted combination ``cᵀG_i`` (P,) — a single backward pass.

    ``objectives[i]`` holds part i's K objectives (a task with no labelled sample in the part
    has a zero without gradient path); ``live[i]`` the positions of those that have one.
    """

    weighting: SampledWeighting
    objectives: list[list[Tensor]]
    live: list[list[int]]
    shared: list[nn.Parameter]
    scale: Any
    factor: Tensor
    job: Distributed | None
    retain: bool  # parts of one forward pass share its graph
    taken: list[Tensor] = field(default_factory=list)
    # per part, id(module) → its one recorded call in the part's forward pass (None: not
    # recorded), and the cross-Gram matrices :meth:`gram` formed from them
    records: list[dict[int, Captured]] | None = None
    crossed: list[Tensor] = field(default_factory=list)
    # per part, its forward pass's cut of the shared representation (None: not cut), and the
    # task of each objective position
    splits: list[FeatureSplit] | None = None
    order: Sequence[str] = ()

    def cut(self, i: int) -> FeatureSplit | None:
        """Part i's cut, where its forward pass made one."""
        if self.splits is None or self.splits[i].root is None:
            return None
        return self.splits[i]

    def through_cut(self, i: int, weights: Tensor, inputs: Sequence[Tensor]) -> list[Tensor]:
        """For each row r of ``weights`` (R, live tasks), the gradient of
        ``Σ_m weights[r, m] · objective_m`` of part i with respect to each of ``inputs``
        (R, *input.shape), through the part's cut: one backward pass through the task branches
        to the per-task leaves, then one (vmapped for R > 1) from the shared representation."""
        split = self.cut(i)
        assert split is not None and split.root is not None
        live = self.live[i]
        vector = self.scale(torch.stack([self.objectives[i][m] for m in live]))
        leaves = [split.leaves[self.order[m]] for m in live]
        found = torch.autograd.grad(
            vector.sum(), leaves, retain_graph=self.retain, allow_unused=True
        )
        at_leaves = torch.stack([or_zeros(g, x) for g, x in zip(found, leaves, strict=True)])
        cotangents = torch.tensordot(weights.to(at_leaves.dtype), at_leaves, dims=1)
        if len(cotangents) > 1:
            return vjp_rows(split.root, inputs, cotangents, retain_graph=self.retain)
        grads = torch.autograd.grad(
            split.root, inputs, cotangents[0], retain_graph=self.retain, allow_unused=True
        )
        return [or_zeros(g, x)[None] for g, x in zip(grads, inputs, strict=True)]

    @property
    def width(self) -> int:
        """P, the number of shared parameter entries."""
        return sum(p.numel() for p in self.shared)

    def finish(self, flat: Tensor) -> Tensor:
        """Averaged over the job and unscaled."""
        if self.job is not None:
            flat = self.job.mean(flat)
        return flat / self.factor.to(flat.dtype)

    def rows(self, i: int) -> Tensor:
        """Part i's per-task gradients (K, P), one vmapped backward pass over its graph (a
        pass per part: one pass through several parts' graphs runs every cotangent through
        every graph, 1.7× slower for SDMGrad's two)."""
        blocks = self.per_task(i, self.shared)
        matrix = torch.cat([b.flatten(1) for b in blocks], 1).to(self.shared[0].dtype)
        matrix = self.finish(matrix)
        self.taken.append(matrix)
        return matrix

    def per_task(self, i: int, inputs: Sequence[Tensor]) -> list[Tensor]:
        """Part i's K per-task gradients (still scaled for AMP) of each of ``inputs``,
        (K, *input.shape), zero for a task unlabelled in the part: through the part's cut
        where it has one, else one vmapped backward pass from its losses (one pass per task
        with the ``loop`` engine)."""
        k, live = len(self.objectives[i]), self.live[i]
        found: list[Tensor] = []
        if live and self.cut(i) is not None:
            eye = torch.eye(len(live), dtype=torch.float64, device=self.factor.device)
            found = self.through_cut(i, eye, inputs)
        elif live:
            vector = self.scale(torch.stack([self.objectives[i][m] for m in live]))
            if self.weighting.engine == "loop":  # the naive reference: a backward pass per row
                found = loop_rows(vector, inputs)
            else:
                eye = torch.eye(len(live), dtype=vector.dtype, device=vector.device)
                found = vjp_rows(vector, inputs, eye, retain_graph=self.retain)
        if len(live) == k:
            return found
        full = [x.new_zeros((k, *x.shape)) for x in inputs]
        for whole, rows in zip(full, found, strict=False):
            whole[live] = rows.to(whole.dtype)
        return full

    def gram(self, i: int, j: int) -> Tensor:
        """``G_i G_jᵀ`` (K, K) in float64, for two different parts i and j.

        Without records of the parts' forward passes, from their rows (:meth:`rows`). With
        them (one process, ``batched`` engine), a shared ``nn.Linear`` called once in each
        part contributes by :func:`linear_cross_gram`, from its inputs and its output's
        per-task cotangents, where that costs less than its rows (:func:`cross_rule_pays`);
        the other shared parameters by their rows. Each part takes one vmapped backward pass
        for both. A layer's rule is checked against its rows the first time it is used: a
        weight also read outside that call (tied, or used directly) fails the check and is
        taken by its rows from then on.
        """
        if self.records is None:
            return (self.rows(i) @ self.rows(j).T).double()
        assert self.job is None, "a torchrun job averages rows first: no records"
        owner = self.weighting
        k = len(self.objectives[i])
        calls = []
        for key, first in self.records[i].items():
            second = self.records[j].get(key)
            if second is None or key in owner.unsafe_linear:
                continue
            pair = (first, second)
            if not all(c.intact() and c.output.requires_grad for c in pair):
                continue
            n_a, n_b = (c.inputs.numel() // c.inputs.shape[-1] for c in pair)
            layer = first.module
            if cross_rule_pays(n_a, n_b, layer.in_features, layer.out_features, k):
                calls.append(pair)
        checking = [pair for pair in calls if id(pair[0].module) not in owner.verified_linear]
        covered = {id(p) for pair in calls for p in pair[0].module.parameters()}
        rest = [p for p in self.shared if id(p) not in covered]
        extra = [p for pair in checking for p in pair[0].module.parameters()]
        got = []  # per part: the cotangents of the calls' outputs, then the rows of rest, extra
        for side, part in enumerate((i, j)):
            inputs = [pair[side].output for pair in calls] + rest + extra
            got.append(self.per_task(part, inputs))  # (scaled: the Gram is unscaled below)
        first_got, second_got = got
        gram = torch.zeros(k, k, dtype=torch.float64, device=first_got[0].device)
        n = len(calls)
        checked = iter(range(n + len(rest), n + len(rest) + len(extra)))
        for position, (a, b) in enumerate(calls):
            layer = a.module
            bias = layer.bias is not None
            rule = linear_cross_gram(
                (a.inputs, b.inputs), (first_got[position], second_got[position]), bias
            )
            if id(layer) not in owner.verified_linear:
                spots = [next(checked) for _ in layer.parameters()]
                direct = sum(
                    (first_got[s].flatten(1) @ second_got[s].flatten(1).T).double() for s in spots
                )
                assert isinstance(direct, Tensor)
                verdict = rule_agrees(rule, direct, first_got[position].dtype)
                if verdict is not None:
                    (owner.verified_linear if verdict else owner.unsafe_linear).add(id(layer))
                if not verdict:
                    rule = direct
            gram += rule
        if rest:
            cat = [torch.cat([x.flatten(1) for x in g[n : n + len(rest)]], 1) for g in got]
            gram += (cat[0] @ cat[1].T).double()
        gram = gram / self.factor.double() ** 2
        self.crossed.append(gram)
        return gram

    def combined(self, i: int, c: Tensor) -> Tensor:
        """``Σ_k c_k ∇(objective_k of part i)`` (P,), one backward pass."""
        live = self.live[i]
        ref = self.shared[0]
        if not live:
            return ref.new_zeros(self.width)
        if self.cut(i) is not None:
            grads_cut = self.through_cut(i, c[live][None], self.shared)
            return self.finish(torch.cat([g[0].reshape(-1) for g in grads_cut]))
        terms = [c[j].to(self.objectives[i][j].dtype) * self.objectives[i][j] for j in live]
        grads = torch.autograd.grad(
            self.scale(torch.stack(terms).sum()),
            self.shared,
            allow_unused=True,
            retain_graph=self.retain,
        )
        flat = torch.cat(
            [or_zeros(g, p).reshape(-1) for g, p in zip(grads, self.shared, strict=True)]
        )
        return self.finish(flat)


class SampledWeighting(GradientBased):
    """Base of the methods that need several independent estimates of every task's gradient in
    one step (MoDo's and SDMGrad's double sampling): subclasses set ``samples`` and implement
    :meth:`direction`.

    The estimates come from ``samples`` disjoint parts of the batch (samples ``i, i + S, ...``
    form part i): with ``StepContext.part_forward`` (the Trainer, :meth:`Weighting.step` and
    the benchmark provide it) a forward pass per part, so each part's backward passes run over
    its own samples only; with ``StepContext.parts`` alone, the parts of the one forward pass,
    each backward pass over the whole batch. With the ``batched`` engine in one process, where
    ``StepContext.model`` splits its features, each part's forward pass is cut at the shared
    representation (:meth:`~attnmtl.models.base.MultiTaskModel.split_each_forward`): a part's
    K rows are then one backward pass through the task branches and one vmapped pass through
    the encoder alone, as the other gradient methods take theirs. A method asks for each part
    what it needs
    (:class:`PartGradients`): the K per-task rows where its weights need the whole matrix, only
    the cross-Gram matrix ``G_i G_jᵀ`` where that is all they need (SDMGrad; by layer from the
    recorded forward passes where it costs less, see :meth:`PartGradients.gram`), one
    weighted combination where only ``cᵀG_i`` enters (MoDo's ``G₂ᵀλ`` and ``G₃ᵀλ``, SDMGrad's
    update), which costs one backward pass instead of K rows. Task-specific parameters take
    the raw gradient of their whole-batch loss (the mean of the parts', as LibMTL averages the
    three). ``parameters`` mode, and the ``batched`` or ``loop`` engine (``loop``: a backward
    pass per row). A task without a labelled sample in a part has a zero estimate there. The
    gradient-conflict statistics are those of the mean of the rows taken, or of the first
    cross-Gram matrix, symmetrised, where no rows were.

    See :class:`GradientBased` for the arguments.
    """

    samples: ClassVar[int] = 3
    modes: ClassVar[tuple[Mode, ...]] = ("parameters",)
    # whether the method asks for cross-Gram matrices (PartGradients.gram), so the parts'
    # forward passes are worth recording
    records_parts: ClassVar[bool] = False

    def __init__(
        self,
        tasks: Sequence[str],
        mode: Mode = "parameters",
        engine: Engine = "batched",
        log_losses: bool = False,
    ) -> None:
        super().__init__(tasks, mode=mode, update_every=1, engine=engine, log_losses=log_losses)
        name = type(self).__name__
        if mode != "parameters":
            raise ValueError(f"mode={mode!r}; {name} runs in parameters mode only")
        if engine == "gramian":
            raise ValueError(
                f"engine={engine!r}; {name} needs its estimates' rows: use batched or loop"
            )

    def wants_split(self) -> bool:
        """The estimates are taken from the part losses, not at a cut."""
        return False

    @abstractmethod
    def direction(
        self, parts: PartGradients, losses: Tensor, index: list[int]
    ) -> tuple[Tensor, Tensor]:
        """The shared update ``d`` (P,) and the weights ``c`` (K,) reported, from the parts'
        gradients; when a Gram matrix is not finite (an AMP overflow, whose step GradScaler
        skips), return ``parts.combined(i, ones)`` and ones, leaving the state as it is."""

    def objective_of(
        self, part: Mapping[str, Tensor], order: Sequence[str], stacked: Tensor
    ) -> list[Tensor]:
        """A part's K objectives (its losses, or their logs); a task with no labelled sample
        in the part gets a zero with no gradient path."""
        out = []
        for k, task in enumerate(order):
            value = part.get(task)
            if value is None:
                out.append(stacked[k].detach() * 0)
            else:
                out.append(value.clamp_min(LOSS_FLOOR).log() if self.log_losses else value)
        return out

    def backward(self, losses: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """The parts' losses, :meth:`direction`, and its update."""
        order, index, stacked, objective = self.prepare(losses, ctx)
        if ctx.parts is None and ctx.part_forward is None:
            raise ValueError(
                f"{type(self).__name__} needs the losses of disjoint parts of the batch "
                "(StepContext.parts): train with the Trainer or weighting.step(..., batch=batch), "
                "or build the context with StepContext.from_model(..., batch=batch)"
            )
        task_params = [list(ctx.task_parameters.get(t, ())) for t in order]
        flat_task = [p for params in task_params for p in params]
        own = (
            torch.autograd.grad(
                ctx.scale(objective).sum(), flat_task, allow_unused=True, retain_graph=True
            )
            if flat_task
            else ()
        )
        shared = list(ctx.shared_parameters)
        records, splits = None, None
        if ctx.part_forward is not None:  # a graph per part: each backward over its own rows
            calls: list[Captured] = []
            model = ctx.model if self.engine == "batched" and ctx.job is None else None
            record = model is not None and self.records_parts
            cut = isinstance(model, MultiTaskModel) and model.splits_features
            forwards = [0]

            def counted(module: nn.Module, args: Any) -> None:
                forwards[0] += 1

            with contextlib.ExitStack() as stack:
                if record or cut:
                    assert model is not None
                    stack.callback(model.register_forward_pre_hook(counted).remove)
                if record:
                    assert model is not None
                    tag = lambda: forwards[0] - 1  # noqa: E731 (the pass now running)
                    stack.enter_context(recording_linear(model, shared, calls, tag))
                if cut:
                    assert isinstance(model, MultiTaskModel)
                    splits = stack.enter_context(model.split_each_forward())
                raw, retain = ctx.part_forward(self.samples), False
            if forwards[0] == len(raw):  # a forward pass per part, in order
                records = by_part(calls, len(raw)) if record else None
            else:  # records and cuts would be misread: neither, and uncut parts again if cut
                records, splits = None, None
                if cut:
                    raw = ctx.part_forward(self.samples)
        else:  # the parts of the one forward pass: each backward over the whole batch
            assert ctx.parts is not None
            raw, retain = ctx.parts(self.samples), True
        parts = PartGradients(
            self,
            [self.objective_of(part, order, stacked) for part in raw],
            [[k for k, t in enumerate(order) if t in part] for part in raw],
            shared,
            ctx.scale,
            ctx.scale(torch.ones((), dtype=stacked.dtype, device=stacked.device)),
            ctx.job,
            retain,
            records=records,
            splits=splits,
            order=order,
        )
        grads = TaskGradients([], shared, None, unflatten(list(own), task_params), task_params)
        d, c = self.direction(parts, stacked.detach(), index)
        if parts.taken:  # (monitoring only: in the rows' own precision, no float64 copy)
            mean = torch.stack(parts.taken).mean(0)
            self.last_gram, self.last_tasks = (mean @ mean.T).double(), tuple(order)
        elif parts.crossed:  # E[G_i G_jᵀ] = E[G] E[G]ᵀ: the expected gradients' Gram matrix
            cross = parts.crossed[0]
            self.last_gram, self.last_tasks = (cross + cross.T) / 2, tuple(order)
        c = c.to(stacked.dtype)
        self.coefficients[index] = c.detach().to(self.coefficients.dtype)
        for param, part in zip(shared, d.split([p.numel() for p in shared]), strict=True):
            accumulate(param, (part * parts.factor.to(part.dtype)).to(param.dtype).view_as(param))
        grads.apply_own(c, weighted=False)
        return self.report(order, c, stacked)


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """ValueError naming ``name`` unless ``value`` is finite and > 0 (or >= 0)."""
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if isinstance(value, bool) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r}; expected a finite number {bound}")
