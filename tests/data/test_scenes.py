"""scenes: shapes, determinism, the geometry against analytic answers and against itself."""

import math

import pytest
import torch

import attnmtl.data.scenes as scenes
from attnmtl.data.scenes import (
    CLASSES,
    SceneSpec,
    camera_intrinsics,
    camera_rotation,
    cast,
    render_scenes,
    render_spec,
)

N, H, W = 64, 48, 64
FLOOR, WALL, CEILING, BOX, SPHERE, CYLINDER = (
    CLASSES.index(name) for name in ("floor", "wall", "ceiling", "box", "sphere", "cylinder")
)
LEVEL = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # looks along +x


@pytest.fixture(scope="module")
def rendered():
    return render_scenes(N, H, W, seed=0)


def pixel_rays(camera: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 3, H, W) camera-frame rays K^-1 [j + 0.5, i + 0.5, 1], computed independently."""
    v, u = torch.meshgrid(
        torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij"
    )  # (H, W)
    pixels = torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1).double()  # (3, P)
    return (torch.linalg.inv(camera.double()) @ pixels).reshape(-1, 3, height, width)


def test_shapes_dtypes_and_ranges(rendered):
    assert CLASSES == ("floor", "wall", "ceiling", "box", "sphere", "cylinder")
    assert set(rendered) == {"image", "segmentation", "depth", "normals", "camera"}
    image, seg, depth = rendered["image"], rendered["segmentation"], rendered["depth"]
    assert image.shape == (N, 3, H, W) and image.dtype == torch.float32
    assert seg.shape == (N, H, W) and seg.dtype == torch.int64
    assert depth.shape == (N, 1, H, W) and depth.dtype == torch.float32
    assert rendered["normals"].shape == (N, 3, H, W)
    assert rendered["normals"].dtype == torch.float32
    assert rendered["camera"].shape == (N, 3, 3)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert float(image.std()) > 0.05  # not a constant picture
    assert int(seg.min()) >= 0 and int(seg.max()) < len(CLASSES)
    valid = depth[depth > 0]
    assert float(depth.min()) == 0.0 and float(valid.min()) > 0.3
    assert float(valid.max()) < math.hypot(8.0, 8.0)  # no farther than the largest room's corner
    assert torch.isfinite(rendered["normals"]).all()


def test_intrinsics_follow_the_field_of_view(rendered):
    focal = 32 / math.tan(math.radians(30))
    expected = torch.tensor([[focal, 0, 32], [0, focal, 24], [0, 0, 1]])
    assert torch.allclose(rendered["camera"], expected.expand(N, 3, 3))
    assert torch.allclose(camera_intrinsics(48, 64, 60.0), expected)


def test_same_seed_same_scenes_other_seed_other_scenes():
    first, again = render_scenes(6, 16, 20, seed=3), render_scenes(6, 16, 20, seed=3)
    other = render_scenes(6, 16, 20, seed=4)
    for key in first:
        assert torch.equal(first[key], again[key]), key
    for key in ("image", "segmentation", "depth", "normals"):
        assert not torch.equal(first[key], other[key]), key


def test_chunk_size_changes_nothing(monkeypatch):
    whole = render_scenes(7, 12, 16, seed=5)
    monkeypatch.setattr(scenes, "_CHUNK_RAYS", 2 * 12 * 16)  # chunks of 2 scenes
    chunked = render_scenes(7, 12, 16, seed=5)
    for key in whole:
        assert torch.equal(whole[key], chunked[key]), key


def test_normals_are_unit_and_face_the_camera(rendered):
    normals = rendered["normals"]
    assert torch.allclose(normals.norm(dim=1), torch.ones(N, H, W), atol=1e-5)
    rays = pixel_rays(rendered["camera"], H, W)
    facing = (normals.double() * rays).sum(dim=1)
    assert bool((facing < 0).all()), float(facing.max())
    # Not trivially true: walls seen from the side and floors seen from above face other ways.
    assert float(normals[:, 0].abs().max()) > 0.9 and float(normals[:, 1].min()) < -0.9


def test_normals_agree_with_depth_on_planar_interiors(rendered):
    depth = rendered["depth"][:, 0].double()  # (N, H, W)
    points = depth[:, None] * pixel_rays(rendered["camera"], H, W)  # (N, 3, H, W) camera frame
    seg, normals = rendered["segmentation"], rendered["normals"].double()

    def shifts(values):  # the 3x3 neighbours of the interior pixels, (9, ..., H - 2, W - 2)
        return torch.stack(
            [
                values[..., 1 + di : H - 1 + di, 1 + dj : W - 1 + dj]
                for di in (-1, 0, 1)
                for dj in (-1, 0, 1)
            ]
        )

    centre = (slice(None), slice(None), slice(1, H - 1), slice(1, W - 1))
    same_label = (shifts(seg) == seg[:, 1:-1, 1:-1]).all(0)
    valid = (shifts(depth) > 0).all(0)
    flat = ((shifts(normals) * normals[centre]).sum(2) > math.cos(math.radians(0.5))).all(0)
    keep = same_label & valid & flat  # (N, H - 2, W - 2)
    assert float(keep.float().mean()) > 0.5

    down = points[:, :, 2:, 1:-1] - points[:, :, :-2, 1:-1]
    right = points[:, :, 1:-1, 2:] - points[:, :, 1:-1, :-2]
    estimate = torch.nn.functional.normalize(torch.cross(down, right, dim=1), dim=1)
    cosine = (estimate * normals[centre]).sum(1).clamp(-1, 1)[keep]
    angle = torch.rad2deg(torch.acos(cosine))
    assert float(angle.median()) < 2.0
    assert float(torch.quantile(angle, 0.95)) < 10.0


def test_every_class_appears(rendered):
    counts = torch.bincount(rendered["segmentation"].flatten(), minlength=len(CLASSES))
    assert bool((counts > 0).all()), dict(zip(CLASSES, counts.tolist(), strict=True))


def test_objects_come_and_go_with_max_objects():
    empty = render_scenes(8, 16, 20, max_objects=0)["segmentation"]
    assert int(empty.max()) <= CEILING
    assert int(render_scenes(8, 16, 20, max_objects=3)["segmentation"].max()) > CEILING


@pytest.mark.parametrize("share", [0.05, 0.2])
def test_invalid_depth_share_and_only_depth_has_holes(share):
    holed = render_scenes(16, H, W, seed=2, invalid_depth=share)
    clean = render_scenes(16, H, W, seed=2, invalid_depth=0.0)
    hole = holed["depth"] == 0
    per_image = hole.float().mean(dim=(1, 2, 3))
    assert float((per_image - share).abs().max()) < 0.03
    assert not bool((clean["depth"] == 0).any())
    assert torch.equal(holed["depth"][~hole], clean["depth"][~hole])
    for key in ("image", "segmentation", "normals"):
        assert torch.equal(holed[key], clean[key]), key
    # Holes come in blobs: far more hole pixels have a hole beside them than at random.
    h = hole[:, 0]
    beside = torch.zeros_like(h)
    beside[:, 1:] |= h[:, :-1]
    beside[:, :-1] |= h[:, 1:]
    beside[:, :, 1:] |= h[:, :, :-1]
    beside[:, :, :-1] |= h[:, :, 1:]
    at_random = 1 - (1 - share) ** 4
    assert float(beside[h].float().mean()) > min(0.9, 2 * at_random)


# A hand-built room: 8 m along x, 6 m along y, 3 m high; the camera 1.5 m high at (2, 3).
ROOM = torch.tensor([[8.0, 6.0, 3.0]])
EYE = torch.tensor([[2.0, 3.0, 1.5]])
HS, WS = 49, 65  # odd, so the centre pixel's ray is the optical axis
FOCAL = 32.5 / math.tan(math.radians(30))


def one_object(kind, centre, half, yaw=0.0, eye=EYE, rotation=LEVEL):
    return SceneSpec.create(
        ROOM,
        eye,
        rotation[None] if rotation.dim() == 2 else rotation,
        kind=torch.tensor([[kind]]),
        centre=torch.tensor([centre]).reshape(1, 1, 3),
        half_size=torch.tensor([half]).reshape(1, 1, 3),
        yaw=torch.tensor([[yaw]]),
    )


def test_camera_rotation_convention():
    assert torch.allclose(camera_rotation(*torch.zeros(3, 1)), LEVEL[None], atol=1e-7)
    yaw, pitch, roll = torch.tensor([0.7]), torch.tensor([-0.2]), torch.tensor([0.1])
    rotation = camera_rotation(yaw, pitch, roll)[0]
    assert torch.allclose(rotation.T @ rotation, torch.eye(3), atol=1e-6)
    assert torch.isclose(torch.det(rotation), torch.tensor(1.0))
    forward = torch.tensor([math.cos(0.7) * math.cos(0.2), math.sin(0.7) * math.cos(0.2)])
    assert torch.allclose(rotation[:, 2], torch.cat([forward, -torch.tensor([math.sin(0.2)])]))


@pytest.mark.parametrize("pose", [(0.0, 0.0, 0.0), (0.7, -0.2, 0.1)])
def test_sphere_on_the_optical_axis(pose):
    rotation = camera_rotation(*torch.tensor(pose)[:, None])
    centre = EYE[0] + 3.0 * rotation[0, :, 2]  # 3 m straight ahead
    spec = one_object(SPHERE, centre.tolist(), [0.5] * 3, rotation=rotation)
    out = render_spec(spec, HS, WS)
    assert out["segmentation"][0, 24, 32] == SPHERE
    assert math.isclose(float(out["depth"][0, 0, 24, 32]), 3.0 - 0.5, rel_tol=1e-5)
    assert torch.allclose(out["normals"][0, :, 24, 32], torch.tensor([0.0, 0.0, -1.0]), atol=1e-5)
    # The sphere's silhouette: a disc of angular radius asin(r / d) about the centre pixel.
    radius = FOCAL * math.tan(math.asin(0.5 / 3.0))
    area = float((out["segmentation"][0] == SPHERE).sum())
    assert abs(area - math.pi * radius**2) < 0.1 * math.pi * radius**2


def test_floor_ceiling_and_wall_pixels():
    out = render_spec(one_object(SPHERE, [5.0, 3.0, 1.5], [0.5] * 3), HS, WS)
    seg, depth, normals = out["segmentation"][0], out["depth"][0, 0], out["normals"][0]
    # Bottom row, centre column: the ray (0, s, 1) in the camera frame is (1, 0, -s) in the world
    # and meets the floor after |(1, 0, -s)| * 1.5 / s metres, at cos = 1 / |(1, 0, -s)| to the
    # optical axis: z-depth 1.5 / s. The top row meets the ceiling (1.5 m above) the same way.
    slope = (48.5 - 24.5) / FOCAL
    ray = math.hypot(1.0, slope)
    distance = 1.5 * ray / slope
    for row, label, normal in [(48, FLOOR, [0.0, -1.0, 0.0]), (0, CEILING, [0.0, 1.0, 0.0])]:
        assert seg[row, 32] == label
        assert math.isclose(float(depth[row, 32]), distance / ray, rel_tol=1e-5)
        assert torch.allclose(normals[:, row, 32], torch.tensor(normal), atol=1e-5)
    # Middle row, first column: the ray (-s, 0, 1) is (1, s, 0) in the world; it meets the wall
    # y = 6 after 3 / s (along x that is 2 + 3 / s < 8) and the wall faces -y: +x in the camera.
    slope = (32.5 - 0.5) / FOCAL
    assert seg[24, 0] == WALL
    assert math.isclose(float(depth[24, 0]), 3.0 / slope, rel_tol=1e-5)
    assert torch.allclose(normals[:, 24, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)


@pytest.mark.parametrize(
    ("yaw", "offset"), [(0.0, 0.0), (math.pi / 2, 0.0), (math.pi / 4, 0.0), (0.3, 0.3), (0.3, -0.3)]
)
def test_box_turned_about_the_vertical(yaw, offset):
    """A box with half sides (0.3, 0.6, 0.4), 3 m ahead and ``offset`` to the left (+y).

    In the box's frame, turned by ``yaw`` counter-clockwise seen from above, the optical axis
    (world points (x, -offset) about the centre) has local x = cos(yaw) x - sin(yaw) offset, so
    it meets the face local x = -0.3 at x = (sin(yaw) offset - 0.3) / cos(yaw) (local y is
    inside the face for these yaws). At yaw pi / 2 it meets the face local y = +0.6 instead, 0.6
    before the centre. The face normal (-1, 0, 0) turned by yaw is (-cos, -sin, 0) in the world,
    that is (sin, 0, -cos) in the camera frame (camera x is world -y, camera z world +x).
    """
    spec = one_object(BOX, [5.0, 3.0 + offset, 1.5], [0.3, 0.6, 0.4], yaw=yaw)
    out = render_spec(spec, HS, WS)
    c, s = math.cos(yaw), math.sin(yaw)
    if yaw == math.pi / 2:
        front, normal = 0.6, [0.0, 0.0, -1.0]
    else:
        front, normal = (0.3 - s * offset) / c, [s, 0.0, -c]
    assert out["segmentation"][0, 24, 32] == BOX
    assert math.isclose(float(out["depth"][0, 0, 24, 32]), 3.0 - front, rel_tol=1e-5)
    assert torch.allclose(out["normals"][0, :, 24, 32], torch.tensor(normal), atol=1e-5)


def test_cast_cylinder_cap_side_and_over_it():
    spec = one_object(CYLINDER, [5.0, 3.0, 1.0], [0.4, 0.4, 0.5])
    origins = torch.tensor([[[5.1, 3.1, 2.8], [2.0, 3.2, 1.0], [2.0, 3.0, 1.6]]])
    directions = torch.tensor([[[0.0, 0.0, -2.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    hits = cast(origins, directions, spec)
    side = 5.0 - math.sqrt(0.4**2 - 0.2**2)
    expected_t = torch.tensor([[(2.8 - 1.5) / 2.0, side - 2.0, 6.0]])
    assert torch.allclose(hits.t, expected_t, rtol=1e-6)
    assert hits.label.tolist() == [[CYLINDER, CYLINDER, WALL]]
    expected_normal = [[0.0, 0.0, 1.0], [(side - 5.0) / 0.4, 0.2 / 0.4, 0.0], [-1.0, 0.0, 0.0]]
    assert torch.allclose(hits.normal, torch.tensor([expected_normal]), atol=1e-5)
    assert hits.surface.tolist() == [[6, 6, 1]]  # object slot 0; the wall x = 8


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n": 0}, r"n=0; expected a number of scenes >= 1"),
        ({"height": 3}, r"height=3; expected pixels >= 4"),
        ({"width": 2.5}, r"width=2.5; expected pixels >= 4"),
        ({"invalid_depth": 1.5}, r"invalid_depth=1.5; expected a share in \[0, 1\)"),
        ({"invalid_depth": -0.1}, r"invalid_depth=-0.1; expected a share"),
        ({"max_objects": -1}, r"max_objects=-1; expected a number of objects >= 0"),
        ({"fov_degrees": 150}, r"fov_degrees=150; expected degrees in \(10, 150\)"),
        ({"fov_degrees": 10.0}, r"fov_degrees=10.0; expected degrees"),
        ({"texture_noise": -0.01}, r"texture_noise=-0.01; expected a noise std >= 0"),
    ],
)
def test_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        render_scenes(**{"n": 2, **arguments})
