"""The standard NYUv2 training augmentation (random scale-crop, random horizontal flip), batched.

Axes: N samples, C channels, H height, W width; all tensors channel-first, as
:func:`attnmtl.data.scene_folders.read_scene_folder` returns them: ``image`` (N, 3, H, W) float,
``segmentation`` (N, H, W) integer with -1 = ignored, ``depth`` (N, 1, H, W) float with
0 = invalid, ``normals`` (N, 3, H, W) float unit vectors (x, y, z) with 0 = invalid, optional
(Cityscapes has none). Each function returns ``(image, segmentation, depth, normals)`` with
``normals`` None when none was given; inputs are never modified.

Reference: lorenmt/mtan ``im2im_pred/create_dataset.py``, class ``RandomScaleCrop`` (credited to
Jialong Wu, mtan issue #34) and the flip in ``NYUv2.__getitem__``; the same code is in
median-research-group/LibMTL ``examples/nyu/create_dataset.py``. Per sample it

1. picks ``s`` uniformly from ``scale=[1.0, 1.2, 1.5]`` (``random.randint``);
2. takes a crop of ``h, w = int(H / s), int(W / s)`` at a uniform top-left ``i`` in
   ``[0, H - h]``, ``j`` in ``[0, W - w]`` (inclusive);
3. resizes it back to (H, W) with ``F.interpolate``: image ``bilinear, align_corners=True``,
   label ``nearest``, depth ``nearest`` and then **divided by s** (zooming in by s brings the
   scene s times closer), normals ``bilinear, align_corners=True`` and **not** renormalised;
4. then, with probability 0.5 (``torch.rand(1) < 0.5``), flips image, label, depth and normals
   along W and negates the normals' x channel (``normal[0] = -normal[0]``).

The history of that file matters for the normals: commit 5f14f52 (Jul 2020) resized depth and
normals ``nearest`` without the division, 9cb851f made both ``bilinear`` and added
``depth / sc``, 3b6eb5d (Oct 2020) put depth back to ``nearest`` and left normals ``bilinear``.
The reference applies no augmentation to Cityscapes (MTAN never released a Cityscapes loader;
LibMTL's ``examples/cityscapes/create_dataset.py`` has none). lorenmt/auto-lambda
``create_dataset.py`` (``DataTransform``) does the same geometry by resizing up by s and
cropping, with depth and normals ``nearest``, depth divided by s and disparity multiplied by s.

Where this module differs:

- it works on a batch: samples are grouped by their scale, the crops of a group are gathered
  with one advanced index and resized with one ``F.interpolate`` per group. For a given
  (s, i, j) the result equals the reference's per-sample computation exactly;
- normals are resized ``nearest`` by default, which keeps every output normal one of the input
  normals (unit length, and an invalid all-zero normal stays all-zero, so the references'
  ``sum(normal) != 0`` mask stays right). ``normals_mode="bilinear"`` reproduces the reference:
  blended normals are shorter than 1 and invalid pixels next to valid ones become partly valid;
- a scale of exactly 1 returns the sample unchanged (no resampling at all);
- randomness comes from the given ``torch.Generator`` (the reference uses Python's ``random``
  and the global torch generator): same distribution, not the same draws;
- the segmentation keeps its integer dtype (the reference returns it as float);
- ``inverse_depth=True`` multiplies by s instead of dividing, for inverse-depth / disparity maps
  (MTAN's README calls its Cityscapes depth labels "(inverse) depth"; auto-lambda multiplies
  disparity by s).

Invalid pixels stay invalid under ``nearest``: -1 labels stay -1 and no new label value appears;
0 depth stays 0 (0 / s = 0); non-finite depth stays non-finite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DEFAULT_SCALES", "crop_size", "random_flip", "random_scale_crop", "scale_crop"]

DEFAULT_SCALES = (1.0, 1.2, 1.5)
NormalsMode = Literal["nearest", "bilinear"]


def crop_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The reference's crop of one sample at ``scale``: ``(int(height / s), int(width / s))``."""
    return int(height / scale), int(width / scale)


