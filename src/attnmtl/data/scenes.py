"""Procedural indoor rooms for dense multi-task learning: image, segmentation, depth, normals.

Axes: N scenes, H height, W width, P pixels (rays) per scene (``P = H * W``, row major), M object
slots per scene.

Each scene is an axis-aligned room (floor, four walls, ceiling) holding up to M primitives —
boxes (axis-aligned or turned about the vertical), spheres and finite vertical cylinders with
caps — that rest on the floor or float, seen by a pinhole camera inside the room. Every pixel is
one ray through its centre; the ray is intersected analytically with the room's six planes and
with every primitive (slabs for boxes and caps, a quadric for spheres and cylinder sides, each in
the primitive's own frame), and the nearest hit wins. All scenes are rendered at once (in chunks
of some tens), with no loop over pixels.

Conventions:

* World frame: metres, Z up; the room spans ``[0, X] x [0, Y] x [0, Z]``; the floor is ``z = 0``.
* Camera frame: OpenCV, x right, y down, z forward (the optical axis). ``camera_rotation`` is
  camera-to-world: its columns are the camera's x, y, z axes in the world frame. Positive pitch
  looks up, positive roll turns the image clockwise about the optical axis.
* Intrinsics K: ``fx = fy = (W / 2) / tan(fov / 2)`` (the field of view spans the width), the
  principal point at the image centre ``(W / 2, H / 2)``; pixel ``(i, j)`` has its centre at
  ``(u, v) = (j + 0.5, i + 0.5)``, so a camera-frame point is ``depth * K^-1 [u, v, 1]``.
* ``depth`` is metric z-depth (distance along the optical axis, as in NYUv2), not the distance
  along the ray; 0 marks an invalid pixel (a simulated sensor hole). Only depth has holes.
* ``normals`` are unit surface normals in the camera frame, oriented towards the camera
  (``normal · ray < 0``).
* ``segmentation`` holds indices into :data:`CLASSES`; every ray hits the room, so every pixel
  has a class (-1, "ignored", is reserved and never produced).
* Colours are not a give-away for the class: objects of every class draw their colours from one
  distribution, and the room's surfaces from broad, overlapping ones.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CLASSES",
    "Hits",
    "SceneSpec",
    "camera_intrinsics",
    "camera_rays",
    "camera_rotation",
    "cast",
    "render_scenes",
    "render_spec",
    "sample_scenes",
]

CLASSES: tuple[str, ...] = ("floor", "wall", "ceiling", "box", "sphere", "cylinder")
FLOOR, WALL, CEILING, BOX, SPHERE, CYLINDER = range(len(CLASSES))
EMPTY = -1  # the kind of an unused object slot
ROOM_SURFACES = 6  # surface index: 0 x=0, 1 x=X, 2 y=0, 3 y=Y, 4 floor, 5 ceiling; 6 + m object m

_FAR = 1e30  # "no hit" ray parameter (finite, so that no inf * 0 can make a NaN)
_TINY = 1e-12  # smallest direction component divided by
_CHUNK_RAYS = 1 << 17  # rays per rendering chunk (42 scenes at 48 x 64; cache-friendly)

# Scene sampling ranges (metres, radians).
_ROOM_SIDE = (4.0, 8.0)
_ROOM_HEIGHT = (2.5, 3.5)
_CAMERA_MARGIN = 1.5  # from every wall
_CAMERA_HEIGHT = (1.4, 1.6)  # a hand-held sensor's: the scale cue monocular depth reads
_PITCH = (-0.4, 0.05)
_ROLL = (-0.08, 0.08)
_FOOTPRINT = (0.2, 0.5)  # radius of an object's horizontal bounding circle
_HALF_HEIGHT = (0.15, 0.8)  # boxes and cylinders
_WALL_GAP = 0.05  # between an object's bounding circle and the walls
_CAMERA_GAP = 0.4  # least gap between an object's bounding circle and the camera (horizontally)
_USUAL_GAP = 1.0  # the least gap unless the wall behind is nearer
_FLOAT_SHARE = 0.25  # objects that float instead of resting on the floor
_FLOAT_GAP = 0.2  # between a floating object and the floor or ceiling
_AMBIENT = (0.2, 0.45)
_FALLOFF = 0.03  # light intensity 1 / (1 + _FALLOFF * distance^2)
# Per-class colour tendencies for the room (floor, wall, ceiling); a surface's colour is mixed
# from its tendency and a uniform random colour, so the ranges overlap widely.
_ROOM_TENDENCY = ((0.55, 0.42, 0.30), (0.80, 0.78, 0.72), (0.90, 0.90, 0.88))
_TENDENCY_WEIGHT = (0.2, 0.7)
_WALL_JITTER = 0.05  # per-wall colour jitter around the room's wall colour
_COLOUR_RANGE = (0.08, 0.95)


@dataclass(frozen=True)
class SceneSpec:
    """N scenes with M object slots each, in the world frame (metres, Z up; see the module).

    Fields:
        room: (N, 3) the room's size (X, Y, Z); the room spans ``[0, X] x [0, Y] x [0, Z]``.
        camera_position: (N, 3) the optical centre, inside the room.
        camera_rotation: (N, 3, 3) camera-to-world rotation (columns: camera x, y, z in world).
        kind: (N, M) int64 the class of each slot (``BOX``, ``SPHERE``, ``CYLINDER``) or -1 for
            an empty slot.
        centre: (N, M, 3) each object's centre.
        half_size: (N, M, 3) half extents in the object's frame: a box's half sides, a sphere's
            ``(r, r, r)``, a cylinder's ``(r, r, half height)``.
        yaw: (N, M) each object's turn about the vertical (radians, counter-clockwise seen from
            above; only boxes look different for it).
        room_colour: (N, 6, 3) RGB albedo of the surfaces x=0, x=X, y=0, y=Y, floor, ceiling.
        object_colour: (N, M, 3) RGB albedo of each object.
        light_position: (N, 3) a point light inside the room.
        ambient: (N,) the ambient share of the shading, in [0, 1].

    Build a hand-made scene with :meth:`create`; random ones come from :func:`sample_scenes`.
    """

    room: Tensor
    camera_position: Tensor
    camera_rotation: Tensor
    kind: Tensor
    centre: Tensor
    half_size: Tensor
    yaw: Tensor
    room_colour: Tensor
    object_colour: Tensor
    light_position: Tensor
    ambient: Tensor

    def __post_init__(self) -> None:
        n, m = self.kind.shape[0], self.kind.shape[1] if self.kind.dim() == 2 else -1
        expected = {
            "room": (n, 3),
            "camera_position": (n, 3),
            "camera_rotation": (n, 3, 3),
            "kind": (n, m),
            "centre": (n, m, 3),
            "half_size": (n, m, 3),
            "yaw": (n, m),
            "room_colour": (n, ROOM_SURFACES, 3),
            "object_colour": (n, m, 3),
            "light_position": (n, 3),
            "ambient": (n,),
        }
        for name, shape in expected.items():
            actual = tuple(getattr(self, name).shape)
            if actual != shape:
                raise ValueError(f"SceneSpec.{name} has shape {actual}; expected {shape}")

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def __getitem__(self, index: slice) -> SceneSpec:
        """The scenes ``index`` selects (a slice along N)."""
        return SceneSpec(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def create(
        cls,
        room: Tensor,
        camera_position: Tensor,
        camera_rotation: Tensor,
        kind: Tensor | None = None,
        centre: Tensor | None = None,
        half_size: Tensor | None = None,
        yaw: Tensor | None = None,
    ) -> SceneSpec:
        """Scenes from their geometry alone, with grey albedo, a light under the ceiling's centre
        and ambient 0.3; no objects when ``kind`` is None, else ``centre`` and ``half_size`` are
        needed (``yaw`` defaults to 0). Shapes as in the class docstring."""
        room = room.float()
        n = room.shape[0]
        if kind is None:
            kind = torch.empty(n, 0, dtype=torch.int64)
            centre = half_size = torch.empty(n, 0, 3)
        elif centre is None or half_size is None:
            raise ValueError("centre and half_size are None; expected them with kind")
        m = kind.shape[1]
        light = room * torch.tensor([0.5, 0.5, 1.0]) - torch.tensor([0.0, 0.0, 0.05])
        return cls(
            room=room,
            camera_position=camera_position.float(),
            camera_rotation=camera_rotation.float(),
            kind=kind.long(),
            centre=centre.float(),
            half_size=half_size.float(),
            yaw=torch.zeros(n, m) if yaw is None else yaw.float(),
            room_colour=torch.full((n, ROOM_SURFACES, 3), 0.6),
            object_colour=torch.full((n, m, 3), 0.6),
            light_position=light,
            ambient=torch.full((n,), 0.3),
        )


class Hits(NamedTuple):
    """The nearest hit of each ray (see :func:`cast`).

    Fields:
        t: (N, P) ray parameter of the hit: ``point = origin + t * direction``.
        label: (N, P) int64 class index into :data:`CLASSES`.
        normal: (N, P, 3) unit world-frame normal, oriented against the ray.
        surface: (N, P) int64 surface index: 0..5 the room's (x=0, x=X, y=0, y=Y, floor,
            ceiling), ``6 + m`` object slot m.
    """

    t: Tensor
    label: Tensor
    normal: Tensor
    surface: Tensor


def camera_intrinsics(height: int, width: int, fov_degrees: float = 60.0) -> Tensor:
    """(3, 3) float32 pinhole intrinsics K for a horizontal field of view of ``fov_degrees``.

    ``fx = fy = (width / 2) / tan(fov / 2)``, principal point ``(width / 2, height / 2)``, so
    the centre of pixel ``(i, j)``, at ``(j + 0.5, i + 0.5)``, is symmetric about it.
    """
    focal = (width / 2) / math.tan(math.radians(fov_degrees) / 2)
    return torch.tensor(
        [[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]],
        dtype=torch.float32,
    )


def camera_rays(height: int, width: int, intrinsics: Tensor) -> Tensor:
    """(H * W, 3) camera-frame ray directions ``K^-1 [j + 0.5, i + 0.5, 1]``, row major.

    Their z component is 1, so the ray parameter of a hit along one of them is its z-depth.
    """
    rows = torch.arange(height, dtype=torch.float32) + 0.5
    cols = torch.arange(width, dtype=torch.float32) + 0.5
    v, u = torch.meshgrid(rows, cols, indexing="ij")  # (H, W)
    fx, fy = intrinsics[0, 0], intrinsics[1, 1]
    cx, cy = intrinsics[0, 2], intrinsics[1, 2]
    rays = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u)], dim=-1)
    return rays.reshape(-1, 3)


def camera_rotation(yaw: Tensor, pitch: Tensor, roll: Tensor) -> Tensor:
    """(N, 3, 3) camera-to-world rotations from (N,) angles in radians.

    At zero pitch and roll the camera looks horizontally along ``(cos yaw, sin yaw, 0)`` with
    its y axis pointing down; then it pitches about its x axis (positive looks up) and rolls
    about its optical axis.
    """
    base = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # yaw 0
    return _rot_z(yaw) @ base @ _rot_x(pitch) @ _rot_z(roll)


def _rot_z(angle: Tensor) -> Tensor:
    c, s, zero, one = angle.cos(), angle.sin(), torch.zeros_like(angle), torch.ones_like(angle)
    rows = [torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1)]
    return torch.stack([*rows, torch.stack([zero, zero, one], -1)], -2)


def _rot_x(angle: Tensor) -> Tensor:
    c, s, zero, one = angle.cos(), angle.sin(), torch.zeros_like(angle), torch.ones_like(angle)
    rows = [torch.stack([one, zero, zero], -1), torch.stack([zero, c, -s], -1)]
    return torch.stack([*rows, torch.stack([zero, s, c], -1)], -2)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Dot products over the last axis (3), written out: the same bits whatever the shapes."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _rotate(rotation: Tensor, vectors: Tensor) -> Tensor:
    """(N, P, 3) ``rotation @ v`` for (N, 3, 3) rotations and (N or 1, P, 3) vectors, written
    out (no matrix kernel), so that a scene's result does not depend on the batch around it."""
    rows = [_dot(rotation[:, None, i, :], vectors) for i in range(3)]
    return torch.stack(rows, dim=-1)


