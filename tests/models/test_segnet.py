"""SegNet models for per-pixel tasks: outputs at the input's resolution, shared and task-owned
parameters, MTAN's attention reducing to the shared network when every mask is open, the
features-mode split, and the errors for inputs they cannot take."""

import pytest
import torch
import torch.nn.functional as F

from attnmtl.core.tasks import Task
from attnmtl.models import create_model

TASKS = [Task("seg", "segmentation", 5), Task("depth", "depth"), Task("normals", "normals")]
SHAPE = (3, 16, 24)


@pytest.mark.parametrize("name", ["segnet", "segnet_mtan"])
def test_every_task_at_full_resolution_and_normals_unit(name):
    torch.manual_seed(0)
    model = create_model(name, tasks=TASKS, input_shape=SHAPE, layout="image", widths=[4, 8, 8])
    out = model(torch.rand(2, *SHAPE))
    assert out.preds["seg"].shape == (2, 5, 16, 24)
    assert out.preds["depth"].shape == (2, 1, 16, 24)
    norms = out.preds["normals"].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    shared = {id(p) for p in model.shared_parameters()}
    for task in TASKS:
        owned = model.task_parameters(task.name)
        assert owned and not shared & {id(p) for p in owned}
    assert {id(p) for p in model.parameters()} == shared | {
        id(p) for t in TASKS for p in model.task_parameters(t.name)
    }


def test_mtan_with_every_mask_open_is_the_shared_network():
    """MTAN gates the shared features by its masks: with every mask forced to 1, each task's
    head reads the shared decoder's output."""
    torch.manual_seed(0)
    model = create_model("segnet_mtan", tasks=TASKS, input_shape=SHAPE, widths=[4, 8, 8]).eval()
    for modules in (*model.encoder_att.values(), *model.decoder_att.values()):
        for block in modules:
            bn = block[4]  # the last BatchNorm before the sigmoid: output ≈ +50 → mask 1
            bn.weight.data.zero_()
            bn.bias.data.fill_(50.0)
    x = torch.rand(2, *SHAPE)
    out = model(x)
    _, _, indices, bottleneck = model.encoder(x)
    _, _, dec = model.decoder(bottleneck, indices)
    for task in TASKS:
        expected = model.heads[task.name](dec[-1])
        if task.kind == "normals":
            expected = F.normalize(expected, dim=1)
        torch.testing.assert_close(out.preds[task.name], expected)
        assert out.attention[task.name].shape == (2, 4, 16, 24)


def test_hard_sharing_splits_at_the_bottleneck():
    torch.manual_seed(0)
    model = create_model("segnet", tasks=TASKS, input_shape=SHAPE, widths=[4, 8, 8])
    with model.split_features() as split:
        out = model(torch.rand(2, *SHAPE))
    assert split.root is not None and split.root.shape == (2, 8, 2, 3)
    total = sum(v.mean() for v in out.preds.values())
    total.backward()
    assert all(split.leaves[t.name].grad is not None for t in TASKS)


def test_inputs_they_cannot_take_are_named():
    with pytest.raises(ValueError, match=r"needs image sides divisible by 8; the images are 20×24"):
        create_model("segnet", tasks=TASKS, input_shape=(3, 20, 24), widths=[4, 8, 8])
    with pytest.raises(ValueError, match=r"tasks \['cls'\] are per-sample"):
        create_model("segnet_mtan", tasks=[Task("cls", "multiclass", 3)], input_shape=SHAPE)
    with pytest.raises(ValueError, match=r"needs images \(C, H, W\)"):
        create_model("segnet", tasks=TASKS, input_shape=(10, 4), layout="sequence")
