"""Cross-stitch networks: the unit's maths and initialisation, columns, ownership, gradients."""

import pytest
import torch

from attnmtl.core.tasks import Task
from attnmtl.models.cross_stitch import CrossStitch, CrossStitchUnit
from attnmtl.models.registry import create_model

from .checks import assert_partition, fit_loss_ratio, ids

TASKS = [
    Task("b", "binary"),
    Task("m", "multiclass", 3),
    Task("ml", "multilabel", 4),
    Task("r", "regression", 2),
]
CASES = [  # encoder, layout, input shape, encoder options, lengths
    ("cnn", "image", (1, 6, 6), {"channels": (4, 4)}, None),
    ("cnn", "sequence", (7, 3), {"channels": (4,)}, None),
    (
        "rnn",
        "sequence",
        (7, 3),
        {"hidden_dim": 4, "num_layers": 2, "bidirectional": True},
        [7, 2, 5, 7, 1],
    ),
    ("transformer", "table", (5,), {"dim": 8, "num_heads": 2, "num_layers": 2}, None),
]


def test_unit_initialisation_is_a_convex_combination():
    torch.testing.assert_close(
        CrossStitchUnit(2).alpha.data, torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    )
    alpha = CrossStitchUnit(3, init_same=0.7).alpha.data
    torch.testing.assert_close(
        alpha, torch.tensor([[0.7, 0.15, 0.15], [0.15, 0.7, 0.15], [0.15, 0.15, 0.7]])
    )


def test_unit_mixes_hand_made_activations():
    unit = CrossStitchUnit(2)
    x = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])  # (K=2, B=1, C=2): x_A, x_B
    # x̃_A = 0.9 x_A + 0.1 x_B, x̃_B = 0.1 x_A + 0.9 x_B
    torch.testing.assert_close(unit(x), torch.tensor([[[1.2, 2.2]], [[2.8, 3.8]]]))
    with torch.no_grad():
        unit.alpha.copy_(torch.tensor([[0.5, 0.5], [-1.0, 2.0]]))
    maps = torch.stack([torch.ones(1, 2, 3, 3), torch.full((1, 2, 3, 3), 4.0)])  # (K, B, C, H, W)
    out = unit(maps)
    torch.testing.assert_close(out[0], torch.full((1, 2, 3, 3), 2.5))
    torch.testing.assert_close(out[1], torch.full((1, 2, 3, 3), 7.0))


@pytest.mark.parametrize(("encoder", "layout", "shape", "options", "lengths"), CASES)
def test_output_shapes_and_pooling_weights(encoder, layout, shape, options, lengths):
    model = create_model(
        "cross_stitch",
        tasks=TASKS,
        input_shape=shape,
        layout=layout,
        encoder=encoder,
        encoder_options=options,
    )
    lengths = None if lengths is None else torch.tensor(lengths)
    out = model(torch.randn(5, *shape), lengths)
    layers = len(options["channels"]) if encoder == "cnn" else options["num_layers"]
    assert len(model.stitches) == layers
    assert out.features is None
    for task in TASKS:
        assert out.preds[task.name].shape == (5, task.out_dim)
        weights = out.attention[task.name].flatten(1)
        torch.testing.assert_close(weights.sum(-1), torch.ones(5))
        if lengths is not None:
            assert torch.all(weights[1, 2:] == 0) and torch.all(weights[4, 1:] == 0)


@pytest.mark.parametrize("init_same", [0.9, 1.0])
def test_columns_are_coupled_unless_the_units_are_the_identity(init_same):
    model = CrossStitch(
        TASKS[:2], (1, 6, 6), "image", "cnn", {"channels": (4, 4)}, init_same=init_same
    ).eval()
    x = torch.randn(3, 1, 6, 6)
    before = model(x).preds
    with torch.no_grad():
        for p in model.columns["m"].parameters():
            p.add_(torch.randn_like(p))
    after = model(x).preds
    assert not torch.allclose(before["m"], after["m"])
    assert torch.equal(before["b"], after["b"]) == (init_same == 1.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"encoder": "resnet"}, "encoder"),
        ({"layout": "graph"}, "layout"),
        ({"pooling": "last"}, "pooling"),
        ({"init_same": 1.5}, "init_same"),
        ({"encoder_options": {"hidden_dim": 4, "pooling": "max"}}, "pooling"),
        ({"encoder_options": {"hidden_dim": 4, "num_layers": 0}}, "num_layers"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    args = {"layout": "sequence", "encoder": "rnn", "encoder_options": {"hidden_dim": 4}, **kwargs}
    with pytest.raises(ValueError, match=name):
        CrossStitch(TASKS, (6, 2), **args)


def test_one_task_and_lengths_for_a_cnn_are_refused():
    with pytest.raises(ValueError, match=">= 2 tasks"):
        CrossStitch(TASKS[:1], (6, 2), encoder="rnn", encoder_options={"hidden_dim": 4})
    model = CrossStitch(TASKS, (6, 2), encoder="cnn", encoder_options={"channels": (4,)})
    with pytest.raises(ValueError, match="lengths"):
        model(torch.randn(2, 6, 2), torch.tensor([6, 3]))


@pytest.mark.parametrize("encoder", ["cnn", "rnn", "transformer"])
def test_only_the_units_are_shared(encoder):
    options = {
        "cnn": {"channels": (4, 4)},
        "rnn": {"hidden_dim": 4, "num_layers": 2},
        "transformer": {"dim": 8, "num_heads": 2, "num_layers": 1},
    }[encoder]
    model = CrossStitch(TASKS, (6, 2), "sequence", encoder, options)
    assert ids(model.shared_parameters()) == {id(unit.alpha) for unit in model.stitches}
    for task in TASKS:
        expected = [model.columns[task.name], model.pools[task.name], model.heads[task.name]]
        assert ids(model.task_parameters(task.name)) == ids(
            p for m in expected for p in m.parameters()
        )
    assert_partition(model, [t.name for t in TASKS])


@pytest.mark.parametrize("init_same", [0.9, 1.0])
def test_gradient_of_one_tasks_loss_on_the_other_tasks_parameters(init_same):
    model = CrossStitch(
        TASKS[:2],
        (6, 2),
        "sequence",
        "rnn",
        {"hidden_dim": 4, "num_layers": 2},
        init_same=init_same,
    )
    out = model(torch.randn(4, 6, 2))
    TASKS[0].compute_loss(out.preds["b"], torch.tensor([0.0, 1.0, 1.0, 0.0])).backward()
    # m's pooling and head are not in b's graph: autograd leaves their .grad unset
    assert all(p.grad is None for m in (model.pools["m"], model.heads["m"]) for p in m.parameters())
    column = list(model.columns["m"].parameters())
    if init_same == 1.0:  # α_bm = 0: m's column is in the graph, multiplied by exactly zero
        assert all(p.grad is not None and torch.all(p.grad == 0) for p in column)
    else:  # α_bm = 0.1: b's loss reaches m's column through the units
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in column)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.task_parameters("b"))
    assert all(u.alpha.grad is not None for u in model.stitches)


def test_a_short_fit_lowers_the_loss():
    tasks = [Task("sign", "binary"), Task("level", "regression")]
    x = torch.randn(32, 6, 2)
    labels = {"sign": (x[..., 0].mean(1) > 0).float(), "level": 3 * x[..., 1].mean(1)}
    model = CrossStitch(tasks, (6, 2), "sequence", "cnn", {"channels": (8,)}, pooling="mean")
    assert fit_loss_ratio(model, tasks, x, labels) < 0.5
