"""OMoE, CGC, PLE, DSelect-k, AdaTT and AITM: shapes, gates, the forward pass by hand, which
parameters each task owns (a loss on one task never reaches another's), and a short fit."""

import pytest
import torch

from attnmtl.core.tasks import Task
from attnmtl.models.dselect_k import DSelectGate, smooth_step
from attnmtl.models.registry import create_model
from attnmtl.report.attention import collect_attention

from .checks import assert_partition, fit_loss_ratio

TASKS = [Task("b", "binary"), Task("m", "multiclass", 3), Task("r", "regression", 2)]
NAMES = [t.name for t in TASKS]
MODELS = {  # name → options; each gated model's gate width per task
    "omoe": ({"num_experts": 3}, 3),
    "cgc": ({"task_experts": 2, "shared_experts": 1}, 3),
    "ple": ({"task_experts": 1, "shared_experts": 2, "num_levels": 3}, 3),
    "dselect_k": ({"num_experts": 5, "k": 2}, 5),
    "adatt": ({"task_experts": 2, "shared_experts": 1, "num_levels": 2}, 7),
    "aitm": ({"tower_dim": 6}, 2),
    "ltb": ({"depth": 2, "width": 3, "dim": 8}, 3),
}
CASES = [  # encoder, layout, input shape, encoder options, lengths
    ("rnn", "sequence", (7, 3), {"hidden_dim": 6}, [7, 2, 5, 7, 1]),
    ("mlp", "table", (5,), {"hidden_dims": [6]}, None),
]


def build(name, encoder="rnn", layout="sequence", shape=(7, 3), options=None, **extra):
    kwargs, _ = MODELS[name]
    return create_model(
        name,
        tasks=TASKS,
        input_shape=shape,
        layout=layout,
        encoder=encoder,
        encoder_options=options or {"hidden_dim": 6},
        **{**kwargs, **extra},
    )


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("encoder", "layout", "shape", "options", "lengths"), CASES)
def test_shapes_and_gates(name, encoder, layout, shape, options, lengths):
    model = build(name, encoder, layout, shape, options)
    lengths = None if lengths is None else torch.tensor(lengths)
    out = model(torch.randn(5, *shape), lengths)
    width = MODELS[name][1]
    for task in TASKS:
        assert out.preds[task.name].shape == (5, task.out_dim)
    gated = NAMES[1:] if name == "aitm" else NAMES  # AITM's first task has no transfer
    assert set(out.attention) == set(gated) and model.gated
    for task in gated:
        gate = out.attention[task]
        assert gate.shape == (5, width) and bool((gate >= 0).all())
        torch.testing.assert_close(gate.sum(-1), torch.ones(5))
    assert_partition(model, NAMES)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_loss_on_one_task_never_reaches_another_tasks_own_parameters(name):
    model = build(name)
    x = torch.randn(4, 7, 3)
    for task in TASKS:
        model.zero_grad(set_to_none=True)
        out = model(x)
        labels = {
            "b": torch.rand(4).round(),
            "m": torch.tensor([0, 1, 2, 0]),
            "r": torch.randn(4, 2),
        }
        task.compute_loss(out.preds[task.name], labels[task.name]).backward()
        for other in NAMES:
            if other != task.name:
                assert all(p.grad is None for p in model.task_parameters(other)), (task, other)
        assert any(p.grad is not None for p in model.shared_parameters())


def test_omoe_every_task_reads_the_one_gated_mixture():
    model = build("omoe").eval()
    x = torch.randn(3, 7, 3)
    out = model(x)
    experts = torch.stack([e(x).pooled for e in model.experts], 1)
    gate = torch.softmax(model.gate(x.mean(1)), -1)
    mixed = (gate.unsqueeze(1) @ experts).squeeze(1)
    for name in NAMES:
        torch.testing.assert_close(out.attention[name], gate)
        torch.testing.assert_close(out.preds[name], model.towers[name](mixed))


def test_cgc_task_gate_mixes_its_own_then_the_shared_experts():
    model = build("cgc").eval()
    x = torch.randn(3, 7, 3)
    out = model(x)
    level = model.levels[0]
    shared = torch.stack([e(x).pooled for e in level["__shared__"]], 1)
    for name in NAMES:
        own = torch.stack([e(x).pooled for e in level[name]], 1)
        gate = torch.softmax(model.gates[0][name](x.mean(1)), -1)
        mixed = (gate.unsqueeze(1) @ torch.cat([own, shared], 1)).squeeze(1)
        torch.testing.assert_close(out.preds[name], model.towers[name](mixed))
    assert model.gate_labels("b") == ["b e0", "b e1", "shared e0"]


