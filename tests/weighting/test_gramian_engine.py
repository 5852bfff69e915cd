"""engine: gramian — the Gram matrix layer by layer, never the K×P matrix, then one weighted
backward pass: the same Gram and update as the batched engine."""

import contextlib

import pytest
import torch

import attnmtl.weighting.gradient as gradient
from attnmtl.core.tasks import Task
from attnmtl.models.registry import create_model
from attnmtl.weighting import create_weighting
from attnmtl.weighting.base import StepContext

TASKS = [Task("a", "multiclass", 3), Task("b", "binary"), Task("c", "regression")]
NAMES = [t.name for t in TASKS]


def one_step(model_name: str, method: str, engine: str, capture: bool = True, **options):
    torch.manual_seed(0)
    model = create_model(
        model_name,
        tasks=TASKS,
        input_shape=(5,),
        layout="table",
        encoder="mlp",
        encoder_options={"hidden_dims": [8, 6]},
    )
    x = torch.randn(12, 5)
    labels = {"a": torch.randint(0, 3, (12,)), "b": torch.rand(12).round(), "c": torch.randn(12)}
    weighting = create_weighting(method, NAMES, engine=engine, **options)
    splits = weighting.wants_split() and getattr(model, "splits_features", False)
    cut = model.split_features() if splits else contextlib.nullcontext()
    recording = weighting.capture(model) if capture else contextlib.nullcontext()
    with cut as split, recording:
        out = model(x)
    losses = {t.name: t.compute_loss(out.preds[t.name], labels[t.name]) for t in TASKS}
    weighting.backward(losses, StepContext.from_model(model, out, 0, 0, split=split))
    return {n: p.grad.clone() for n, p in model.named_parameters()}, weighting.last_gram


@pytest.mark.parametrize("capture", [True, False])  # Linear rule / vector-Jacobian products
@pytest.mark.parametrize("model_name", ["hard_sharing", "mmoe"])  # (mmoe: no split)
@pytest.mark.parametrize("method", ["mgda", "upgrad", "cagrad", "nash_mtl", "config"])
def test_same_gram_and_update_as_batched(model_name, method, capture):
    want, gram = one_step(model_name, method, "batched")
    got, lazy_gram = one_step(model_name, method, "gramian", capture)
    torch.testing.assert_close(lazy_gram, gram, rtol=1e-5, atol=1e-9)
    for name in want:
        scale = float(want[name].abs().max()) + 1e-12
        assert float((got[name] - want[name]).abs().max()) <= 1e-5 * scale, name


