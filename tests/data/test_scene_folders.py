"""The MTAN / LibMTL NYUv2 and Cityscapes ``.npy`` folders and their standard augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnmtl.data.dense_augment import crop_size, random_flip, random_scale_crop, scale_crop
from attnmtl.data.scene_folders import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_SHAPES,
    CITYSCAPES_SIZE,
    NYUV2_CLASSES,
    NYUV2_SHAPES,
    NYUV2_SIZE,
    read_scene_folder,
)

H, W = 12, 16


def write_split(
    root: Path,
    split: str,
    n: int,
    *,
    kind: str = "nyuv2",
    size: tuple[int, int] = (H, W),
    label_folder: str | None = None,
    seed: int = 0,
) -> dict[str, list[np.ndarray]]:
    """A fake preprocessed split, channel-last as on disk; returns what was written."""
    rng = np.random.default_rng(seed)
    h, w = size
    classes = NYUV2_CLASSES if kind == "nyuv2" else CITYSCAPES_CLASSES
    label_folder = label_folder or ("label" if kind == "nyuv2" else "label_7")
    folders = ["image", label_folder, "depth"] + (["normal"] if kind == "nyuv2" else [])
    written: dict[str, list[np.ndarray]] = {name: [] for name in folders}
    for name in folders:
        (root / split / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = rng.random((h, w, 3), dtype=np.float32)
        image[0, 0, 0] = i  # the sample's index, to check the order
        labels = rng.integers(-1, classes, size=(h, w))
        if kind == "nyuv2":
            label = labels.astype(np.float32)  # float with -1, as MTAN's NYUv2 loader reads it
        else:
            label = np.where(labels < 0, 255, labels).astype(np.int64)  # 255 = ignore
        depth = rng.random((h, w, 1), dtype=np.float32) + 0.5
        depth[rng.random((h, w)) < 0.2] = 0.0
        arrays = {"image": image, label_folder: label, "depth": depth}
        if kind == "nyuv2":
            normal = rng.normal(size=(h, w, 3))
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            normal[rng.random((h, w)) < 0.2] = 0.0
            arrays["normal"] = normal  # float64 on disk: read as float32
        for name, array in arrays.items():
            np.save(root / split / name / f"{i}.npy", array)
            written[name].append(array)
    return written


def chw(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.moveaxis(a, -1, 0) for a in arrays]).astype(np.float32))


# ---------------------------------------------------------------------------- reading


def test_constants_state_the_canonical_layout():
    assert (NYUV2_CLASSES, CITYSCAPES_CLASSES) == (13, 7)
    assert (NYUV2_SIZE, CITYSCAPES_SIZE) == ((288, 384), (128, 256))
    assert NYUV2_SHAPES == {
        "image": (288, 384, 3),
        "label": (288, 384),
        "depth": (288, 384, 1),
        "normal": (288, 384, 3),
    }
    assert CITYSCAPES_SHAPES == {
        "image": (128, 256, 3),
        "label_7": (128, 256),
        "depth": (128, 256, 1),
    }


def test_nyuv2_round_trips_channel_first(tmp_path):
    train = write_split(tmp_path, "train", 5)
    val = write_split(tmp_path, "val", 3, seed=1)
    data = read_scene_folder(tmp_path, "train", "nyuv2")
    assert set(data) == {"image", "segmentation", "depth", "normals"}
    assert data["image"].shape == (5, 3, H, W) and data["image"].dtype == torch.float32
    assert data["segmentation"].shape == (5, H, W) and data["segmentation"].dtype == torch.int64
    assert data["depth"].shape == (5, 1, H, W) and data["depth"].dtype == torch.float32
    assert data["normals"].shape == (5, 3, H, W) and data["normals"].dtype == torch.float32
    assert torch.equal(data["image"], chw(train["image"]))
    assert torch.equal(data["depth"], chw(train["depth"]))
    assert torch.equal(data["normals"], chw(train["normal"]))
    labels = torch.from_numpy(np.stack(train["label"])).long()
    assert torch.equal(data["segmentation"], labels)
    assert (data["segmentation"] == -1).any() and (data["depth"] == 0).any()
    assert read_scene_folder(str(tmp_path), "val", "nyuv2")["image"].shape == (3, 3, H, W)
    assert torch.equal(read_scene_folder(tmp_path, "val", "nyuv2")["image"], chw(val["image"]))


def test_cityscapes_reads_label_7_maps_255_and_has_no_normals(tmp_path):
    written = write_split(tmp_path, "train", 4, kind="cityscapes")
    data = read_scene_folder(tmp_path, "train", "cityscapes")
    assert set(data) == {"image", "segmentation", "depth"}
    stored = torch.from_numpy(np.stack(written["label_7"]))
    assert (stored == 255).any()
    assert torch.equal(data["segmentation"], torch.where(stored == 255, -1, stored))
    assert torch.equal(data["depth"], chw(written["depth"]))


def test_cityscapes_accepts_libmtl_label_folder(tmp_path):
    written = write_split(tmp_path, "val", 2, kind="cityscapes", label_folder="label")
    data = read_scene_folder(tmp_path, "val", "cityscapes")
    stored = torch.from_numpy(np.stack(written["label"]))
    assert torch.equal(data["segmentation"], torch.where(stored == 255, -1, stored))


def test_files_are_read_in_numeric_order_and_limit_takes_the_first(tmp_path):
    write_split(tmp_path, "train", 12)
    data = read_scene_folder(tmp_path, "train", "nyuv2")
    assert data["image"][:, 0, 0, 0].tolist() == list(range(12))  # 0, 1, 2, ..., 10, 11
    few = read_scene_folder(tmp_path, "train", "nyuv2", limit=3)
    assert few["image"][:, 0, 0, 0].tolist() == [0, 1, 2]
    assert torch.equal(few["normals"], data["normals"][:3])
    assert read_scene_folder(tmp_path, "train", "nyuv2", limit=0)["image"].shape == (0, 3, H, W)


def test_any_label_outside_the_classes_becomes_minus_one(tmp_path):
    write_split(tmp_path, "train", 1)
    values = [0, 12, -1, 13, 255, -7, np.nan, np.inf, 5]
    label = np.zeros((H, W), dtype=np.float64)
    label.flat[: len(values)] = values
    np.save(tmp_path / "train" / "label" / "0.npy", label)
    got = read_scene_folder(tmp_path, "train", "nyuv2")["segmentation"][0].flatten()
    assert got[: len(values)].tolist() == [0, 12, -1, -1, -1, -1, -1, -1, 5]
    unsigned = np.zeros((H, W), dtype=np.uint8)
    unsigned.flat[:4] = [0, 12, 13, 255]  # -1 cannot be stored: 255 is the usual ignore value
    np.save(tmp_path / "train" / "label" / "0.npy", unsigned)
    got = read_scene_folder(tmp_path, "train", "nyuv2")["segmentation"][0].flatten()
    assert got[:4].tolist() == [0, 12, -1, -1]


def test_canonical_size_is_read_too(tmp_path):
    write_split(tmp_path, "val", 1, kind="cityscapes", size=CITYSCAPES_SIZE)
    data = read_scene_folder(tmp_path, "val", "cityscapes")
    assert data["image"].shape == (1, 3, *CITYSCAPES_SIZE)


# ---------------------------------------------------------------------------- errors


def one_error(*args, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        read_scene_folder(*args, **kwargs)
    assert info.value.__cause__ is None
    return str(info.value)


def test_missing_root(tmp_path):
    message = one_error(tmp_path / "nowhere", "train", "nyuv2")
    assert "NYUv2 root" in message and "nowhere does not exist" in message
    assert "ROOT/{train,val}/{image,label,depth,normal}/0.npy" in message
    assert "\n" not in message


def test_missing_split_folder(tmp_path):
    write_split(tmp_path, "train", 1)
    message = one_error(tmp_path, "val", "nyuv2")
    assert f"split folder {tmp_path / 'val'} does not exist" in message
    assert "folders in the root: train" in message
    assert "\n" not in message


def test_missing_sub_folders_are_named_one_line_each(tmp_path):
    write_split(tmp_path, "train", 2)
    (tmp_path / "train" / "normal").rename(tmp_path / "train" / "normals")
    for f in (tmp_path / "train" / "depth").iterdir():
        f.unlink()
    (tmp_path / "train" / "depth").rmdir()
    lines = one_error(tmp_path, "train", "nyuv2").splitlines()
    assert len(lines) == 2
    assert f"sub-folder {tmp_path / 'train'}/depth/ is missing" in lines[0]
    assert f"sub-folder {tmp_path / 'train'}/normal/ is missing" in lines[1]
    assert all("expected ROOT/{train,val}/{image,label,depth,normal}" in line for line in lines)


def test_missing_cityscapes_label_folder_names_both_names(tmp_path):
    write_split(tmp_path, "train", 1, kind="cityscapes", label_folder="label_19")
    message = one_error(tmp_path, "train", "cityscapes")
    assert "/label_7/ (or label/) is missing" in message
    assert "{image,label_7|label,depth}" in message


def test_folder_without_npy_files(tmp_path):
    write_split(tmp_path, "train", 2)
    for f in (tmp_path / "train" / "label").iterdir():
        f.rename(f.with_suffix(".txt"))
    message = one_error(tmp_path, "train", "nyuv2")
    assert message == f"{tmp_path / 'train' / 'label'}/ has no .npy files"


def test_sub_folders_with_different_counts(tmp_path):
    write_split(tmp_path, "train", 5)
    (tmp_path / "train" / "depth" / "4.npy").unlink()
    (tmp_path / "train" / "normal" / "4.npy").unlink()
    (tmp_path / "train" / "normal" / "3.npy").unlink()
    message = one_error(tmp_path, "train", "nyuv2")
    assert message == (
        f"sub-folders of {tmp_path / 'train'} hold different numbers of samples: "
        "image/ 5, label/ 5, depth/ 4, normal/ 3"
    )


def test_gap_in_sample_indices(tmp_path):
    write_split(tmp_path, "train", 4)
    for name in ("image", "label", "depth", "normal"):
        (tmp_path / "train" / name / "1.npy").unlink()
    lines = one_error(tmp_path, "train", "nyuv2").splitlines()
    assert len(lines) == 4
    assert lines[0] == (
        f"{tmp_path / 'train' / 'image'}/: sample files are not 0.npy ... 2.npy: "
        "missing 1 (up to 3.npy)"
    )


def test_wrong_shape_names_file_shape_and_expected(tmp_path):
    write_split(tmp_path, "train", 3)
    np.save(tmp_path / "train" / "depth" / "2.npy", np.ones((H, W), dtype=np.float32))
    message = one_error(tmp_path, "train", "nyuv2")
    assert message.startswith(
        f"{tmp_path / 'train' / 'depth' / '2.npy'}: shape ({H}, {W}), expected ({H}, {W}, 1)"
    )
    assert "NYUv2 depth is H×W×1; canonical H×W 288×384" in message
    assert "\n" not in message


def test_non_numeric_file_name(tmp_path):
    write_split(tmp_path, "train", 2)
    np.save(tmp_path / "train" / "image" / "extra.npy", np.zeros((H, W, 3), dtype=np.float32))
    np.save(tmp_path / "train" / "image" / "01.npy", np.zeros((H, W, 3), dtype=np.float32))
    (tmp_path / "train" / "image" / "README").write_text("ignored")
    lines = sorted(one_error(tmp_path, "train", "nyuv2").splitlines())
    assert lines == sorted(
        f"{tmp_path / 'train' / 'image' / name}: file name is not a sample index "
        "(expected 0.npy, 1.npy, ..., decimal without leading zeros)"
        for name in ("extra.npy", "01.npy")
    )


def test_integer_image_is_refused(tmp_path):
    write_split(tmp_path, "train", 1)
    np.save(tmp_path / "train" / "image" / "0.npy", np.zeros((H, W, 3), dtype=np.uint8))
    message = one_error(tmp_path, "train", "nyuv2")
    assert (
        message == f"{tmp_path / 'train' / 'image' / '0.npy'}: dtype uint8, expected floating point"
    )


def test_unreadable_file(tmp_path):
    write_split(tmp_path, "train", 1)
    (tmp_path / "train" / "depth" / "0.npy").write_bytes(b"not numpy")
    message = one_error(tmp_path, "train", "nyuv2")
    assert message.startswith(
        f"{tmp_path / 'train' / 'depth' / '0.npy'}: not a readable .npy array"
    )
    assert "\n" not in message


def test_fractional_labels(tmp_path):
    write_split(tmp_path, "train", 1)
    label = np.zeros((H, W), dtype=np.float32)
    label[0, :3] = 2.5
    np.save(tmp_path / "train" / "label" / "0.npy", label)
    message = one_error(tmp_path, "train", "nyuv2")
    assert message == (
        f"{tmp_path / 'train' / 'label' / '0.npy'}: 3 labels are not whole numbers (first 2.5); "
        "labels are class indices"
    )


def test_all_file_problems_are_reported_in_one_pass(tmp_path):
    write_split(tmp_path, "train", 4)
    np.save(tmp_path / "train" / "image" / "1.npy", np.zeros((H, W + 1, 3), dtype=np.float32))
    np.save(tmp_path / "train" / "normal" / "3.npy", np.zeros((H, W, 2)))
    np.save(tmp_path / "train" / "depth" / "0.npy", np.zeros((H, W, 1), dtype=np.int32))
    lines = one_error(tmp_path, "train", "nyuv2").splitlines()
    assert len(lines) == 3
    assert "image/1.npy: shape (12, 17, 3), expected (12, 16, 3)" in lines[0]
    assert "depth/0.npy: dtype int32, expected floating point" in lines[1]
    assert "normal/3.npy: shape (12, 16, 2), expected (12, 16, 3)" in lines[2]


def test_bad_arguments(tmp_path):
    write_split(tmp_path, "train", 1)
    assert "kind must be one of nyuv2, cityscapes" in one_error(tmp_path, "train", "voc")
    assert "limit must be a non-negative int" in one_error(tmp_path, "train", "nyuv2", limit=-1)
    assert "split must be a folder name" in one_error(tmp_path, "../train", "nyuv2")


# ---------------------------------------------------------------------------- augmentation


def batch(n: int = 6, h: int = H, w: int = W, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, h, w, generator=g)
    seg = torch.randint(-1, NYUV2_CLASSES, (n, h, w), generator=g)
    depth = torch.rand(n, 1, h, w, generator=g) + 0.5
    depth[torch.rand(n, 1, h, w, generator=g) < 0.2] = 0.0
    normals = F.normalize(torch.randn(n, 3, h, w, generator=g), dim=1)
    normals[(torch.rand(n, 1, h, w, generator=g) < 0.2).expand(-1, 3, -1, -1)] = 0.0
    return image, seg, depth, normals


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_scale_one_and_no_flip_leave_the_batch_unchanged():
    inputs = batch()
    cropped = random_scale_crop(*inputs, generator=gen(), scales=(1.0,))
    flipped = random_flip(*cropped, generator=gen(), p=0.0)
    for before, after in zip(inputs, flipped, strict=True):
        assert torch.equal(before, after)


def test_flip_twice_is_identity_and_negates_normal_x_once():
    image, seg, depth, normals = batch()
    once = random_flip(image, seg, depth, normals, generator=gen(), p=1.0)
    assert torch.equal(once[0], image.flip(-1))
    assert torch.equal(once[1], seg.flip(-1))
    assert torch.equal(once[2], depth.flip(-1))
    assert torch.equal(once[3][:, 0], -normals.flip(-1)[:, 0])
    assert torch.equal(once[3][:, 1:], normals.flip(-1)[:, 1:])
    twice = random_flip(*once, generator=gen(), p=1.0)
    for before, after in zip((image, seg, depth, normals), twice, strict=True):
        assert torch.equal(before, after)


def test_flip_decides_per_sample_and_consistently_across_tasks():
    image, seg, depth, _ = batch(n=16)
    out = random_flip(image, seg, depth, None, generator=gen(3))
    assert out[3] is None
    flipped = [bool(torch.equal(out[0][k], image[k].flip(-1))) for k in range(16)]
    assert 0 < sum(flipped) < 16
    for k, f in enumerate(flipped):
        assert torch.equal(out[0][k], image[k].flip(-1) if f else image[k])
        assert torch.equal(out[1][k], seg[k].flip(-1) if f else seg[k])
        assert torch.equal(out[2][k], depth[k].flip(-1) if f else depth[k])


def test_depth_is_divided_by_the_chosen_scale():
    image, seg, _, normals = batch(n=24)
    depth = torch.full((24, 1, H, W), 3.0)
    scales = (1.0, 1.2, 1.5)
    out = random_scale_crop(image, seg, depth, normals, generator=gen(1), scales=scales)[2]
    seen = set()
    for k in range(24):
        values = out[k].unique()
        assert values.numel() == 1
        s = [s for s in scales if torch.isclose(values, torch.tensor(3.0 / s)).item()]
        assert len(s) == 1
        seen.add(s[0])
    assert seen == set(scales)
    inverse = random_scale_crop(image, seg, depth, generator=gen(1), inverse_depth=True)[2]
    assert torch.allclose(inverse * out, torch.full_like(out, 9.0))


def test_nearest_keeps_invalid_pixels_and_label_values():
    image, seg, depth, normals = batch(n=8, h=24, w=32)
    tops, lefts, scales = [], [], []
    g = gen(5)
    for k in range(8):
        s = (1.2, 1.5)[k % 2]
        h, w = crop_size(24, 32, s)
        scales.append(s)
        tops.append(int(torch.randint(24 - h + 1, (1,), generator=g)))
        lefts.append(int(torch.randint(32 - w + 1, (1,), generator=g)))
    out = scale_crop(image, seg, depth, normals, scale=scales, top=tops, left=lefts)
    for k in range(8):
        h, w = crop_size(24, 32, scales[k])
        rows = tops[k] + (torch.arange(24) * (h / 24)).floor().long()  # torch's "nearest"
        cols = lefts[k] + (torch.arange(32) * (w / 32)).floor().long()
        src = seg[k][rows[:, None], cols[None, :]]
        assert torch.equal(out[1][k], src)
        assert torch.equal(out[2][k] == 0, depth[k][0][rows[:, None], cols[None, :]][None] == 0)
        assert torch.equal(out[3][k], normals[k][:, rows[:, None], cols[None, :]])
    assert set(out[1].unique().tolist()) <= set(seg.unique().tolist())
    assert out[1].dtype == seg.dtype
    randomised = random_scale_crop(image, seg, depth, normals, generator=gen(2))
    assert set(randomised[1].unique().tolist()) <= set(seg.unique().tolist())
    lengths = randomised[3].norm(dim=1)
    assert torch.all((lengths == 0) | torch.isclose(lengths, torch.ones(())))


def test_hand_made_4x4_crop_at_scale_2():
    # image channel 0 holds 4 * row + col; the 2×2 crop at (1, 2) is [[6, 7], [10, 11]].
    image = torch.arange(16.0).reshape(1, 1, 4, 4).expand(1, 3, 4, 4).clone()
    seg = torch.tensor([[[0, 1, 2, 3], [4, 5, 6, -1], [7, 8, 9, 10], [11, 12, 0, 1]]])
    depth = torch.tensor([[[[1.0, 2, 3, 4], [5, 6, 7, 0], [2, 4, 6, 8], [1, 3, 5, 7]]]])
    normals = torch.zeros(1, 3, 4, 4)
    normals[0, 2] = 1.0
    normals[0, :, 1, 3] = 0.0
    img, sg, dp, nm = scale_crop(image, seg, depth, normals, scale=[2.0], top=[1], left=[2])
    # Bilinear with align_corners=True: the 2 source pixels sit at output 0 and 3, so rows and
    # columns are sampled at 0, 1/3, 2/3, 1 between them.
    third = 1.0 / 3.0
    expected = torch.tensor(
        [
            [6.0, 6 + third, 6 + 2 * third, 7.0],
            [6 + 4 * third, 6 + 5 * third, 6 + 6 * third, 6 + 7 * third],
            [6 + 8 * third, 6 + 9 * third, 6 + 10 * third, 6 + 11 * third],
            [10.0, 10 + third, 10 + 2 * third, 11.0],
        ]
    )
    for c in range(3):
        assert torch.allclose(img[0, c], expected, atol=1e-6)
    # Nearest: every crop pixel becomes a 2×2 block; depth divided by 2.
    assert sg[0].tolist() == [[6, 6, -1, -1], [6, 6, -1, -1], [9, 9, 10, 10], [9, 9, 10, 10]]
    assert dp[0, 0].tolist() == [[3.5, 3.5, 0, 0], [3.5, 3.5, 0, 0], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert nm[0, 2].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    # The random version picks one of the 9 corners, each giving the same block structure.
    for seed in range(5):
        out = random_scale_crop(image, seg, depth, normals, generator=gen(seed), scales=(2.0,))
        a = out[0][0, 0, 0, 0]
        top, left = divmod(int(a), 4)
        assert 0 <= top <= 2 and 0 <= left <= 2
        assert torch.allclose(out[0][0, 0], expected - 6 + a, atol=1e-6)
        assert torch.equal(out[1][0, ::2, ::2], seg[0, top : top + 2, left : left + 2])


def reference_crop(image, seg, depth, normals, s, i, j):
    """MTAN's RandomScaleCrop for one sample at a given (s, i, j) (im2im_pred/create_dataset.py)."""
    height, width = image.shape[-2:]
    h, w = int(height / s), int(width / s)
    size = (height, width)
    img = F.interpolate(
        image[None, :, i : i + h, j : j + w], size, mode="bilinear", align_corners=True
    )
    lab = F.interpolate(seg[None, None, i : i + h, j : j + w].float(), size, mode="nearest")
    dep = F.interpolate(depth[None, :, i : i + h, j : j + w], size, mode="nearest")
    nor = F.interpolate(
        normals[None, :, i : i + h, j : j + w], size, mode="bilinear", align_corners=True
    )
    return img[0], lab[0, 0].long(), dep[0] / s, nor[0]


