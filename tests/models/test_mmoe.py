"""MMoE: shared experts, per-task softmax gates from the input, the gated mixture by hand."""

import pytest
import torch

from attnmtl.core.tasks import Task
from attnmtl.models.mmoe import MMoE
from attnmtl.models.registry import create_model

from .checks import assert_partition, fit_loss_ratio, ids

TASKS = [
    Task("b", "binary"),
    Task("m", "multiclass", 3),
    Task("ml", "multilabel", 4),
    Task("r", "regression", 2),
]
CASES = [  # encoder, layout, input shape, encoder options, lengths
    ("rnn", "sequence", (7, 3), {"hidden_dim": 6}, [7, 2, 5, 7, 1]),
    ("cnn", "image", (2, 6, 6), {"channels": (4, 6)}, None),
    ("transformer", "table", (5,), {"dim": 6, "num_heads": 2, "num_layers": 1}, None),
]


@pytest.mark.parametrize(("encoder", "layout", "shape", "options", "lengths"), CASES)
def test_shapes_gates_and_expert_stack(encoder, layout, shape, options, lengths):
    model = create_model(
        "mmoe",
        tasks=TASKS,
        input_shape=shape,
        layout=layout,
        encoder=encoder,
        num_experts=3,
        encoder_options=options,
    )
    lengths = None if lengths is None else torch.tensor(lengths)
    out = model(torch.randn(5, *shape), lengths)
    assert out.features.shape == (5, 3, 6)
    for task in TASKS:
        assert out.preds[task.name].shape == (5, task.out_dim)
        gate = out.attention[task.name]
        assert gate.shape == (5, 3) and torch.all(gate > 0)
        torch.testing.assert_close(gate.sum(-1), torch.ones(5))


def test_each_task_reads_its_gate_weighted_sum_of_the_experts():
    model = MMoE(TASKS, (4, 2), "sequence", "rnn", 3, {"hidden_dim": 5}).eval()
    x, lengths = torch.randn(3, 4, 2), torch.tensor([4, 2, 3])
    out = model(x, lengths)
    experts = [expert(x, lengths).pooled for expert in model.experts]  # 3 × (B, D)
    torch.testing.assert_close(out.features, torch.stack(experts, 1))
    real = torch.stack([x[0].mean(0), x[1, :2].mean(0), x[2, :3].mean(0)])  # (B, F)
    for task in TASKS:
        gate = model.gates[task.name]
        weights = torch.softmax(real @ gate.weight.T + gate.bias, -1)  # (B, E)
        torch.testing.assert_close(out.attention[task.name], weights)
        mixed = sum(weights[:, e : e + 1] * experts[e] for e in range(3))  # (B, D)
        torch.testing.assert_close(out.preds[task.name], model.towers[task.name](mixed))


def test_gate_inputs_by_hand():
    seq = MMoE(TASKS, (3, 2), "sequence", "rnn", 2, {"hidden_dim": 2}, gate_input="flatten")
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, T=3, F=2), length 2
    flat = seq.gate_features(x, torch.tensor([2]))
    torch.testing.assert_close(flat, torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0, 0.0]]))
    seq.gate_input = "mean"
    torch.testing.assert_close(seq.gate_features(x, torch.tensor([2])), torch.tensor([[2.0, 3.0]]))
    torch.testing.assert_close(seq.gate_features(x), torch.tensor([[104 / 3, 106 / 3]]))
    image = MMoE(TASKS, (2, 2, 2), "image", "cnn", 2, {"channels": (2,)})
    pixels = torch.arange(8.0).view(1, 2, 2, 2)
    torch.testing.assert_close(image.gate_features(pixels), torch.tensor([[1.5, 5.5]]))
    table = MMoE(TASKS, (3,), "table", "cnn", 2, {"channels": (2,)})
    row = torch.tensor([[1.0, -2.0, 5.0]])
    torch.testing.assert_close(table.gate_features(row), row)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_experts": 0}, "num_experts"),
        ({"gate_input": "max"}, "gate_input"),
        ({"pooling": "last"}, "pooling"),
        ({"layout": "graph"}, "layout"),
        ({"encoder": "resnet"}, "encoder"),
        ({"encoder_options": {"hidden_dim": 4, "pooling": "max"}}, "pooling"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    args = {"layout": "sequence", "encoder": "rnn", "encoder_options": {"hidden_dim": 4}, **kwargs}
    with pytest.raises(ValueError, match=name):
        MMoE(TASKS, (6, 2), **args)


def test_experts_are_shared_and_gates_and_towers_belong_to_their_task():
    model = MMoE(TASKS, (6, 2), "sequence", "rnn", 3, {"hidden_dim": 4}, pooling="attention")
    assert ids(model.shared_parameters()) == ids(model.experts.parameters())
    for task in TASKS:
        own = [*model.gates[task.name].parameters(), *model.towers[task.name].parameters()]
        assert ids(model.task_parameters(task.name)) == ids(own)
    assert_partition(model, [t.name for t in TASKS])


def test_a_loss_on_one_task_leaves_the_other_gates_and_towers_out_of_the_graph():
    model = MMoE(TASKS, (6, 2), "sequence", "rnn", 3, {"hidden_dim": 4})
    out = model(torch.randn(4, 6, 2))
    TASKS[3].compute_loss(out.preds["r"], torch.randn(4, 2)).backward()
    # the other gates and towers never enter r's graph, so autograd leaves their .grad unset
    for task in ("b", "m", "ml"):
        assert all(p.grad is None for p in model.task_parameters(task))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.shared_parameters())
    assert all(p.grad.abs().sum() > 0 for p in model.task_parameters("r"))


def test_a_short_fit_lowers_the_loss():
    tasks = [Task("sign", "binary"), Task("level", "regression")]
    x = torch.randn(32, 6, 2)
    labels = {"sign": (x[..., 0].mean(1) > 0).float(), "level": 3 * x[..., 1].mean(1)}
    model = MMoE(tasks, (6, 2), "sequence", "cnn", 2, {"channels": (8,)})
    assert fit_loss_ratio(model, tasks, x, labels) < 0.5