def _check(
    image: Tensor, segmentation: Tensor, depth: Tensor, normals: Tensor | None
) -> tuple[int, int, int]:
    """(N, H, W), or a one-line ``ValueError`` naming the tensor of the wrong shape."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (N, 3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image must be floating point, got {image.dtype}")
    n, _, h, w = image.shape
    wanted: list[tuple[str, Tensor | None, tuple[int, ...]]] = [
        ("segmentation", segmentation, (n, h, w)),
        ("depth", depth, (n, 1, h, w)),
        ("normals", normals, (n, 3, h, w)),
    ]
    for name, tensor, shape in wanted:
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} must be {shape} to match image {tuple(image.shape)}, "
                f"got {tuple(tensor.shape)}"
            )
    if segmentation.is_floating_point() or segmentation.is_complex():
        raise ValueError(f"segmentation must be an integer tensor, got {segmentation.dtype}")
    for name, tensor in (("depth", depth), ("normals", normals)):
        if tensor is not None and not tensor.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {tensor.dtype}")
    return n, h, w


def _gather_crops(x: Tensor, idx: Tensor, top: Tensor, left: Tensor, h: int, w: int) -> Tensor:
    """``x[idx[k], :, top[k]:top[k]+h, left[k]:left[k]+w]`` for every k, as (len(idx), C, h, w)."""
    device = x.device
    rows = top[:, None] + torch.arange(h, device=device)  # (n, h)
    cols = left[:, None] + torch.arange(w, device=device)  # (n, w)
    channels = torch.arange(x.shape[1], device=device)
    return x[
        idx[:, None, None, None],
        channels[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


@overload
def scale_crop(
    image: Tensor,
    segmentation: Tensor,
    depth: Tensor,
    normals: Tensor,
    *,
    scale: Sequence[float],
    top: Tensor | Sequence[int],
    left: Tensor | Sequence[int],
    normals_mode: NormalsMode = "nearest",
    inverse_depth: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]: ...


@overload
def scale_crop(
    image: Tensor,
    segmentation: Tensor,
    depth: Tensor,
    normals: None = None,
    *,
    scale: Sequence[float],
    top: Tensor | Sequence[int],
    left: Tensor | Sequence[int],
    normals_mode: NormalsMode = "nearest",
    inverse_depth: bool = False,
) -> tuple[Tensor, Tensor, Tensor, None]: ...


def scale_crop(
    image: Tensor,
    segmentation: Tensor,
    depth: Tensor,
    normals: Tensor | None = None,
    *,
    scale: Sequence[float],
    top: Tensor | Sequence[int],
    left: Tensor | Sequence[int],
    normals_mode: NormalsMode = "nearest",
    inverse_depth: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """The deterministic scale-crop: sample k is cropped at ``(top[k], left[k])`` to
    :func:`crop_size` ``(H, W, scale[k])`` and resized back to (H, W) (module docstring).

    ``scale`` holds Python floats (>= 1), one per sample; ``top``/``left`` the crop corners,
    within ``[0, H - h]`` and ``[0, W - w]``.
    """
    n, height, width = _check(image, segmentation, depth, normals)
    if normals_mode not in ("nearest", "bilinear"):
        raise ValueError(f"normals_mode must be 'nearest' or 'bilinear', got {normals_mode!r}")
    scales = [float(s) for s in scale]
    tops = torch.as_tensor(top, dtype=torch.long).to(image.device).reshape(-1)
    lefts = torch.as_tensor(left, dtype=torch.long).to(image.device).reshape(-1)
    if not len(scales) == tops.numel() == lefts.numel() == n:
        raise ValueError(
            f"scale, top and left need one entry per sample ({n}), "
            f"got {len(scales)}, {tops.numel()}, {lefts.numel()}"
        )

    out_image = image.clone()
    out_seg = segmentation.clone()
    out_depth = depth.clone()
    out_normals = None if normals is None else normals.clone()
    size = (height, width)
    for s in sorted(set(scales)):
        h, w = crop_size(height, width, s)
        if not s >= 1.0 or h < 1 or w < 1:
            raise ValueError(
                f"scales must be >= 1 and leave a crop of at least 1×1 pixel, got {s} "
                f"(crop {h}×{w} of {height}×{width})"
            )
        idx = torch.tensor([k for k, sk in enumerate(scales) if sk == s], device=image.device)
        t, lf = tops[idx], lefts[idx]
        if bool(
            (t < 0).any() or (t > height - h).any() or (lf < 0).any() or (lf > width - w).any()
        ):
            raise ValueError(
                f"crop corners at scale {s} must lie in top [0, {height - h}], "
                f"left [0, {width - w}]; got top {t.tolist()}, left {lf.tolist()}"
            )
        if h == height and w == width:  # only at s == 1: the whole sample, kept as it is
            continue
        crop = _gather_crops(image, idx, t, lf, h, w)
        out_image[idx] = F.interpolate(crop, size=size, mode="bilinear", align_corners=True)
        labels = _gather_crops(segmentation[:, None], idx, t, lf, h, w).to(torch.float32)
        resized = F.interpolate(labels, size=size, mode="nearest")[:, 0]
        out_seg[idx] = resized.to(segmentation.dtype)
        crop = _gather_crops(depth, idx, t, lf, h, w)
        resized = F.interpolate(crop, size=size, mode="nearest")
        out_depth[idx] = resized * s if inverse_depth else resized / s
        if normals is not None and out_normals is not None:
            crop = _gather_crops(normals, idx, t, lf, h, w)
            if normals_mode == "bilinear":
                resized = F.interpolate(crop, size=size, mode="bilinear", align_corners=True)
            else:
                resized = F.interpolate(crop, size=size, mode="nearest")
            out_normals[idx] = resized
    return out_image, out_seg, out_depth, out_normals


@overload
def random_scale_crop(
    image: Tensor,
    segmentation: Tensor,
    depth: Tensor,
    normals: Tensor,
    *,
    generator: torch.Generator,
    scales: Sequence[float] = DEFAULT_SCALES,
    normals_mode: NormalsMode = "nearest",
    inverse_depth: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]: ...


@overload
def random_scale_crop(
    image: Tensor,
    segmentation: Tensor,
    depth: Tensor,
    normals: None = None,
    *,
    generator: torch.Generator,
    scales: Sequence[float] = DEFAULT_SCALES,
    normals_mode: NormalsMode = "nearest",
    inverse_depth: bool = False,
) -> tuple[Tensor, Tensor, Tensor, None]: ...


def random_scale_crop(
    image: Tensor,
    segmentation: Tensor,
    depth: Tensor,
    normals: Tensor | None = None,
    *,
    generator: torch.Generator,
    scales: Sequence[float] = DEFAULT_SCALES,
    normals_mode: NormalsMode = "nearest",
    inverse_depth: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """MTAN's ``RandomScaleCrop`` on a batch: per sample a scale drawn uniformly from ``scales``,
    a uniform crop corner, then :func:`scale_crop` (see the module docstring for differences)."""
    n, height, width = _check(image, segmentation, depth, normals)
    options = [float(s) for s in scales]
    if not options:
        raise ValueError("scales must not be empty")
    for s in options:
        h, w = crop_size(height, width, s)
        if not s >= 1.0 or h < 1 or w < 1:
            raise ValueError(
                f"scales must be >= 1 and leave a crop of at least 1×1 pixel, got {s} "
                f"(crop {h}×{w} of {height}×{width})"
            )
    device = generator.device
    choice = torch.randint(len(options), (n,), generator=generator, device=device).cpu()
    top = torch.zeros(n, dtype=torch.long)
    left = torch.zeros(n, dtype=torch.long)
    for k, s in enumerate(options):
        idx = (choice == k).nonzero().reshape(-1)
        if idx.numel() == 0:
            continue
        h, w = crop_size(height, width, s)
        count = (idx.numel(),)
        top[idx] = torch.randint(height - h + 1, count, generator=generator, device=device).cpu()
        left[idx] = torch.randint(width - w + 1, count, generator=generator, device=device).cpu()
    chosen = [options[k] for k in choice.tolist()]
    return scale_crop(
        image,
        segmentation,
        depth,
        normals,
        scale=chosen,
        top=top,
        left=left,
        normals_mode=normals_mode,
        inverse_depth=inverse_depth,
    )


@overload
def random_flip(
    image: Tensor,
    segmentation: Tensor,
    depth: Tensor,
    normals: Tensor,
    *,
    generator: torch.Generator,
    p: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor, Tensor]: ...


@overload
def random_flip(
    image: Tensor,
    segmentation: Tensor,
    depth: Tensor,
    normals: None = None,
    *,
    generator: torch.Generator,
    p: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor, None]: ...


def random_flip(
    image: Tensor,
    segmentation: Tensor,
    depth: Tensor,
    normals: Tensor | None = None,
    *,
    generator: torch.Generator,
    p: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Flip each sample along W with probability ``p`` (``rand < p``, as the reference's
    ``torch.rand(1) < 0.5``); a flipped sample's normals also have their x channel negated."""
    n, _, _ = _check(image, segmentation, depth, normals)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    flip = torch.rand(n, generator=generator, device=generator.device).to(image.device) < p
    where4 = flip.view(n, 1, 1, 1)
    out_image = torch.where(where4, image.flip(-1), image)
    out_seg = torch.where(flip.view(n, 1, 1), segmentation.flip(-1), segmentation)
    out_depth = torch.where(where4, depth.flip(-1), depth)
    out_normals = None
    if normals is not None:
        mirrored = normals.flip(-1)
        mirrored = torch.cat([-mirrored[:, :1], mirrored[:, 1:]], dim=1)
        out_normals = torch.where(where4, mirrored, normals)
    return out_image, out_seg, out_depth, out_normals