def test_one_layer_at_a_time_and_no_kxp_matrix(monkeypatch):
    calls = []
    real = gradient.vjp_rows

    def spy(output, inputs, cotangents, retain_graph):
        calls.append([tuple(p.shape) for p in inputs])
        return real(output, inputs, cotangents, retain_graph)

    monkeypatch.setattr(gradient, "vjp_rows", spy)
    made = []
    real_tg = gradient.TaskGradients

    def watch(*args, **kwargs):
        made.append(real_tg(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(gradient, "TaskGradients", watch)
    one_step("hard_sharing", "upgrad", "gramian", capture=False)
    # hard_sharing's shared part: two Linear layers (weight and bias each), one call per layer
    assert calls == [[(8, 5), (8,)], [(6, 8), (6,)]]
    assert made and all(g.blocks == [] and g.lazy is not None for g in made)


@pytest.mark.parametrize("name", ["moco", "graddrop", "per_group"])
def test_methods_that_need_the_rows_refuse_it(name):
    with pytest.raises(ValueError, match="engine='gramian'"):
        create_weighting(name, NAMES, engine="gramian", mode="parameters")


def test_captured_linear_layers_never_form_their_weight_gradients_whole(monkeypatch):
    """With the forward pass recorded, each Linear's Gram comes from its input and its output's
    cotangents, a chunk of output rows at a time: no (K, P_l) block, no vjp to parameters."""
    calls, chunks = [], []
    real_vjp, real_einsum = gradient.vjp_rows, torch.einsum

    def spy(output, inputs, cotangents, retain_graph):
        calls.append([isinstance(x, torch.nn.Parameter) for x in inputs])
        return real_vjp(output, inputs, cotangents, retain_graph)

    def einsum(equation, *operands):
        out = real_einsum(equation, *operands)
        chunks.append(out.shape)
        return out

    monkeypatch.setattr(gradient, "vjp_rows", spy)
    monkeypatch.setattr(gradient, "CHUNK_ENTRIES", 3 * 5 * 3)  # 3 tasks × 3 rows × 5 inputs
    monkeypatch.setattr(torch, "einsum", einsum)
    want, gram = one_step("hard_sharing", "upgrad", "batched")
    calls.clear()
    chunks.clear()
    got, lazy = one_step("hard_sharing", "upgrad", "gramian")
    torch.testing.assert_close(lazy, gram, rtol=1e-5, atol=1e-9)
    # per Linear, vjps to its output (not to its parameters), one task at a time
    assert calls == [[False]] * 6
    # layer 1 (8 rows of 5 inputs) in chunks of 3 rows; layer 2 (6 rows of 8): one row each
    assert [tuple(c) for c in chunks] == [(3, 3, 5), (3, 3, 5), (3, 2, 5)] + [(3, 1, 8)] * 6
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7)


def test_the_scale_benchmark_script_agrees_on_a_small_model():
    import runpy
    from pathlib import Path

    script = Path(__file__).parents[2] / "benchmarks" / "gramian_update.py"
    compare = runpy.run_path(str(script))["compare"]
    assert compare(20_000, 3, depth=3, batch=16, method="mgda") < 1e-5


class Tied(torch.nn.Module):
    """A Linear followed by an in-place ReLU, and a weight used again outside its layer."""

    splits_features = False

    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.first = torch.nn.Linear(5, 8)
        self.act = torch.nn.ReLU(inplace=True)
        self.second = torch.nn.Linear(8, 8)
        self.tied = tied
        self.heads = torch.nn.ModuleDict({t: torch.nn.Linear(8, 1) for t in NAMES})

    def shared_parameters(self):
        return [*self.first.parameters(), *self.second.parameters()]

    def forward(self, x):
        h = self.act(self.first(x))  # the Linear's output changed in place
        h = self.second(h)
        if self.tied:  # second's weight read again, outside its call
            h = h + torch.nn.functional.linear(h, self.second.weight)
        return {t: self.heads[t](h).squeeze(-1) for t in NAMES}


@pytest.mark.parametrize("tied", [False, True])
def test_in_place_outputs_and_tied_weights_fall_back_to_exact_products(tied):
    torch.manual_seed(0)
    x, y = torch.randn(10, 5), torch.randn(3, 10)
    results = []
    for engine in ("batched", "gramian"):
        torch.manual_seed(1)
        model = Tied(tied)
        weighting = create_weighting("mgda", NAMES, engine=engine)
        with weighting.capture(model):
            preds = model(x)
        losses = {t: ((preds[t] - y[k]) ** 2).mean() for k, t in enumerate(NAMES)}
        owned = {t: list(model.heads[t].parameters()) for t in NAMES}
        weighting.backward(
            losses, StepContext(model.shared_parameters(), None, 0, 0, task_parameters=owned)
        )
        results.append((weighting.last_gram, [p.grad.clone() for p in model.parameters()]))
        if engine == "gramian":
            # first: its output was changed in place (skipped); second: checked, and unsafe if tied
            assert (id(model.second) in weighting.unsafe_linear) == tied
            assert (id(model.second) in weighting.verified_linear) == (not tied)
    (gram, grads), (lazy, lazy_grads) = results
    torch.testing.assert_close(lazy, gram, rtol=1e-5, atol=1e-9)
    for a, b in zip(grads, lazy_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
