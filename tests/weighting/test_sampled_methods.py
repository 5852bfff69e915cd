"""MoDo and SDMGrad: three independent estimates from disjoint parts of the batch, checked step
by step against torchjd's MoDoWeighting / SDMGradWeighting (oracles only), and part_losses."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torchjd.aggregation import MoDoWeighting, SDMGradWeighting

from attnmtl.bench.weighting import ReferenceMTL, Variant
from attnmtl.core.batch import Batch
from attnmtl.core.losses import part_losses, task_losses
from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.run.build import build_data, build_model
from attnmtl.run.config import parse_config
from attnmtl.weighting import create_weighting
from attnmtl.weighting.base import GradientStats, StepContext
from attnmtl.weighting.gradient import (
    Captured,
    by_part,
    cross_rule_pays,
    linear_cross_gram,
    rule_agrees,
)
from attnmtl.weighting.solvers import simplex_projection, simplex_projection_np

TASKS = ["a", "b", "c"]


class PerSample(nn.Module):
    """Per-sample losses ℓ_{n,k} = A_{n,k}·θ + 10: the gradient of a part's mean loss is the
    mean of its rows of A, exactly."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(dim, dtype=torch.float64))

    def context(self, A: torch.Tensor, step: int = 0):
        per_sample = A @ self.theta + 10.0  # (N, K)
        losses = {t: per_sample[:, k].mean() for k, t in enumerate(TASKS)}

        def parts(n):
            return [{t: per_sample[i::n, k].mean() for k, t in enumerate(TASKS)} for i in range(n)]

        ctx = StepContext([self.theta], None, step, 0, task_parameters={t: [] for t in TASKS})
        ctx.parts = parts
        return losses, ctx


def estimates(A: torch.Tensor) -> list[torch.Tensor]:
    """G_i (K, P) of the three parts (samples i, i+3, ...)."""
    return [A[i::3].mean(0) for i in range(3)]


def draws(steps: int, n: int = 12, dim: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, dim, dtype=torch.float64, generator=g) for _ in range(steps)]


def test_modo_agrees_with_torchjd_step_by_step():
    ours = create_weighting("modo", TASKS, gamma=0.05, rho=0.1)
    oracle = MoDoWeighting(gamma=0.05, rho=0.1)
    model = PerSample(5)
    for k, A in enumerate(draws(4)):
        model.theta.grad = None
        weights = ours.backward(*model.context(A, k))
        first, second, third = estimates(A)
        lam = oracle(first @ second.T)
        torch.testing.assert_close(torch.stack(list(weights.values())), lam)
        torch.testing.assert_close(model.theta.grad, lam @ third)


def test_sdmgrad_agrees_with_torchjd_step_by_step():
    ours = create_weighting("sdmgrad", TASKS, lamda=0.3, niter=20)
    oracle = SDMGradWeighting(lr=5.0, momentum=0.5, n_iter=20, lambda_=0.3)
    model = PerSample(5)
    for k, A in enumerate(draws(4, seed=1)):
        model.theta.grad = None
        weights = ours.backward(*model.context(A, k))
        zeta, xi1, xi2 = estimates(A)
        c = oracle(xi1 @ xi2.T)
        torch.testing.assert_close(torch.stack(list(weights.values())), c)
        torch.testing.assert_close(model.theta.grad, c @ zeta)


@pytest.mark.parametrize("name", ["modo", "sdmgrad"])
def test_without_the_parts_of_the_batch_it_says_how_to_get_them(name):
    model = PerSample(5)
    losses, ctx = model.context(draws(1)[0])
    ctx.parts = None
    with pytest.raises(ValueError, match=r"needs the losses of disjoint parts of the batch"):
        create_weighting(name, TASKS).backward(losses, ctx)


@pytest.mark.parametrize("name", ["modo", "sdmgrad"])
@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"mode": "features"}, "parameters mode only"),
        ({"engine": "gramian"}, "use batched or loop"),
    ],
)
def test_modes_and_engines_they_cannot_take(name, option, match):
    with pytest.raises(ValueError, match=match):
        create_weighting(name, TASKS, **option)