def test_batched_crop_equals_the_reference_per_sample():
    image, seg, depth, normals = batch(n=6, h=24, w=32)
    scales = [1.2, 1.5, 1.0, 1.5, 1.2, 1.2]
    tops = [2, 0, 0, 8, 4, 0]  # within [0, 4] at 1.2 (crop 20×26), [0, 8] at 1.5 (16×21)
    lefts = [5, 11, 0, 3, 6, 0]
    out = scale_crop(
        image, seg, depth, normals, scale=scales, top=tops, left=lefts, normals_mode="bilinear"
    )
    for k in range(6):
        ref = reference_crop(image[k], seg[k], depth[k], normals[k], scales[k], tops[k], lefts[k])
        for got, want in zip(out, ref, strict=True):
            assert torch.equal(got[k], want)


def test_augmentation_rejects_bad_input():
    image, seg, depth, _ = batch(n=2)
    with pytest.raises(ValueError, match=r"depth must be \(2, 1, 12, 16\)"):
        random_flip(image, seg, depth[:, :, :-1], generator=gen())
    with pytest.raises(ValueError, match="segmentation must be an integer tensor"):
        random_flip(image, seg.float(), depth, generator=gen())
    with pytest.raises(ValueError, match="scales must be >= 1"):
        random_scale_crop(image, seg, depth, generator=gen(), scales=(0.5,))
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        random_flip(image, seg, depth, generator=gen(), p=1.5)
    with pytest.raises(ValueError, match=r"crop corners at scale 2\.0 must lie in top"):
        scale_crop(image, seg, depth, scale=[2.0, 2.0], top=[0, 7], left=[0, 0])
