"""Per-group aggregation: the method solved on each layer's Gram matrix, with its own state."""

import pytest
import torch

from attnmtl.core.tasks import Task
from attnmtl.models.registry import create_model
from attnmtl.weighting import create_weighting
from attnmtl.weighting.base import StepContext
from attnmtl.weighting.solvers import min_norm

TASKS = [Task("a", "regression"), Task("b", "regression"), Task("c", "regression")]
NAMES = [t.name for t in TASKS]


def model_and_losses(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model(
        "hard_sharing",
        tasks=TASKS,
        input_shape=(4,),
        layout="table",
        encoder="mlp",
        encoder_options={"hidden_dims": [5, 3]},
    ).double()
    x = torch.randn(16, 4, dtype=torch.float64)
    y = torch.randn(3, 16, dtype=torch.float64)
    out = model(x)
    losses = {t: ((out.preds[t].squeeze(-1) - y[k]) ** 2).mean() for k, t in enumerate(NAMES)}
    return model, out, losses


def test_shared_groups_are_the_layers():
    model, _, _ = model_and_losses()
    shared = model.shared_parameters()
    groups = model.shared_groups()
    assert sorted(i for g in groups for i in g) == list(range(len(shared)))
    assert [len(g) for g in groups] == [2, 2]  # two Linear layers: weight and bias each
    for g in groups:
        assert shared[g[0]].shape[0] == shared[g[1]].shape[0]  # a weight and its own bias


def test_mgda_per_layer_is_mgda_on_each_layers_gradients():
    model, out, losses = model_and_losses()
    shared = model.shared_parameters()
    rows = [torch.autograd.grad(losses[t], shared, retain_graph=True) for t in NAMES]
    weighting = create_weighting("per_group", NAMES, method="mgda")
    weighting.backward(losses, StepContext.from_model(model, out, 0, 0))
    for group in model.shared_groups():
        flat = torch.stack([torch.cat([rows[k][i].flatten() for i in group]) for k in range(3)])
        c = min_norm(flat @ flat.T)
        for i in group:
            expected = sum(c[k] * rows[k][i] for k in range(3))
            torch.testing.assert_close(shared[i].grad, expected)


def test_one_group_is_the_method_on_the_whole_vector():
    model, out, losses = model_and_losses()
    ctx = StepContext.from_model(model, out, 0, 0)
    ctx.groups = [list(range(len(ctx.shared_parameters)))]
    create_weighting("per_group", NAMES, method="upgrad").backward(losses, ctx)
    grouped = [p.grad.clone() for p in model.shared_parameters()]
    model2, out2, losses2 = model_and_losses()
    create_weighting("upgrad", NAMES).backward(losses2, StepContext.from_model(model2, out2, 0, 0))
    for got, want in zip(grouped, [p.grad for p in model2.shared_parameters()], strict=True):
        torch.testing.assert_close(got, want)


def test_each_group_keeps_its_own_gradvac_targets_and_they_resume():
    weighting = create_weighting("per_group", NAMES, method="gradvac", options={"beta": 0.5})
    for seed in range(2):
        model, out, losses = model_and_losses(seed)
        weighting.backward(losses, StepContext.from_model(model, out, seed, 0))
    assert len(weighting.inner) == 2
    targets = [m.targets for m in weighting.inner]
    assert not torch.equal(targets[0], targets[1])  # per layer, not one shared state
    restored = create_weighting("per_group", NAMES, method="gradvac", options={"beta": 0.5})
    restored.load_state_dict(weighting.state_dict())
    grads = []
    for w in (weighting, restored):
        model, out, losses = model_and_losses(5)
        w.backward(losses, StepContext.from_model(model, out, 2, 0))
        grads.append([p.grad for p in model.shared_parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


def test_groups_parameter_splits_weight_and_bias():
    model, out, losses = model_and_losses()
    weighting = create_weighting("per_group", NAMES, method="mgda", groups="parameter")
    weighting.backward(losses, StepContext.from_model(model, out, 0, 0))
    assert len(weighting.inner) == len(model.shared_parameters()) == 4


def test_layer_groups_need_the_models_layers():
    model, out, losses = model_and_losses()
    ctx = StepContext.from_model(model, out, 0, 0)
    ctx.groups = None
    with pytest.raises(ValueError, match=r"needs the model's layers in StepContext\.groups"):
        create_weighting("per_group", NAMES).backward(losses, ctx)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "gradnorm"}, "method='gradnorm'; expected one of"),
        ({"groups": "block"}, "groups='block'; expected one of: layer, parameter"),
        ({"mode": "features"}, "runs in parameters mode only"),
        ({"options": {"mode": "features"}}, "set engine and log_losses on per_group"),
        ({"method": "gradvac", "options": {"bet": 1}}, "'bet'"),
    ],
)
def test_bad_options_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_weighting("per_group", NAMES, **kwargs)
