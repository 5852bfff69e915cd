"""Hard parameter sharing: one encoder and pooling read by every head, heads alone per task."""

import pytest
import torch

from attnmtl.core.tasks import Task
from attnmtl.models.hard_sharing import HardSharing
from attnmtl.models.registry import create_model

from .checks import assert_partition, fit_loss_ratio, ids

TASKS = [
    Task("b", "binary"),
    Task("m", "multiclass", 3),
    Task("ml", "multilabel", 4),
    Task("r", "regression", 2),
]
CASES = [  # encoder, layout, input shape, encoder options
    ("rnn", "sequence", (7, 3), {"hidden_dim": 8, "bidirectional": True}),
    ("cnn", "image", (1, 6, 6), {"channels": (4, 4)}),
    ("transformer", "table", (5,), {"dim": 8, "num_heads": 2, "num_layers": 1}),
]


@pytest.mark.parametrize(("encoder", "layout", "shape", "options"), CASES)
@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_every_head_reads_the_shared_pooled_vector(encoder, layout, shape, options, pooling):
    model = create_model(
        "hard_sharing",
        tasks=TASKS,
        input_shape=shape,
        layout=layout,
        encoder=encoder,
        pooling=pooling,
        encoder_options=options,
    )
    out = model(torch.randn(5, *shape))
    assert out.features.shape == (5, model.encoder.out_dim)
    for task in TASKS:
        assert out.preds[task.name].shape == (5, task.out_dim)
        torch.testing.assert_close(out.preds[task.name], model.heads[task.name](out.features))
    if pooling == "attention":  # one tensor, the same for every task
        assert all(out.attention[t.name] is out.attention["b"] for t in TASKS)
    else:
        assert out.attention == {}


def test_shared_attention_pooling_ignores_padding():
    model = HardSharing(TASKS, (6, 2), "sequence", "rnn", "attention", {"hidden_dim": 4})
    out = model(torch.randn(3, 6, 2), torch.tensor([6, 2, 4]))
    weights = out.attention["m"]
    assert weights.shape == (3, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    assert torch.all(weights[1, 2:] == 0) and torch.all(weights[2, 4:] == 0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"pooling": "last"}, "pooling"),
        ({"layout": "graph"}, "layout"),
        ({"encoder": "resnet"}, "encoder"),
        ({"encoder_options": {"hidden_dim": 4, "pooling": "max"}}, "pooling"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    args = {"layout": "sequence", "encoder": "rnn", "encoder_options": {"hidden_dim": 4}, **kwargs}
    with pytest.raises(ValueError, match=name):
        HardSharing(TASKS, (6, 2), **args)


def test_the_encoder_is_shared_and_each_head_belongs_to_its_task():
    model = HardSharing(TASKS, (1, 6, 6), "image", "cnn", "attention", {"channels": (4,)})
    assert ids(model.shared_parameters()) == ids(model.encoder.parameters())
    for task in TASKS:
        assert ids(model.task_parameters(task.name)) == ids(model.heads[task.name].parameters())
    assert_partition(model, [t.name for t in TASKS])


def test_a_loss_on_one_task_leaves_the_other_heads_out_of_the_graph():
    model = HardSharing(TASKS, (6, 2), "sequence", "rnn", "attention", {"hidden_dim": 4})
    out = model(torch.randn(4, 6, 2))
    TASKS[1].compute_loss(out.preds["m"], torch.tensor([0, 1, 2, 1])).backward()
    # the other heads never enter the loss's graph, so autograd leaves their .grad unset
    for task in ("b", "ml", "r"):
        assert all(p.grad is None for p in model.task_parameters(task))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.shared_parameters())
    assert all(p.grad.abs().sum() > 0 for p in model.task_parameters("m"))


def test_a_short_fit_lowers_the_loss():
    tasks = [Task("sign", "binary"), Task("level", "regression")]
    x = torch.randn(32, 6, 2)
    labels = {"sign": (x[..., 0].mean(1) > 0).float(), "level": 3 * x[..., 1].mean(1)}
    model = HardSharing(tasks, (6, 2), "sequence", "rnn", "mean", {"hidden_dim": 8})
    assert fit_loss_ratio(model, tasks, x, labels) < 0.5