def test_part_losses_are_the_task_losses_of_each_part():
    tasks = {"m": Task("m", "multiclass", 3), "r": Task("r", "regression")}
    torch.manual_seed(0)
    preds = {"m": torch.randn(7, 3), "r": torch.randn(7, 1)}
    labels = {"m": torch.randint(0, 3, (7,)), "r": torch.randn(7)}
    mask = {
        "m": torch.tensor([1, 1, 0, 1, 1, 1, 1]).bool(),
        "r": torch.tensor([1, 0, 0, 1, 0, 0, 1]).bool(),
    }
    batch = Batch(torch.zeros(7, 2), labels, mask)
    parts = part_losses(MultiTaskOutput(preds, {}, None), batch, tasks, 3)
    assert [sorted(p) for p in parts] == [["m", "r"], ["m"], ["m"]]  # r: rows 0, 3, 6 only
    for i, part in enumerate(parts):
        rows = torch.arange(7)[i::3]
        sub = Batch(
            torch.zeros(len(rows), 2),
            {t: v[rows] for t, v in labels.items()},
            {t: v[rows] for t, v in mask.items()},
        )
        want = task_losses(
            MultiTaskOutput({t: v[rows] for t, v in preds.items()}, {}, None), sub, tasks
        )
        assert part.keys() == want.keys()
        for t in part:
            torch.testing.assert_close(part[t], want[t])
    with pytest.raises(ValueError, match="cannot be split into 8 parts"):
        part_losses(MultiTaskOutput(preds, {}, None), batch, tasks, 8)


@pytest.mark.parametrize("name", ["modo", "sdmgrad"])
def test_an_amp_overflow_step_leaves_the_weights_alone(name):
    """GradScaler skips a step whose gradients overflowed; the method must not choke on it."""
    model = PerSample(5)
    weighting = create_weighting(name, TASKS)
    losses, ctx = model.context(draws(1)[0])
    ctx.scale = lambda t: t * float("inf")
    before = [b.clone() for b in weighting.buffers()]
    weights = weighting.backward(losses, ctx)
    assert all(float(w) == 1.0 for w in weights.values())
    assert all(torch.equal(a, b) for a, b in zip(before, weighting.buffers(), strict=True))


@pytest.mark.parametrize("name", ["modo", "sdmgrad"])
def test_a_forward_pass_per_part_gives_the_same_update(name):
    """StepContext.part_forward (a graph per part, cheaper backward passes) and parts (slices of
    the one forward pass) are the same estimates."""
    A = draws(1, seed=3)[0]
    updates = []
    for separate in (False, True):
        model = PerSample(5)
        losses, ctx = model.context(A)
        if separate:
            ctx.part_forward = lambda n, theta=model.theta: [
                {t: (A[i::n, k] @ theta + 10.0).mean() for k, t in enumerate(TASKS)}
                for i in range(n)
            ]
            ctx.parts = None
        create_weighting(name, TASKS).backward(losses, ctx)
        updates.append(model.theta.grad.clone())
    torch.testing.assert_close(updates[1], updates[0])