def _safe(values: Tensor) -> Tensor:
    """``values`` with components nearer 0 than _TINY replaced by _TINY (to divide by)."""
    return torch.where(values.abs() < _TINY, torch.full_like(values, _TINY), values)


def _slab(origin: Tensor, direction: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit ray parameters of the slab ``-1 <= x <= 1`` (direction already safe)."""
    t1, t2 = (-1.0 - origin) / direction, (1.0 - origin) / direction
    return torch.minimum(t1, t2), torch.maximum(t1, t2)


def _quadric(origin: Tensor, direction: Tensor, weight_z: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit of ``x^2 + y^2 + w z^2 <= 1`` (w = 1 a ball, w = 0 an infinite cylinder).

    (..., 3) origin and direction; ``weight_z`` broadcasts against (...). A ray that misses
    gets the empty interval (_FAR, -_FAR); one parallel to the cylinder's axis gets everything
    or nothing.
    """
    ox, oy, oz = origin.unbind(-1)
    dx, dy, dz = direction.unbind(-1)
    a = dx * dx + dy * dy + weight_z * dz * dz
    b = ox * dx + oy * dy + weight_z * oz * dz
    c = ox * ox + oy * oy + weight_z * oz * oz - 1.0
    parallel = a < _TINY
    disc = b * b - a * c
    root = disc.clamp_min(0.0).sqrt()
    a = torch.where(parallel, torch.ones_like(a), a)
    near, far = (-b - root) / a, (-b + root) / a
    inside = c <= 0
    near = torch.where(parallel, torch.where(inside, -_FAR, _FAR), near)
    far = torch.where(parallel, torch.where(inside, _FAR, -_FAR), far)
    miss = (disc < 0) & ~parallel
    return near.masked_fill(miss, _FAR), far.masked_fill(miss, -_FAR)


def _to_local(points: Tensor, centre: Tensor, half: Tensor, yaw: Tensor) -> Tensor:
    """World points or directions (centre 0) into an object's unit frame (turned, scaled).

    ``points`` (..., 3); ``centre``, ``half`` (..., 3) and ``yaw`` (...) broadcast against it.
    """
    rel = points - centre
    c, s = yaw.cos(), yaw.sin()
    x, y, z = rel.unbind(-1)
    return torch.stack([c * x + s * y, -s * x + c * y, z], -1) / half


def _object_entry(origin: Tensor, direction: Tensor, kind: Tensor) -> Tensor:
    """(N, P) entry parameter of each ray into one object slot per scene, _FAR where it misses.

    ``origin``, ``direction`` (N, P, 3) in the object's unit frame; ``kind`` (N,) its class (or
    -1). A box is the unit cube, a sphere the unit ball, a cylinder the unit disc times
    ``-1 <= z <= 1``.
    """
    direction = _safe(direction)
    z_near, z_far = _slab(origin[..., 2], direction[..., 2])
    x_near, x_far = _slab(origin[..., 0], direction[..., 0])
    y_near, y_far = _slab(origin[..., 1], direction[..., 1])
    weight_z = (kind == SPHERE).to(origin.dtype)[:, None]
    q_near, q_far = _quadric(origin, direction, weight_z)
    is_box = (kind == BOX)[:, None]
    side_near = torch.where(is_box, torch.maximum(x_near, y_near), q_near)
    side_far = torch.where(is_box, torch.minimum(x_far, y_far), q_far)
    near = torch.maximum(side_near, z_near)
    far = torch.minimum(side_far, z_far)
    hit = (near <= far) & (near > 0) & (kind != EMPTY)[:, None]
    return torch.where(hit, near, torch.full_like(near, _FAR))


def _room_hits(origin: Tensor, direction: Tensor, room: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(N, P) exit parameter, (N, P) surface index and (N, P, 3) inward normal of the room.

    The origins must lie inside the room, so every ray leaves it through exactly one plane.
    """
    direction = _safe(direction)
    positive = direction > 0
    wall = torch.where(positive, room[:, None, :], torch.zeros_like(direction))
    t, axis = ((wall - origin) / direction).min(dim=-1)
    towards_max = positive.gather(-1, axis[..., None])  # (N, P, 1)
    surface = 2 * axis + towards_max[..., 0].long()
    sign = torch.where(towards_max, -1.0, 1.0)
    normal = F.one_hot(axis, 3).to(origin.dtype) * sign
    return t, surface, normal


def _object_normal(
    point: Tensor, kind: Tensor, centre: Tensor, half: Tensor, yaw: Tensor
) -> Tensor:
    """(..., 3) unnormalised world normal of the object surface through world ``point`` (...).

    Each of ``kind`` (...), ``centre``, ``half`` (..., 3), ``yaw`` (...) is the object hit at
    that point. In the unit frame: a box's face is the coordinate of largest size, a cylinder's
    cap or side whichever of ``|z|`` and the radius is larger, a sphere's normal the point.
    """
    local = _to_local(point, centre, half, yaw)
    x, y, z = local.unbind(-1)
    radius = torch.sqrt(x * x + y * y)
    face = F.one_hot(local.abs().argmax(-1), 3).to(local.dtype) * local.sign()
    on_cap = z.abs() >= radius
    cylinder = torch.where(
        on_cap[..., None],
        torch.stack([torch.zeros_like(z), torch.zeros_like(z), z.sign()], -1),
        torch.stack([x, y, torch.zeros_like(z)], -1),
    )
    normal = torch.where(
        (kind == BOX)[..., None], face, torch.where((kind == SPHERE)[..., None], local, cylinder)
    )
    normal = normal / half  # the inverse transpose of the scaling
    nx, ny, nz = normal.unbind(-1)
    c, s = yaw.cos(), yaw.sin()
    return torch.stack([c * nx - s * ny, s * nx + c * ny, nz], -1)


def _gather_slot(values: Tensor, slot: Tensor) -> Tensor:
    """(N, P, ...) ``values[n, slot[n, p]]`` for (N, M, ...) values and (N, P) slots."""
    index = slot.reshape(*slot.shape, *([1] * (values.dim() - 2)))
    return values.gather(1, index.expand(*slot.shape, *values.shape[2:]))


def cast(origins: Tensor, directions: Tensor, spec: SceneSpec) -> Hits:
    """The nearest hit of every ray in its scene: room planes and all objects, analytically.

    Args:
        origins: (N, P, 3) world-frame ray origins, inside the room and outside every object.
        directions: (N, P, 3) world-frame directions, any non-zero length; the returned ``t``
            is in units of their length.
        spec: the N scenes.

    Returns:
        :class:`Hits`, with normals oriented against the rays.
    """
    origins, directions = origins.float(), directions.float()
    t, surface, normal = _room_hits(origins, directions, spec.room)
    label = torch.where(surface == 4, FLOOR, torch.where(surface == 5, CEILING, WALL))  # (N, P)
    slots = spec.kind.shape[1]
    if slots:
        best = torch.full_like(t, _FAR)
        best_slot = torch.zeros_like(surface)
        for m in range(slots):
            centre, half = spec.centre[:, m, None, :], spec.half_size[:, m, None, :]
            yaw = spec.yaw[:, m, None]
            entry = _object_entry(
                _to_local(origins, centre, half, yaw),
                _to_local(directions, torch.zeros_like(centre), half, yaw),
                spec.kind[:, m],
            )
            closer = entry < best
            best = torch.where(closer, entry, best)
            best_slot = torch.where(closer, m, best_slot)
        on_object = best < t
        t = torch.where(on_object, best, t)
        kind = spec.kind.gather(1, best_slot)
        point = origins + t[..., None] * directions
        object_normal = _object_normal(
            point,
            kind,
            _gather_slot(spec.centre, best_slot),
            _gather_slot(spec.half_size, best_slot),
            _gather_slot(spec.yaw, best_slot),
        )
        normal = torch.where(on_object[..., None], object_normal, normal)
        label = torch.where(on_object, kind, label)
        surface = torch.where(on_object, ROOM_SURFACES + best_slot, surface)
    normal = normal / _dot(normal, normal).sqrt()[..., None]
    facing = _dot(normal, directions)[..., None]
    normal = torch.where(facing > 0, -normal, normal)
    return Hits(t=t, label=label, normal=normal, surface=surface)


def _shade(spec: SceneSpec, hits: Tensor, points: Tensor, normals: Tensor) -> Tensor:
    """(N, P, 3) Lambertian colour: albedo * (ambient + (1 - ambient) * cos * falloff)."""
    albedo = _gather_slot(torch.cat([spec.room_colour, spec.object_colour], dim=1), hits)
    to_light = spec.light_position[:, None, :] - points
    distance = _dot(to_light, to_light).sqrt().clamp_min(1e-6)
    cosine = (_dot(normals, to_light) / distance).clamp_min(0.0)
    ambient = spec.ambient[:, None]
    intensity = ambient + (1.0 - ambient) * cosine / (1.0 + _FALLOFF * distance**2)
    return albedo * intensity[..., None]


def _holes(n: int, height: int, width: int, share: float, generator: torch.Generator) -> Tensor:
    """(N, H, W) bool mask of round(share * H * W) invalid pixels per image, mostly in blobs.

    The pixels with the highest scores of a smooth random field (bilinear upsampling of a coarse
    grid, so the top share gathers round its peaks) plus some per-pixel noise (speckle).
    """
    count = round(share * height * width)
    mask = torch.zeros(n, height * width, dtype=torch.bool)
    if count == 0:
        return mask.reshape(n, height, width)
    coarse = torch.rand(n, 1, height // 6 + 2, width // 6 + 2, generator=generator)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    speckle = torch.rand(n, height * width, generator=generator)
    score = smooth.reshape(n, -1) + 0.15 * speckle
    mask.scatter_(1, score.topk(count, dim=1).indices, True)
    return mask.reshape(n, height, width)


def _render(spec: SceneSpec, height: int, width: int, fov_degrees: float) -> dict[str, Tensor]:
    """The outputs of :func:`render_spec` without noise, holes or clipping."""
    n = len(spec)
    intrinsics = camera_intrinsics(height, width, fov_degrees)
    rays = camera_rays(height, width, intrinsics)  # (P, 3), z = 1
    directions = _rotate(spec.camera_rotation, rays[None])
    origins = spec.camera_position[:, None, :].expand_as(directions)
    hits = cast(origins, directions, spec)
    points = origins + hits.t[..., None] * directions
    colour = _shade(spec, hits.surface, points, hits.normal)
    normals = _rotate(spec.camera_rotation.transpose(1, 2), hits.normal)

    def image_layout(values: Tensor) -> Tensor:  # (N, P, C) -> (N, C, H, W)
        return values.reshape(n, height, width, -1).permute(0, 3, 1, 2).contiguous()

    depth = hits.t * rays[:, 2]  # the ray parameter times the ray's z (which is 1)
    return {
        "image": image_layout(colour),
        "segmentation": hits.label.reshape(n, height, width),
        "depth": depth.reshape(n, 1, height, width),
        "normals": image_layout(normals),
        "camera": intrinsics.expand(n, 3, 3).clone(),
    }


def render_spec(
    spec: SceneSpec,
    height: int,
    width: int,
    *,
    fov_degrees: float = 60.0,
    texture_noise: float = 0.0,
    invalid_depth: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Render the scenes of ``spec`` through their cameras, one ray per pixel centre.

    ``texture_noise`` (per-pixel colour noise std) and ``invalid_depth`` (share of depth
    pixels set to 0) draw from ``generator`` (when None, a fresh ``torch.Generator()``, which
    starts from torch's fixed default seed); with both 0 the output is a pure function of
    ``spec``. Returns the keys and shapes of
    :func:`render_scenes`. Renders all N scenes in one go: chunk a large N yourself, as
    :func:`render_scenes` does.
    """
    generator = torch.Generator() if generator is None else generator
    out = _render(spec, height, width, fov_degrees)
    if texture_noise > 0:
        noise = torch.randn(out["image"].shape, generator=generator)
        out["image"] = out["image"] + texture_noise * noise
    out["image"] = out["image"].clamp(0.0, 1.0)
    if invalid_depth > 0:
        holes = _holes(len(spec), height, width, invalid_depth, generator)
        out["depth"] = out["depth"].masked_fill(holes[:, None], 0.0)
    return out


def _uniform(
    low: Tensor | float, high: Tensor | float, shape: tuple[int, ...], g: torch.Generator
) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=g)


def _mixed_colour(tendency: Tensor, shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    """(*shape, 3) colours mixed from ``tendency`` (3,) and uniform random colours."""
    weight = _uniform(*_TENDENCY_WEIGHT, (*shape, 1), g)
    random = _uniform(*_COLOUR_RANGE, (*shape, 3), g)
    return weight * tendency + (1 - weight) * random


def _distance_to_walls(start: Tensor, angle: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Distance from (..., 2) ``start`` along ``angle`` (...) to the rectangle [low, high]."""
    direction = _safe(torch.stack([angle.cos(), angle.sin()], -1))
    bound = torch.where(direction > 0, high, low)
    return ((bound - start) / direction).min(dim=-1).values


def sample_scenes(
    n: int, *, generator: torch.Generator, max_objects: int = 4, fov_degrees: float = 60.0
) -> SceneSpec:
    """N random rooms, each with 1..max_objects objects (none if max_objects is 0) and a camera.

    Rooms are 4-8 m wide and deep and 2.5-3.5 m high. The camera stands 1.5 m or more from the
    walls, 1.4-1.6 m high, at a random yaw, pitched -23 to +3 degrees and rolled up to 5 degrees.
    Objects (boxes, turned or not, spheres and cylinders, with horizontal bounding radii of
    0.2-0.5 m) stand in the camera's horizontal field of view (``fov_degrees``), usually 1 m or
    more from it (never under 0.4 m) and 0.05 m or more from the walls, on the floor or (a
    quarter of them) floating; they may overlap one another.
    """
    g, m = generator, max_objects
    sides = [_uniform(*_ROOM_SIDE, (n,), g) for _ in range(2)]
    room = torch.stack([*sides, _uniform(*_ROOM_HEIGHT, (n,), g)], -1)
    low = torch.full((n, 2), _CAMERA_MARGIN)
    floor_xy = _uniform(low, room[:, :2] - _CAMERA_MARGIN, (n, 2), g)
    camera = torch.cat([floor_xy, _uniform(*_CAMERA_HEIGHT, (n, 1), g)], -1)
    camera_yaw = _uniform(0.0, 2 * math.pi, (n,), g)
    rotation = camera_rotation(camera_yaw, _uniform(*_PITCH, (n,), g), _uniform(*_ROLL, (n,), g))

    count = torch.randint(1, m + 1, (n, 1), generator=g) if m else torch.zeros(n, 1)
    kind = BOX + torch.randint(0, 3, (n, m), generator=g)
    kind = torch.where(torch.arange(m) < count, kind, EMPTY)
    footprint = _uniform(*_FOOTPRINT, (n, m), g)
    spread = _uniform(math.pi / 8, 3 * math.pi / 8, (n, m), g)  # a box's aspect
    half_height = _uniform(*_HALF_HEIGHT, (n, m), g)
    box = torch.stack([footprint * spread.cos(), footprint * spread.sin(), half_height], -1)
    sphere = footprint[..., None].expand(n, m, 3)
    cylinder = torch.stack([footprint, footprint, half_height], -1)
    half = torch.where(
        (kind == BOX)[..., None], box, torch.where((kind == SPHERE)[..., None], sphere, cylinder)
    )
    turned = torch.rand(n, m, generator=g) < 0.5
    yaw = torch.where(turned & (kind == BOX), _uniform(0.0, math.pi / 2, (n, m), g), 0.0)

    half_fov = math.radians(fov_degrees) / 2
    angle = camera_yaw[:, None] + _uniform(-0.9 * half_fov, 0.9 * half_fov, (n, m), g)
    margin = (footprint + _WALL_GAP)[..., None]
    reach = _distance_to_walls(
        camera[:, None, :2].expand(n, m, 2), angle, margin, room[:, None, :2] - margin
    )
    # reach >= footprint + _CAMERA_GAP + _WALL_GAP, since the camera margin is large enough
    near = torch.minimum(footprint + _USUAL_GAP, reach)
    distance = _uniform(near, reach, (n, m), g)
    xy = camera[:, None, :2] + distance[..., None] * torch.stack([angle.cos(), angle.sin()], -1)
    rest = half[..., 2]
    floating = torch.rand(n, m, generator=g) < _FLOAT_SHARE
    lifted = _uniform(rest + _FLOAT_GAP, room[:, None, 2] - rest - _FLOAT_GAP, (n, m), g)
    centre = torch.cat([xy, torch.where(floating, lifted, rest)[..., None]], -1)

    tendency = torch.tensor(_ROOM_TENDENCY)
    wall = _mixed_colour(tendency[1], (n, 1), g)
    walls = wall + _uniform(-_WALL_JITTER, _WALL_JITTER, (n, 4, 3), g)
    floor, ceiling = _mixed_colour(tendency[0], (n, 1), g), _mixed_colour(tendency[2], (n, 1), g)
    room_colour = torch.cat([walls, floor, ceiling], 1).clamp(0.0, 1.0)
    object_colour = _uniform(*_COLOUR_RANGE, (n, m, 3), g)
    light_xy = _uniform(0.5, room[:, :2] - 0.5, (n, 2), g)
    light = torch.cat([light_xy, room[:, 2:] - 0.05], -1)
    return SceneSpec(
        room=room,
        camera_position=camera,
        camera_rotation=rotation,
        kind=kind,
        centre=centre,
        half_size=half,
        yaw=yaw,
        room_colour=room_colour,
        object_colour=object_colour,
        light_position=light,
        ambient=_uniform(*_AMBIENT, (n,), g),
    )


def _as_int(name: str, value: object, minimum: int, what: str) -> int:
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < minimum:
        raise ValueError(f"{name}={value!r}; expected {what} >= {minimum}")
    return number


def _check_arguments(
    n: object,
    height: object,
    width: object,
    max_objects: object,
    invalid_depth: float,
    fov_degrees: float,
    texture_noise: float,
) -> tuple[int, int, int, int]:
    counts = (
        _as_int("n", n, 1, "a number of scenes"),
        _as_int("height", height, 4, "pixels"),
        _as_int("width", width, 4, "pixels"),
        _as_int("max_objects", max_objects, 0, "a number of objects"),
    )
    if not 0 <= invalid_depth < 1:
        raise ValueError(f"invalid_depth={invalid_depth!r}; expected a share in [0, 1)")
    if not 10 < fov_degrees < 150:
        raise ValueError(f"fov_degrees={fov_degrees!r}; expected degrees in (10, 150)")
    if not 0 <= texture_noise < math.inf:
        raise ValueError(f"texture_noise={texture_noise!r}; expected a noise std >= 0")
    return counts


def render_scenes(
    n: int,
    height: int = 48,
    width: int = 64,
    *,
    seed: int = 0,
    max_objects: int = 4,
    invalid_depth: float = 0.05,
    fov_degrees: float = 60.0,
    texture_noise: float = 0.05,
) -> dict[str, torch.Tensor]:
    """Render ``n`` random rooms (see :func:`sample_scenes`), deterministic for ``seed``.

    Args:
        n: number of scenes (>= 1).
        height, width: image size in pixels (>= 4 each).
        seed: seeds a ``torch.Generator``; the same arguments give identical tensors.
        max_objects: each scene holds 1..max_objects objects, uniformly (0: an empty room).
        invalid_depth: share of each depth map, in [0, 1), set to 0 (blobs and speckle, like a
            depth sensor's holes). Only depth has holes, and the other outputs do not depend
            on this share.
        fov_degrees: horizontal field of view, in (10, 150).
        texture_noise: std of the per-pixel Gaussian noise added to the shaded colours.

    Returns:
        ``image`` (N, 3, H, W) float32 RGB in [0, 1]; ``segmentation`` (N, H, W) int64 indices
        into :data:`CLASSES`; ``depth`` (N, 1, H, W) float32 metric z-depth, 0 where invalid;
        ``normals`` (N, 3, H, W) float32 unit camera-frame normals facing the camera;
        ``camera`` (N, 3, 3) float32 intrinsics K. Conventions in the module docstring.

    Raises:
        ValueError: for an argument out of its range.
    """
    n, height, width, max_objects = _check_arguments(
        n, height, width, max_objects, invalid_depth, fov_degrees, texture_noise
    )
    generator = torch.Generator().manual_seed(seed)
    hole_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    spec = sample_scenes(n, generator=generator, max_objects=max_objects, fov_degrees=fov_degrees)
    # Noise and holes are drawn for all scenes at once, so that the chunk size changes nothing,
    # and holes from a generator of their own, so that their share changes nothing else.
    image = torch.zeros(n, 3, height, width)
    if texture_noise > 0:
        image += texture_noise * torch.randn(image.shape, generator=generator)
    holes = torch.Generator().manual_seed(hole_seed)
    outputs: dict[str, Tensor] = {"image": image}
    chunk = max(1, _CHUNK_RAYS // (height * width))
    for start in range(0, n, chunk):
        part = _render(spec[start : start + chunk], height, width, fov_degrees)
        rows = slice(start, start + len(part["image"]))
        image[rows] += part.pop("image")
        for key, values in part.items():
            if key not in outputs:  # filled in place: no second copy of the whole output
                outputs[key] = values.new_empty((n, *values.shape[1:]))
            outputs[key][rows] = values
    image.clamp_(0.0, 1.0)
    if invalid_depth > 0:
        mask = _holes(n, height, width, invalid_depth, holes)
        outputs["depth"].masked_fill_(mask[:, None], 0.0)
    return {key: outputs[key] for key in ("image", "segmentation", "depth", "normals", "camera")}
