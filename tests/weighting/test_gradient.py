"""The per-task gradient machinery shared by every gradient-based strategy.

Checked against the definition: the Gram matrix handed to a strategy is GGᵀ of the per-task
gradients computed one task at a time, and the update written to the model is cᵀG, in both
modes, with and without the representation cut, batched and looped.
"""

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from attnmtl.core.tasks import Task
from attnmtl.models import create_model
from attnmtl.weighting import StepContext
from attnmtl.weighting.gradient import Engine, GradientWeighting, Mode

TASKS = [Task("a", "multiclass", 3), Task("b", "binary"), Task("c", "regression")]


class Fixed(GradientWeighting):
    """Returns preset coefficients and records the Gram matrix it was given."""

    def __init__(
        self,
        tasks: Sequence[str],
        coefficients: Sequence[float],
        weighted: bool = False,
        mode: Mode = "parameters",
        update_every: int = 1,
        engine: Engine = "batched",
    ) -> None:
        super().__init__(tasks, mode=mode, update_every=update_every, engine=engine)
        self.preset = torch.tensor(coefficients, dtype=torch.float64)
        self.task_gradients = "weighted" if weighted else "raw"
        self.grams: list[Tensor] = []

    def combine(self, gram: Tensor, losses: Tensor, index: list[int]) -> Tensor:
        self.grams.append(gram)
        return self.preset[index]


def make_model(name: str = "hard_sharing", encoder: str = "mlp") -> torch.nn.Module:
    torch.manual_seed(0)
    options = {"hidden_dims": [16, 12]} if encoder == "mlp" else {"hidden_dim": 8}
    model = create_model(
        name,
        tasks=TASKS,
        input_shape=(6, 4) if encoder != "mlp" else (5,),
        layout="sequence" if encoder != "mlp" else "table",
        encoder=encoder,
        encoder_options=options,
    )
    model.test_shape = (7, 5) if encoder == "mlp" else (7, 6, 4)
    return model