def test_ple_second_level_reads_the_first_levels_mixtures():
    model = build("ple", num_levels=2).eval()
    x = torch.randn(2, 7, 3)
    out = model(x)
    first, second = model.levels
    gates = model.gates
    outs = {o: torch.stack([e(x).pooled for e in m], 1) for o, m in first.items()}
    every = torch.cat([outs[t] for t in NAMES] + [outs["__shared__"]], 1)
    g_in = x.mean(1)
    reads = {
        t: (
            torch.softmax(gates[0][t](g_in), -1).unsqueeze(1)
            @ torch.cat([outs[t], outs["__shared__"]], 1)
        ).squeeze(1)
        for t in NAMES
    }
    reads["__shared__"] = (
        torch.softmax(gates[0]["__shared__"](g_in), -1).unsqueeze(1) @ every
    ).squeeze(1)
    outs2 = {o: torch.stack([e(reads[o]) for e in m], 1) for o, m in second.items()}
    for t in NAMES:
        gate = torch.softmax(gates[1][t](reads[t]), -1)
        mixed = (gate.unsqueeze(1) @ torch.cat([outs2[t], outs2["__shared__"]], 1)).squeeze(1)
        torch.testing.assert_close(out.preds[t], model.towers[t](mixed))
    assert "__shared__" not in gates[1]  # no shared gate at the last level


def test_adatt_fuses_every_task_and_adds_its_own_residual():
    model = build("adatt", num_levels=1).eval()
    with torch.no_grad():
        model.residuals[0]["m"].weight.copy_(torch.tensor([0.5, -2.0]))
    x = torch.randn(3, 7, 3)
    out = model(x)
    level = model.levels[0]
    outs = {o: torch.stack([e(x).pooled for e in m], 1) for o, m in level.items()}
    every = torch.cat([outs[t] for t in NAMES] + [outs["__shared__"]], 1)
    gate = torch.softmax(model.gates[0]["m"](x.mean(1)), -1)
    fused = (gate.unsqueeze(1) @ every).squeeze(1) + 0.5 * outs["m"][:, 0] - 2.0 * outs["m"][:, 1]
    torch.testing.assert_close(out.preds["m"], model.towers["m"](fused))
    assert model.gate_labels("m")[-1] == "shared e0" and len(model.gate_labels("m")) == 7


def test_aitm_later_tasks_attend_over_the_transfer_and_their_own_tower():
    model = build("aitm", order=["r", "b", "m"]).eval()
    x = torch.randn(3, 7, 3)
    out = model(x)
    h = model.encoder(x).pooled
    z = model.towers["r"](h)
    torch.testing.assert_close(out.preds["r"], model.heads["r"](z))
    for previous, task in (("r", "b"), ("b", "m")):
        p, q = model.transfers[previous](z), model.towers[task](h)
        ait = model.ait[task]
        u = torch.stack([p, q], 1)
        w = torch.softmax((ait.query(u) * ait.key(u)).sum(-1) / 6**0.5, -1)
        z = (w.unsqueeze(-1) * ait.value(u)).sum(1)
        torch.testing.assert_close(out.attention[task], w)
        torch.testing.assert_close(out.preds[task], model.heads[task](z))
    assert model.gate_labels("m") == ["from b", "own"]


def test_smooth_step_by_hand():
    t = torch.tensor([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0])
    # γ = 1: −2t³ + 1.5t + 0.5 inside (−½, ½)
    expected = torch.tensor([0.0, 0.0, 0.15625, 0.5, 0.84375, 1.0, 1.0])
    torch.testing.assert_close(smooth_step(t, 1.0), expected)


def test_dselect_gate_with_saturated_bits_selects_exactly_the_encoded_experts():
    gate = DSelectGate(in_dim=2, num_experts=8, k=2, gamma=1.0)
    with torch.no_grad():
        gate.selectors.weight.zero_()
        # selector 0 encodes expert 5 = 0b101, selector 1 expert 2 = 0b010 (bit 0 first)
        gate.selectors.bias.copy_(torch.tensor([3.0, -3.0, 3.0, -3.0, 3.0, -3.0]))
        gate.mixing.weight.zero_()
        gate.mixing.bias.copy_(torch.tensor([0.0, 1.0]))
    weights = gate(torch.randn(4, 2))
    alpha = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    expected = torch.zeros(8)
    expected[5], expected[2] = alpha[0], alpha[1]
    torch.testing.assert_close(weights, expected.expand(4, 8))


