"""MTAN: per-task masks in (0, 1) gating the shared maps, the paper's recurrence, ownership."""

import pytest
import torch

from attnmtl.core.tasks import Task
from attnmtl.models.mtan import MTAN
from attnmtl.models.registry import create_model

from .checks import assert_partition, fit_loss_ratio, ids

TASKS = [
    Task("b", "binary"),
    Task("m", "multiclass", 3),
    Task("ml", "multilabel", 4),
    Task("r", "regression", 2),
]
CASES = [  # layout, input shape, channels, shared maps' spatial sizes, final map's
    ("image", (1, 9, 9), (4, 6, 8), [(9, 9), (5, 5), (3, 3)], (2, 2)),
    ("sequence", (8, 3), (4, 6), [(8,), (4,)], (2,)),
    ("table", (5,), (4,), [(5,)], (3,)),
]


@pytest.mark.parametrize(("layout", "shape", "channels", "sizes", "last"), CASES)
def test_masks_gate_the_shared_maps(layout, shape, channels, sizes, last):
    model = create_model(
        "mtan",
        tasks=TASKS,
        input_shape=shape,
        layout=layout,
        encoder_options={"channels": channels},
    )
    x = torch.randn(5, *shape)
    trace = model.trace(x)
    assert [tuple(p.shape) for p in trace.shared] == [
        (5, c, *s) for c, s in zip(channels, sizes, strict=True)
    ]
    for task in TASKS:
        for mask, gated, p in zip(
            trace.masks[task.name], trace.attended[task.name], trace.shared, strict=True
        ):
            assert mask.shape == p.shape and torch.all((mask > 0) & (mask < 1))
            torch.testing.assert_close(gated, mask * p)  # â = a ⊙ p, element by element
        assert trace.outputs[task.name].shape == (5, channels[-1], *last)
    out = model(x)
    assert out.features is None
    for task in TASKS:
        assert out.preds[task.name].shape == (5, task.out_dim)
        weights = out.attention[task.name]
        assert weights.shape == (5, *last)
        torch.testing.assert_close(weights.flatten(1).sum(-1), torch.ones(5))


def test_each_mask_reads_the_shared_map_and_the_previous_attended_output():
    model = MTAN(TASKS[:2], (1, 8, 8), "image", encoder_options={"channels": (3, 5)}).eval()
    trace = model.trace(torch.randn(2, 1, 8, 8))
    blocks = model.cnn.blocks
    for task in ("b", "m"):
        first, second = model.attention[task]
        # block 1: a = h(g(u)); block 2: a = h(g([u; f(â_1)])), f = 3×3 conv-BN-ReLU + pooling
        torch.testing.assert_close(trace.masks[task][0], first.net(trace.shared[0]))
        carried = blocks[0].pool(model.projections[0](trace.attended[task][0]))  # (B, 5, 4, 4)
        x = torch.cat([trace.shared[1], carried], 1)  # (B, 10, 4, 4)
        torch.testing.assert_close(trace.masks[task][1], second.net(x))
        final = blocks[1].pool(model.projections[1](trace.attended[task][1]))
        torch.testing.assert_close(trace.outputs[task], final)
    assert not torch.allclose(trace.masks["b"][1], trace.masks["m"][1])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"encoder": "rnn"}, "encoder"),
        ({"layout": "graph"}, "layout"),
        ({"encoder_options": {"attention": "spatial"}}, "attention"),
        ({"encoder_options": {"pooling": "max"}}, "pooling"),
        ({"pooling_options": {"heads": 2}}, "heads"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MTAN(TASKS, (6, 2), **{"layout": "sequence", **kwargs})


def test_lengths_are_refused():
    model = MTAN(TASKS, (6, 2), "sequence", encoder_options={"channels": (4,)})
    with pytest.raises(ValueError, match="lengths"):
        model(torch.randn(2, 6, 2), torch.tensor([6, 3]))


@pytest.mark.parametrize("shared_projection", [True, False])
def test_shared_and_task_parameters_partition_the_model(shared_projection):
    model = MTAN(
        TASKS,
        (6, 2),
        "sequence",
        encoder_options={"channels": (4, 4)},
        shared_projection=shared_projection,
    )
    shared = [*model.encoder.parameters()]
    if shared_projection:
        shared += [*model.projections.parameters()]
    assert ids(model.shared_parameters()) == ids(shared)
    for task in TASKS:
        own = [model.attention[task.name], model.pools[task.name], model.heads[task.name]]
        if not shared_projection:
            own.append(model.projections[task.name])
        assert ids(model.task_parameters(task.name)) == ids(p for m in own for p in m.parameters())
    assert_partition(model, [t.name for t in TASKS])


@pytest.mark.parametrize("shared_projection", [True, False])
def test_a_loss_on_one_task_leaves_the_other_tasks_out_of_the_graph(shared_projection):
    model = MTAN(
        TASKS,
        (1, 6, 6),
        "image",
        encoder_options={"channels": (4, 4)},
        shared_projection=shared_projection,
    )
    out = model(torch.randn(4, 1, 6, 6))
    TASKS[2].compute_loss(out.preds["ml"], torch.ones(4, 4)).backward()
    # other tasks' masks, projections, poolings and heads never enter ml's graph: .grad unset
    for task in ("b", "m", "r"):
        assert all(p.grad is None for p in model.task_parameters(task))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.shared_parameters())
    assert all(p.grad.abs().sum() > 0 for p in model.task_parameters("ml"))


def test_a_short_fit_lowers_the_loss():
    tasks = [Task("sign", "binary"), Task("level", "regression")]
    x = torch.randn(32, 6, 2)
    labels = {"sign": (x[..., 0].mean(1) > 0).float(), "level": 3 * x[..., 1].mean(1)}
    model = MTAN(tasks, (6, 2), "sequence", encoder_options={"channels": (8,)})
    assert fit_loss_ratio(model, tasks, x, labels) < 0.5