def batch(model: torch.nn.Module) -> tuple[Tensor, dict[str, Tensor]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(model.test_shape, generator=g)
    labels = {
        "a": torch.randint(0, 3, (7,), generator=g),
        "b": torch.randint(0, 2, (7,), generator=g).float(),
        "c": torch.randn(7, generator=g),
    }
    return x, labels


def losses_of(model, x, labels, tasks=("a", "b", "c")) -> dict[str, Tensor]:
    out = model(x)
    return {t: model.tasks[t].compute_loss(out.preds[t], labels[t]) for t in tasks}


def step(model, weighting, tasks=("a", "b", "c"), split=True, step=0, scale=None):
    """One backward pass the way the trainer runs it; returns grads of every parameter."""
    model.zero_grad(set_to_none=True)
    x, labels = batch(model)
    use_split = split and weighting.wants_split() and model.splits_features
    if use_split:
        with model.split_features() as cut:
            losses = losses_of(model, x, labels, tasks)
    else:
        cut = None
        losses = losses_of(model, x, labels, tasks)
    ctx = StepContext(
        model.shared_parameters(),
        None if cut is None else cut.root,
        step,
        0,
        scale or (lambda t: t),
        {t: model.task_parameters(t) for t in model.tasks},
        cut,
    )
    weights = weighting.backward(losses, ctx)
    return {n: p.grad for n, p in model.named_parameters()}, weights


def reference(model, coefficients, tasks=("a", "b", "c"), weighted=False):
    """Per-task gradients one task at a time; the update cᵀG on shared, raw/c-scaled on heads."""
    x, labels = batch(model)
    shared = {id(p) for p in model.shared_parameters()}
    per_task = {}
    for t in tasks:
        model.zero_grad(set_to_none=True)
        losses_of(model, x, labels, (t,))[t].backward()
        per_task[t] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    grads = {}
    for n, p in model.named_parameters():
        total = None
        for k, t in enumerate(tasks):
            if n not in per_task[t]:
                continue
            scale = coefficients[k] if (id(p) in shared or weighted) else 1.0
            term = per_task[t][n] * scale
            total = term if total is None else total + term
        grads[n] = total
    shared_names = [n for n, p in model.named_parameters() if id(p) in shared]
    flat = torch.stack(
        [torch.cat([per_task[t][n].flatten() for n in shared_names]) for t in tasks]
    ).double()
    return grads, flat @ flat.T


def assert_grads_equal(got, want):
    assert got.keys() == want.keys()
    for name in want:
        if want[name] is None:
            assert got[name] is None or torch.count_nonzero(got[name]) == 0, name
        else:
            assert got[name] is not None, name
            torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("model_name", ["hard_sharing", "attention_mtl"])
@pytest.mark.parametrize("engine", ["batched", "loop", "gramian"])
@pytest.mark.parametrize("weighted", [False, True])
def test_parameters_mode_gram_and_update_match_one_task_at_a_time(model_name, engine, weighted):
    model = make_model(model_name)
    c = [0.5, 2.0, -0.25]
    weighting = Fixed(list(model.tasks), c, weighted=weighted, engine=engine)
    got, weights = step(model, weighting)
    want, gram = reference(model, c, weighted=weighted)
    assert_grads_equal(got, want)
    torch.testing.assert_close(weighting.grams[0], gram, rtol=1e-5, atol=1e-8)
    assert [float(w) for w in weights.values()] == c


@pytest.mark.parametrize("model_name", ["hard_sharing", "attention_mtl"])
def test_features_mode_gram_is_taken_at_the_representation(model_name):
    model = make_model(model_name)
    x, labels = batch(model)
    feats = {}
    for t in "abc":
        out = model(x)
        z = out.features
        (g,) = torch.autograd.grad(model.tasks[t].compute_loss(out.preds[t], labels[t]), z)
        feats[t] = g.flatten().double()
    flat = torch.stack([feats[t] for t in "abc"])
    c = [1.0, 0.5, 2.0]
    weighting = Fixed(list(model.tasks), c, mode="features")
    got, _ = step(model, weighting)
    torch.testing.assert_close(weighting.grams[0], flat @ flat.T, rtol=1e-5, atol=1e-9)
    # the encoder receives the backward pass of cᵀG_Z: the same as differentiating Σ c_k L_k
    model.zero_grad(set_to_none=True)
    losses = losses_of(model, x, labels)
    sum(ck * losses[t] for ck, t in zip(c, "abc", strict=True)).backward()
    for p in model.shared_parameters():
        name = next(n for n, q in model.named_parameters() if q is p)
        torch.testing.assert_close(got[name], p.grad, rtol=1e-5, atol=1e-6)
        assert torch.count_nonzero(got[name]) > 0


@pytest.mark.parametrize("engine", ["batched", "loop"])
def test_features_mode_from_the_losses_matches_the_cut(engine):
    """Without the cut (the naive path), the same Gram and the same update."""
    model = make_model("attention_mtl")
    c = [1.0, 0.5, 2.0]
    cut = Fixed(list(model.tasks), c, mode="features")
    want, _ = step(model, cut)
    plain = Fixed(list(model.tasks), c, mode="features", engine=engine)
    model.zero_grad(set_to_none=True)
    x, labels = batch(model)
    out = model(x)
    losses = {t: model.tasks[t].compute_loss(out.preds[t], labels[t]) for t in "abc"}
    ctx = StepContext(
        model.shared_parameters(),
        out.features,
        0,
        0,
        task_parameters={t: model.task_parameters(t) for t in "abc"},
    )
    plain.backward(losses, ctx)
    torch.testing.assert_close(plain.grams[0], cut.grams[0], rtol=1e-5, atol=1e-9)
    assert_grads_equal({n: p.grad for n, p in model.named_parameters()}, want)


def test_features_mode_without_a_cut_is_a_clear_error():
    model = make_model("cross_stitch", encoder="rnn")
    weighting = Fixed(list(model.tasks), [1.0, 1.0, 1.0], mode="features")
    with pytest.raises(ValueError, match="features gradient mode needs the model's shared"):
        step(model, weighting)


def test_a_model_without_a_cut_still_gets_exact_per_task_gradients():
    model = make_model("cross_stitch", encoder="rnn")
    assert not model.splits_features
    c = [1.0, 0.0, 3.0]
    weighting = Fixed(list(model.tasks), c)
    got, _ = step(model, weighting)
    want, gram = reference(model, c)
    assert_grads_equal(got, want)
    torch.testing.assert_close(weighting.grams[0], gram, rtol=1e-5, atol=1e-8)


def test_rnn_encoder_parameters_mode_matches_reference():
    model = make_model("attention_mtl", encoder="rnn")
    c = [1.0, 2.0, 0.5]
    weighting = Fixed(list(model.tasks), c)
    got, _ = step(model, weighting)
    want, _ = reference(model, c)
    assert_grads_equal(got, want)


def test_vmap_failure_falls_back_to_a_loop_with_a_warning(monkeypatch):
    import attnmtl.weighting.gradient as gradient

    model = make_model()
    real = torch.autograd.grad

    def no_batching(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented for aten::something")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    monkeypatch.setattr(gradient, "_warned_fallback", set())
    c = [1.0, 2.0, 0.5]
    with pytest.warns(RuntimeWarning, match="one backward pass per task"):
        got, _ = step(model, Fixed(list(model.tasks), c))
    monkeypatch.undo()
    want, _ = reference(model, c)
    assert_grads_equal(got, want)


def test_absent_task_takes_no_part_and_keeps_its_coefficient():
    model = make_model()
    weighting = Fixed(list(model.tasks), [4.0, 5.0, 6.0])
    weighting.coefficients[1] = 7.0
    got, weights = step(model, weighting, tasks=("a", "c"))
    assert list(weights) == ["a", "c"]
    assert weighting.grams[0].shape == (2, 2)
    assert float(weighting.coefficients[1]) == 7.0
    assert all(p.grad is None for p in model.task_parameters("b"))
    want, _ = reference(model, [4.0, 6.0], tasks=("a", "c"))
    assert_grads_equal(got, want)


@pytest.mark.parametrize("split", [True, False])
def test_update_every_reuses_the_last_coefficients_without_solving(split):
    model = make_model()
    weighting = Fixed(list(model.tasks), [0.5, 2.0, 1.5], update_every=3)
    step(model, weighting, split=split, step=0)
    weighting.preset = torch.tensor([9.0, 9.0, 9.0], dtype=torch.float64)
    got, weights = step(model, weighting, split=split, step=1)
    assert len(weighting.grams) == 1  # step 1 reused step 0's coefficients
    assert [float(w) for w in weights.values()] == [0.5, 2.0, 1.5]
    want, _ = reference(model, [0.5, 2.0, 1.5])
    assert_grads_equal(got, want)
    step(model, weighting, split=split, step=3)
    assert len(weighting.grams) == 2


def test_amp_scale_is_removed_from_the_gram_and_kept_in_the_gradients():
    model = make_model()
    plain = Fixed(list(model.tasks), [1.0, 1.0, 1.0])
    plain_grads, _ = step(model, plain)
    scaled = Fixed(list(model.tasks), [1.0, 1.0, 1.0])
    scaled_grads, _ = step(model, scaled, scale=lambda t: t * 1024.0)
    torch.testing.assert_close(scaled.grams[0], plain.grams[0])
    for name, grad in plain_grads.items():
        torch.testing.assert_close(scaled_grads[name], grad * 1024.0)


def test_a_non_finite_gram_skips_the_solver():
    model = make_model()
    weighting = Fixed(list(model.tasks), [2.0, 2.0, 2.0])
    _, weights = step(model, weighting, scale=lambda t: t * float("inf"))
    assert weighting.grams == []
    assert [float(w) for w in weights.values()] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "representation"}, r"mode='representation'; expected one of"),
        ({"engine": "vmap"}, r"engine='vmap'; expected one of"),
        ({"update_every": 0}, r"update_every=0; expected an integer >= 1"),
        ({"update_every": 1.5}, r"update_every=1.5"),
    ],
)
def test_base_options_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Fixed(["a", "b"], [1.0, 1.0], **kwargs)