def test_dselect_gate_renormalises_when_experts_are_not_a_power_of_two():
    gate = DSelectGate(in_dim=3, num_experts=5, k=1, gamma=10.0)  # wide band: soft bits
    weights = gate(torch.randn(6, 3))
    assert weights.shape == (6, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(6))


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("omoe", {"num_experts": 0}, "num_experts=0"),
        ("cgc", {"task_experts": 0}, "task_experts=0"),
        ("ple", {"num_levels": 0}, "num_levels=0"),
        ("dselect_k", {"k": 6}, "k=6; expected at most num_experts=5"),
        ("dselect_k", {"gamma": 0.0}, "gamma=0.0"),
        ("adatt", {"shared_experts": -1}, "shared_experts=-1"),
        ("aitm", {"order": ["b", "m"]}, "order=.*expected each of the tasks"),
        ("aitm", {"tower_dim": 0}, "tower_dim=0"),
        ("ltb", {"tau": 0.0}, "tau=0.0"),
        ("ltb", {"depth": 0}, "depth=0"),
    ],
)
def test_bad_arguments_name_themselves(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(name, **kwargs)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_short_fit_lowers_the_loss(name):
    tasks = [Task("sign", "binary"), Task("level", "regression")]
    torch.manual_seed(0)
    x = torch.randn(32, 6, 2)
    labels = {"sign": (x[..., 0].mean(1) > 0).float(), "level": 3 * x[..., 1].mean(1)}
    kwargs, _ = MODELS[name]
    model = create_model(
        name,
        tasks=tasks,
        input_shape=(6, 2),
        encoder="cnn",
        encoder_options={"channels": (8,)},
        **kwargs,
    )
    assert fit_loss_ratio(model, tasks, x, labels) < 0.5


def test_the_report_names_the_items_of_each_gate():
    model = build("cgc")
    from attnmtl.core.batch import Batch

    labels = {t: torch.zeros(2) for t in NAMES}
    masks = {t: torch.zeros(2, dtype=torch.bool) for t in NAMES}
    batch = Batch(torch.randn(2, 7, 3), labels, masks, torch.tensor([7, 3]))
    examples = collect_attention(model, batch)
    assert examples.gate_labels["m"] == ["m e0", "m e1", "shared e0"]


def test_ltb_samples_its_parents_in_training_and_takes_the_argmax_tree_in_evaluation():
    model = create_model(
        "ltb",
        tasks=TASKS,
        input_shape=(7, 3),
        encoder_options={"hidden_dim": 6},
        depth=3,
        width=3,
        dim=8,
        hard=True,
    )
    with torch.no_grad():
        model.inner[0][1].logits.copy_(torch.tensor([5.0]))  # (one parent: the root)
        model.inner[1][2].logits.copy_(torch.tensor([0.0, 9.0, 0.0]))
        model.leaves["m"].logits.copy_(torch.tensor([0.0, 0.0, 7.0]))
    out = model(torch.randn(4, 7, 3))
    for task in NAMES:  # straight-through one-hot samples
        assert sorted(out.attention[task][0].tolist()) == [0.0, 0.0, 1.0]
    model.eval()
    tree = model.branching()
    assert tree["layer2"][2] == 1 and tree["m"] == [2]
    x = torch.randn(2, 7, 3)
    out = model(x)
    # evaluation follows the tree: m's leaf ← node 2 of layer 2 ← node 1 of layer 1 ← root
    root = model.stem(model.encoder(x).pooled)
    node = model.inner[0][tree["layer2"][2]].block(root)  # layer 1 nodes all read the root
    node = model.inner[1][2].block(node)
    leaf = model.leaves["m"].block(node)
    torch.testing.assert_close(out.preds["m"], model.heads["m"](leaf))
    torch.testing.assert_close(out.attention["m"], torch.tensor([[0.0, 0.0, 1.0]] * 2))
    assert model.gate_labels("m") == ["node 0", "node 1", "node 2"]
