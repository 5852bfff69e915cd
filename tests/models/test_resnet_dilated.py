"""Dilated-ResNet models for per-pixel tasks: ResNet-18's parameter count, output stride 8,
outputs at the input's resolution, the hard-sharing split, cross-stitch reducing to independent
columns at α = I, MMoE's gates, and the errors for inputs they cannot take."""

import pytest
import torch
import torch.nn.functional as F

from attnmtl.core.tasks import Task
from attnmtl.models import create_model
from attnmtl.models.resnet_dilated import DilatedResNet

TASKS = [Task("seg", "segmentation", 5), Task("depth", "depth"), Task("normals", "normals")]
SHAPE = (3, 16, 24)
SMALL = {"widths": [4, 4, 8, 8, 8], "head_width": 4, "rates": [1, 2]}
NAMES = ["resnet_dilated", "resnet_cross_stitch", "resnet_mmoe"]


def build(name, tasks=TASKS, **options):
    torch.manual_seed(0)
    options = {**SMALL, **options}
    return create_model(name, tasks=tasks, input_shape=SHAPE, layout="image", **options)


def test_resnet18_widths_give_resnet18s_parameters_at_output_stride_8():
    """ResNet-18 without its classifier has 11,176,512 parameters (torchvision's 11,689,512
    minus the 512×1000 + 1000 of fc); dilation changes no count."""
    encoder = DilatedResNet(3, [64, 64, 128, 256, 512], blocks=2)
    assert sum(p.numel() for p in encoder.parameters()) == 11_176_512
    dilations = [
        m.dilation[0] for m in encoder.stages[3].modules() if isinstance(m, torch.nn.Conv2d)
    ]
    assert set(dilations) == {1, 4}  # the 3×3 convs dilate by 4, the 1×1 shortcut does not
    out = DilatedResNet(3, SMALL["widths"])(torch.rand(2, 3, 48, 64))
    assert out.shape == (2, 8, 6, 8)


@pytest.mark.parametrize("name", NAMES)
def test_every_task_at_full_resolution_and_parameters_partitioned(name):
    # (a 4-wide head's last ReLU can be 0 at a whole pixel, and its normal then has no direction)
    model = build(name, **{**SMALL, "head_width": 16}).eval()
    out = model(torch.rand(2, *SHAPE))
    assert out.preds["seg"].shape == (2, 5, 16, 24)
    assert out.preds["depth"].shape == (2, 1, 16, 24)
    norms = out.preds["normals"].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    shared = {id(p) for p in model.shared_parameters()}
    for task in TASKS:
        owned = {id(p) for p in model.task_parameters(task.name)}
        assert owned and not shared & owned
    everything = shared | {id(p) for t in TASKS for p in model.task_parameters(t.name)}
    assert {id(p) for p in model.parameters()} == everything
    assert shared  # the encoder, the units or the experts


def test_hard_sharing_splits_at_the_encoder_output():
    model = build("resnet_dilated")
    with model.split_features() as split:
        out = model(torch.rand(2, *SHAPE))
    assert split.root is not None and split.root.shape == (2, 8, 2, 3)
    sum(v.mean() for v in out.preds.values()).backward()
    assert all(split.leaves[t.name].grad is not None for t in TASKS)
    assert all(p.grad is None for p in model.encoder.parameters())  # stopped at the cut


def test_cross_stitch_at_identity_is_independent_columns():
    """With every α = I (init_same 1) each task's prediction is its own column and head run
    alone; mixing moves them."""
    model = build("resnet_cross_stitch", init_same=1.0).eval()
    x = torch.rand(2, *SHAPE)
    out = model(x)
    for task in TASKS:
        alone = model.heads[task.name](model.columns[task.name](x))
        alone = F.interpolate(alone, size=SHAPE[1:], mode="bilinear", align_corners=True)
        if task.kind == "normals":
            alone = F.normalize(alone, dim=1)
        torch.testing.assert_close(out.preds[task.name], alone)
    with torch.no_grad():
        model.units[2].alpha.fill_(1 / 3)
    assert not torch.allclose(model(x).preds["depth"], out.preds["depth"])


def test_mmoe_gates_mix_the_experts():
    model = build("resnet_mmoe", num_experts=3, gate_size=[4, 6]).eval()
    x = torch.rand(2, *SHAPE)
    out = model(x)
    for task in TASKS:
        gate = out.attention[task.name]
        assert gate.shape == (2, 3)
        torch.testing.assert_close(gate.sum(-1), torch.ones(2))
    assert out.features is not None and out.features.shape == (2, 3, 8, 2, 3)
    assert model.gated and model.gate_labels("seg") == ["expert 0", "expert 1", "expert 2"]
    # A gate that picks expert 1 outright: the task's head reads that expert alone.
    with torch.no_grad():
        model.gates["depth"].weight.zero_()
        model.gates["depth"].bias.copy_(torch.tensor([-60.0, 60.0, -60.0]))
    alone = model.heads["depth"](model.experts[1](x))
    alone = F.interpolate(alone, size=SHAPE[1:], mode="bilinear", align_corners=True)
    torch.testing.assert_close(model(x).preds["depth"], alone)


def test_inputs_they_cannot_take_are_named():
    with pytest.raises(ValueError, match=r"needs image sides divisible by 8; the images are 20×24"):
        create_model("resnet_dilated", tasks=TASKS, input_shape=(3, 20, 24))
    with pytest.raises(ValueError, match=r"tasks \['cls'\] are per-sample"):
        create_model("resnet_mmoe", tasks=[Task("cls", "multiclass", 3)], input_shape=SHAPE)
    with pytest.raises(ValueError, match=r"widths=\[4, 8\]; expected 5 widths"):
        create_model("resnet_dilated", tasks=TASKS, input_shape=SHAPE, widths=[4, 8])
    with pytest.raises(ValueError, match=r"blocks=\[1, 2\]; expected a count >= 1, or 4"):
        create_model("resnet_dilated", tasks=TASKS, input_shape=SHAPE, blocks=[1, 2])
    with pytest.raises(ValueError, match=r"rates=\[0\]; expected one or more dilation rates"):
        create_model("resnet_dilated", tasks=TASKS, input_shape=SHAPE, rates=[0])
    with pytest.raises(ValueError, match=r"stitches >= 2 tasks"):
        create_model("resnet_cross_stitch", tasks=TASKS[:1], input_shape=SHAPE)
    with pytest.raises(ValueError, match=r"gate_size=\[40, 6\]; expected \[h, w\] within"):
        create_model("resnet_mmoe", tasks=TASKS, input_shape=SHAPE, gate_size=[40, 6])
