"""Dense scene data sets: ``scenes-mt`` (rendered here), ``nyuv2`` and ``cityscapes`` (the
preprocessed ``.npy`` folders users bring).

Axes: N samples, H × W pixels.

Every set has the per-pixel tasks ``segmentation``, ``depth`` and (but Cityscapes) ``normals``
in the conventions of :mod:`attnmtl.core.dense`; ``tasks`` picks some of them. Images are
(N, 3, H, W) in [0, 1]. ``augment: true`` (the default for the folders) gives the training split
MTAN's random scale-crop and a horizontal flip that also negates the normals' x
(:mod:`attnmtl.data.dense_augment`), drawn per step from the run's seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from attnmtl.core.batch import Batch
from attnmtl.core.tasks import Task, TaskKind
from attnmtl.data.dataset import DataSplits, MultiTaskDataset
from attnmtl.data.dense_augment import DEFAULT_SCALES, random_flip, random_scale_crop
from attnmtl.data.registry import register_dataset
from attnmtl.data.scene_folders import CITYSCAPES_CLASSES, NYUV2_CLASSES, read_scene_folder
from attnmtl.data.scenes import CLASSES, render_scenes

KINDS: dict[str, TaskKind] = {
    "segmentation": "segmentation",
    "depth": "depth",
    "normals": "normals",
}


@dataclass(frozen=True)
class SceneAugment:
    """MTAN's training augmentation of a dense batch: a random scale-crop (``scales``) and a
    horizontal flip with probability ``flip`` (normals' x negated), for whichever of the
    ``segmentation``, ``depth`` and ``normals`` tasks the batch has."""

    scales: tuple[float, ...] = DEFAULT_SCALES
    flip: float = 0.5

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        image = batch.inputs
        assert isinstance(image, Tensor)
        labels = dict(batch.labels)
        n, _, h, w = image.shape
        seg = labels.get("segmentation", torch.full((n, h, w), -1, device=image.device))
        depth = labels.get("depth", torch.zeros(n, 1, h, w, device=image.device))
        normals = labels.get("normals")
        image, seg, depth, normals = random_scale_crop(
            image, seg, depth, normals, generator=generator, scales=self.scales
        )
        image, seg, depth, normals = random_flip(
            image, seg, depth, normals, generator=generator, p=self.flip
        )
        for name, value in (("segmentation", seg), ("depth", depth), ("normals", normals)):
            if name in labels and value is not None:
                labels[name] = value
        return Batch(image, labels, batch.label_mask, batch.lengths, batch.index, batch.anchors)


def check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """``scales`` as a tuple of zoom factors >= 1; ValueError otherwise."""
    values = tuple(float(v) for v in scales)
    if not values or any(not v >= 1.0 for v in values):
        raise ValueError(f"augment_scales={list(scales)!r}; expected zoom factors >= 1")
    return values


def choose_tasks(
    tasks: Sequence[str] | None, available: Sequence[str], classes: int, data: str
) -> list[Task]:
    """The chosen tasks of a scene set, in ``available`` order; ValueError for another name."""
    names = list(available if tasks is None else tasks)
    unknown = [t for t in names if t not in available]
    if unknown or not names:
        raise ValueError(f"{data}: tasks={list(names)!r}; expected some of {list(available)}")
    return [
        Task(t, "segmentation", classes) if t == "segmentation" else Task(t, KINDS[t])
        for t in available
        if t in names
    ]


def as_dataset(
    arrays: Mapping[str, Tensor], tasks: Sequence[Task], augment: SceneAugment | None
) -> MultiTaskDataset:
    """A dense data set of the chosen tasks' arrays."""
    return MultiTaskDataset(
        arrays["image"],
        {t.name: arrays[t.name] for t in tasks},
        list(tasks),
        layout="image",
        augment=augment,
    )


def split_off(data: Mapping[str, Tensor], share: float, seed: int) -> tuple[dict, dict]:
    """A random ``share`` of the samples (the validation part) and the rest."""
    n = len(data["image"])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = max(1, round(share * n))
    val, rest = order[:cut].sort().values, order[cut:].sort().values
    return {k: v[val] for k, v in data.items()}, {k: v[rest] for k, v in data.items()}


@register_dataset("scenes-mt")
def scenes_mt(
    num_train: int = 2000,
    num_val: int = 200,
    num_test: int = 400,
    height: int = 48,
    width: int = 64,
    tasks: Sequence[str] | None = None,
    max_objects: int = 4,
    invalid_depth: float = 0.05,
    texture_noise: float = 0.05,
    augment: bool = False,
    augment_scales: Sequence[float] = DEFAULT_SCALES,
    seed: int = 0,
) -> DataSplits:
    """Rendered rooms with boxes, spheres and cylinders
    (:func:`~attnmtl.data.scenes.render_scenes`): per-pixel ``segmentation`` of the classes in
    :data:`~attnmtl.data.scenes.CLASSES`, metric z-``depth`` with ``invalid_depth`` of it
    missing in sensor-like holes, and camera-frame ``normals``. Each split is rendered from its
    own seed (``seed``, ``seed + 1``, ``seed + 2``), so no scene repeats across splits.

    Args:
        num_train, num_val, num_test: images per split.
        height, width: image size (divisible by 2^L for an L-level SegNet).
        tasks: some of ``segmentation``, ``depth``, ``normals`` (all by default).
        max_objects: at most this many primitives per room.
        invalid_depth: share of depth pixels without ground truth.
        texture_noise: std of the per-pixel colour noise.
        augment: random scale-crop and flip of training batches (:class:`SceneAugment`).
        augment_scales: the scale-crop's zoom factors (MTAN's by default; ``[1]`` only flips).
        seed: the scenes' seed.
    """
    if num_train < 1 or num_val < 1 or num_test < 1:
        raise ValueError(
            f"num_train, num_val, num_test = {[num_train, num_val, num_test]}; expected >= 1 each"
        )
    chosen = choose_tasks(tasks, ["segmentation", "depth", "normals"], len(CLASSES), "scenes-mt")
    transform = SceneAugment(check_scales(augment_scales)) if augment else None
    parts = []
    for i, n in enumerate((num_train, num_val, num_test)):
        arrays = render_scenes(
            n,
            height,
            width,
            seed=seed + i,
            max_objects=max_objects,
            invalid_depth=invalid_depth,
            texture_noise=texture_noise,
        )
        parts.append(as_dataset(arrays, chosen, transform if i == 0 else None))
    info = {"classes": list(CLASSES), "height": height, "width": width}
    return DataSplits(parts[0], parts[1], parts[2], info)


def scene_folder_set(
    root: str,
    kind: str,
    classes: int,
    available: Sequence[str],
    tasks: Sequence[str] | None,
    val_fraction: float,
    augment: bool,
    limit: int | None,
    seed: int,
) -> DataSplits:
    """NYUv2 or Cityscapes from ``root``: ``train/`` for training (``val_fraction`` of it held
    out for validation; 0: validate on the test split, the reference protocol), ``val/`` as
    the test split, as MTAN and LibMTL evaluate."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r}; expected a share in [0, 1)")
    chosen = choose_tasks(tasks, available, classes, kind)
    train = read_scene_folder(root, "train", kind, limit)  # type: ignore[arg-type]
    test = read_scene_folder(root, "val", kind, limit)  # type: ignore[arg-type]
    transform = SceneAugment() if augment else None
    if val_fraction > 0:
        val, train = split_off(train, val_fraction, seed)
        val_set = as_dataset(val, chosen, None)
    test_set = as_dataset(test, chosen, None)
    if val_fraction == 0:
        val_set = test_set
    info = {"root": str(root), "classes": classes}
    return DataSplits(as_dataset(train, chosen, transform), val_set, test_set, info)


@register_dataset("nyuv2")
def nyuv2(
    root: str,
    tasks: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    augment: bool = True,
    limit: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """NYUv2 as MTAN's and LibMTL's preprocessed ``.npy`` folders (``root/train``,
    ``root/val``; 288×384, 13 classes; :func:`~attnmtl.data.scene_folders.read_scene_folder`).
    Nothing is downloaded: ``root`` is the folder you bring.

    Args:
        root: the folder holding ``train/`` and ``val/``.
        tasks: some of ``segmentation``, ``depth``, ``normals`` (all by default).
        val_fraction: share of ``train/`` held out for validation (0: validate on ``val/``,
            which is also the test split, as the reference code does).
        augment: MTAN's random scale-crop and flip of training batches.
        limit: read only the first this many samples of each split (a quick try).
        seed: the validation draw's seed.
    """
    available = ["segmentation", "depth", "normals"]
    return scene_folder_set(
        root, "nyuv2", NYUV2_CLASSES, available, tasks, val_fraction, augment, limit, seed
    )


@register_dataset("cityscapes")
def cityscapes(
    root: str,
    tasks: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    augment: bool = True,
    limit: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """Cityscapes as MTAN's and LibMTL's preprocessed ``.npy`` folders (128×256, 7 classes,
    ``segmentation`` and ``depth``); see :func:`nyuv2` for the arguments."""
    available = ["segmentation", "depth"]
    return scene_folder_set(
        root, "cityscapes", CITYSCAPES_CLASSES, available, tasks, val_fraction, augment, limit, seed
    )