def test_a_linear_layers_cross_gram_is_the_product_of_its_two_parts_gradients():
    """linear_cross_gram against its definition: ∇W_k = Σ_n δ_k[n]ᵀ x[n], ∇b_k = Σ_n δ_k[n]
    formed per part (sequence inputs: every position is a sample of the layer)."""
    g = torch.Generator().manual_seed(0)
    x_a, x_b = torch.randn(4, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    d_a, d_b = torch.randn(3, 4, 3, 6, generator=g), torch.randn(3, 2, 3, 6, generator=g)

    def rows(x, d, bias):
        w = torch.einsum("knso,nsi->koi", d, x).flatten(1)
        return torch.cat([w, d.sum((1, 2))], 1) if bias else w

    for bias in (False, True):
        want = (rows(x_a, d_a, bias) @ rows(x_b, d_b, bias).T).double()
        got = linear_cross_gram((x_a, x_b), (d_a, d_b), bias)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_cross_rule_is_used_only_where_it_costs_less():
    """N_a N_b (in + K out) + K² N_a out against K (N_a + N_b) in out."""
    assert cross_rule_pays(85, 85, 256, 256, 8)  # 18M against 89M multiply-adds
    assert not cross_rule_pays(4000, 4000, 16, 16, 2)  # 1.1G against 4M
    assert not cross_rule_pays(20_000, 20_000, 4096, 4096, 8)  # N_a × N_b too large to hold


class Tied(ReferenceMTL):
    """The reference MLP whose second layer's weight is also read outside its call."""

    def forward(self, inputs, lengths=None):
        z = self.encoder(inputs)
        z = z + torch.tanh(nn.functional.linear(z, self.encoder[2].weight))
        return MultiTaskOutput({t: self.heads[t](z) for t in self.tasks}, {}, z)


class SharedWeight(ReferenceMTL):
    """Two Linear modules holding one weight: neither is recorded, both taken by rows."""

    def __init__(self, tasks, hidden=16):
        super().__init__(tasks, hidden=hidden)
        self.extra = nn.Linear(hidden, hidden)
        self.extra.weight = self.encoder[2].weight

    def forward(self, inputs, lengths=None):
        z = self.encoder(inputs)
        z = z + torch.tanh(self.extra(z))
        return MultiTaskOutput({t: self.heads[t](z) for t in self.tasks}, {}, z)


def reference_pair(model_type, tasks, method="sdmgrad", seed=0):
    torch.manual_seed(seed)
    state = model_type(tasks, hidden=16).state_dict()
    out = []
    for engine in ("batched", "loop"):
        model = model_type(tasks, hidden=16).double()  # (float64: 20 solver steps amplify)
        model.load_state_dict(state)
        weighting = create_weighting(method, [t.name for t in tasks], engine=engine)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        out.append(Variant(engine, model, weighting, optimizer))
    return out


@pytest.mark.parametrize(
    ("method", "model_type", "records"),
    [
        ("sdmgrad", ReferenceMTL, True),
        ("sdmgrad", Tied, True),
        ("sdmgrad", SharedWeight, True),
        ("sdmgrad", ReferenceMTL, False),
        ("modo", ReferenceMTL, False),
    ],
)
def test_cut_and_recorded_parts_take_the_same_steps_as_one_pass_per_row(
    method, model_type, records
):
    """Through each part's cut of the shared representation (one backward pass through the
    heads, then the encoder's), and with SDMGrad's cross-Gram from recorded Linear calls,
    against one backward pass per task and part (loop engine): the same weights and
    parameters, step after step. A weight read outside its call fails the rule's first check
    and is taken by rows; a model that makes no cut (Tied) is taken from its losses."""
    tasks = [Task(f"t{i}", "multiclass", 4) for i in range(3)]
    fast, slow = reference_pair(model_type, tasks, method)
    fast.weighting.records_parts = records and method == "sdmgrad"
    cuts = []
    split_each_forward = fast.model.split_each_forward

    def spy():
        cuts.append(1)
        return split_each_forward()

    fast.model.split_each_forward = spy
    g = torch.Generator().manual_seed(1)
    names = [t.name for t in tasks]
    state = "weights" if method == "sdmgrad" else "lambdas"
    for step in range(4):
        x = torch.randn(30, 64, generator=g, dtype=torch.float64)
        labels = torch.randint(0, 4, (3, 30), generator=g)
        fast.step(x, labels, names, step)
        slow.step(x, labels, names, step)
        torch.testing.assert_close(getattr(fast.weighting, state), getattr(slow.weighting, state))
        for p, q in zip(fast.model.parameters(), slow.model.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert len(cuts) == 4
    layers = [id(m) for m in fast.model.encoder if isinstance(m, nn.Linear)]
    if not records:
        assert not fast.weighting.verified_linear and not fast.weighting.unsafe_linear
    elif model_type is Tied:
        assert fast.weighting.unsafe_linear == {layers[1]}
        assert fast.weighting.verified_linear == {layers[0]}
    elif model_type is SharedWeight:  # the second layer and `extra` hold one weight: rows
        assert fast.weighting.verified_linear == {layers[0]}
        assert not fast.weighting.unsafe_linear
    else:
        assert fast.weighting.verified_linear == set(layers)
        assert not fast.weighting.unsafe_linear


def test_sdmgrad_reports_the_symmetrised_cross_gram_of_its_two_estimates():
    """Its conflict log reads ½(G₁G₂ᵀ + G₂G₁ᵀ), whose expectation is the Gram matrix of the
    expected gradients, from the parameters before the step."""
    tasks = [Task(f"t{i}", "multiclass", 4) for i in range(3)]
    fast, _ = reference_pair(ReferenceMTL, tasks)
    names = [t.name for t in tasks]
    g = torch.Generator().manual_seed(2)
    x, labels = (
        torch.randn(30, 64, generator=g, dtype=torch.float64),
        torch.randint(0, 4, (3, 30), generator=g),
    )
    shared = fast.shared
    per_part = []
    for i in (1, 2):
        losses = fast.losses(x[i::3], labels[:, i::3], names)
        per_part.append(
            torch.stack(
                [
                    torch.cat(
                        [r.flatten() for r in torch.autograd.grad(v, shared, retain_graph=True)]
                    )
                    for v in losses.values()
                ]
            ).double()
        )
    cross = per_part[0] @ per_part[1].T
    fast.step(x, labels, names, 0)
    torch.testing.assert_close(
        fast.weighting.last_gram, (cross + cross.T) / 2, rtol=1e-4, atol=1e-7
    )


def test_the_host_simplex_projection_is_the_closest_point_of_the_simplex():
    """Against hand-computed projections, and the torch projection on random points."""
    cases = [([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]), ([2.0, 0.0, 0.0], [1.0, 0.0, 0.0])]
    cases += [([0.5, 0.5, -1.0], [0.5, 0.5, 0.0]), ([1.0, 1.0, 1.0], [1 / 3, 1 / 3, 1 / 3])]
    for v, want in cases:
        np.testing.assert_allclose(simplex_projection_np(np.array(v)), want, atol=1e-12)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        v = torch.randn(6, generator=g, dtype=torch.float64) * 3
        got = simplex_projection_np(v.numpy())
        np.testing.assert_allclose(got, simplex_projection(v).numpy(), atol=1e-12)


def test_an_estimated_gram_matrix_reads_as_clipped_cosines_and_no_negative_norm():
    """A cross-Gram estimate need not be positive semi-definite: |cos| > 1 is clipped, a
    negative squared norm reads 0 and its cosines NaN (JSON "nan"), never ±inf."""
    stats = GradientStats.from_gram(
        torch.tensor([[4.0, 5.0, -1.0], [5.0, 1.0, 0.5], [-1.0, 0.5, -2.0]]), ["a", "b", "c"]
    )
    torch.testing.assert_close(stats.norms, torch.tensor([2.0, 1.0, 0.0]))
    log = stats.as_log()["cos"]
    assert log["a|b"] == 1.0  # 5 / (2 · 1), clipped
    assert math.isnan(log["a|c"]) and math.isnan(log["b|c"])
    exact = GradientStats.from_gram(torch.tensor([[4.0, -1.0], [-1.0, 1.0]]), ["a", "b"])
    assert exact.as_log()["cos"]["a|b"] == pytest.approx(-0.5)


def attention_model(encoder: str):
    cfg = parse_config(
        {
            "name": f"parts-{encoder}",
            "data": {"name": "mnist1d-mt", "tasks": ["digit", "position", "scale"]},
            "model": {"name": "attention_mtl", "encoder": encoder},
            "weighting": {"name": "sdmgrad"},
        }
    )
    splits = build_data(cfg)
    torch.manual_seed(0)
    batch = splits.train.batch(torch.arange(48))
    batch.inputs = batch.inputs.double()
    return build_model(cfg, splits).double(), batch


@pytest.mark.parametrize("method", ["sdmgrad", "modo"])
@pytest.mark.parametrize("encoder", ["mlp", "rnn", "transformer", "cnn"])
def test_weighting_step_through_cut_parts_matches_one_pass_per_row(method, encoder):
    """weighting.step on attention_mtl (cut parts; SDMGrad's recorded Linear layers), with
    samples unlabelled for some tasks and a task absent from a whole part, against the loop
    engine: the same parameters after three steps (float64; dropout drawn alike)."""
    base, batch = attention_model(encoder)
    for k, task in enumerate(batch.label_mask):
        batch.label_mask[task][torch.arange(48) % 5 == k] = False
    batch.label_mask["scale"][1::3] = False  # no scale label in part 1
    final = []
    for engine in ("batched", "loop"):
        model = copy.deepcopy(base)
        weighting = create_weighting(method, list(model.tasks), engine=engine)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.manual_seed(5)
        for step in range(3):
            output = model(batch.inputs, batch.lengths)
            losses = task_losses(output, batch, model.tasks)
            weighting.step(losses, model, output, optimizer, step=step, batch=batch)
        final.append([p.detach().clone() for p in model.parameters()])
    for fast, slow in zip(*final, strict=True):
        torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-12)


def test_a_layers_check_agrees_refuses_or_cannot_tell():
    """rule_agrees: within 1e-4 of the largest entry (4 ε of a half-precision format, whose
    rows carry their own rounding); an overflowed (inf or NaN) or all-zero step cannot tell,
    so it neither trusts nor gives up the layer."""
    direct = torch.tensor([[4.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
    f32, bf16 = torch.float32, torch.bfloat16
    assert rule_agrees(direct + 3e-4, direct, f32) is True
    assert rule_agrees(direct + 5e-4, direct, f32) is False
    assert rule_agrees(direct + 1e-2, direct, bf16) is True  # 4 ε = 0.031 of 4
    assert rule_agrees(direct + 0.2, direct, bf16) is False
    assert rule_agrees(direct.flip(0), direct, bf16) is False
    inf = torch.full_like(direct, float("inf"))
    assert rule_agrees(inf, inf, f32) is None
    assert rule_agrees(direct * float("nan"), direct, f32) is None
    assert rule_agrees(torch.zeros_like(direct), torch.zeros_like(direct), f32) is None


def test_calls_are_given_to_parts_by_their_forward_pass_once_each():
    """by_part: a module called once in a part is that part's; one called twice in a part
    (or never) is left out of it, whatever its total count across parts."""
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    x = torch.zeros(1, 2)

    def call(module, forward):
        return Captured(module, x, module(x), forward=forward)

    calls = [call(first, 0), call(second, 0), call(second, 1), call(second, 1), call(first, 1)]
    calls += [call(first, 2), call(second, 2)]
    parts = by_part(calls, 3)
    assert [sorted(p) for p in parts] == [
        sorted([id(first), id(second)]),
        [id(first)],
        sorted([id(first), id(second)]),
    ]
    assert parts[2][id(second)] is calls[-1]


def test_a_part_forward_that_is_not_one_pass_per_part_is_taken_plainly():
    """A StepContext.part_forward that runs the model twice per part (each part's loss the
    mean of two passes): no cut and no record can be matched to parts, so the parts are run
    again uncut and taken by rows — the same update as the loop engine, and the encoder gets
    its gradient."""
    tasks = [Task(f"t{i}", "multiclass", 4) for i in range(3)]
    names = [t.name for t in tasks]
    fast, slow = reference_pair(ReferenceMTL, tasks)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(30, 64, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (3, 30), generator=g)
    grads = []
    for variant in (fast, slow):
        model = variant.model
        model.zero_grad()
        output = model(x)
        losses = {
            t: nn.functional.cross_entropy(output.preds[t], labels[k]) for k, t in enumerate(names)
        }
        ctx = StepContext.from_model(model, output, 0, 0)

        def twice(n, model=model):
            out = []
            for i in range(n):
                runs = [model(x[i::n]).preds for _ in range(2)]
                out.append(
                    {
                        t: sum(nn.functional.cross_entropy(r[t], labels[k][i::n]) for r in runs) / 2
                        for k, t in enumerate(names)
                    }
                )
            return out

        ctx.part_forward = twice
        variant.weighting.backward(losses, ctx)
        grads.append([p.grad.clone() for p in variant.shared])
    assert float(grads[0][0].abs().sum()) > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    assert not fast.weighting.verified_linear


def test_a_split_inside_a_split_gives_the_outer_one_back():
    """split_each_forward (the parts' cuts) inside the caller's own split_features block
    leaves that block's cut in place for its later forward passes."""
    tasks = [Task(f"t{i}", "multiclass", 4) for i in range(2)]
    model = ReferenceMTL(tasks, hidden=8)
    with model.split_features() as outer:
        with model.split_each_forward() as inner:
            model(torch.randn(3, 64))
        model(torch.randn(3, 64))
    assert len(inner) == 1 and inner[0].root is not None
    assert outer.root is not None and outer.root is not inner[0].root
    assert model._split is None
