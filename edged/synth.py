"""Synthetic RoboCup scenes with ground truth, as a robot's head camera sees them.

`render(seed, index, width, height)` is a pure function of its arguments: frame `index`
of sequence `seed`. Consecutive indices of one seed follow a smooth camera path (a
walking robot scanning with its head), so a run of indices looks like video.

Rendering works in two layers. The field (grass, lines, the floor around the carpet) is
drawn once per seed as a top-down texture at 1 cm per pixel and warped into the camera
with the ground-plane homography; labels are warped the same way with nearest
neighbour, so image and ground truth can never disagree. Objects (balls, goalposts,
robots) are billboards projected from world coordinates and painted far to near, which
gives occlusion for free; an id buffer tells how much of each object stays visible.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

CLASS_NAMES: tuple[str, ...] = ("ball", "goalpost", "robot")
SEG_CLASS_NAMES: tuple[str, ...] = ("background", "lines", "field")

# Field geometry (metres), RoboCup KidSize-like.
FIELD_LENGTH = 9.0
FIELD_WIDTH = 6.0
BORDER = 1.0
LINE_WIDTH = 0.08
GOAL_WIDTH = 2.6
GOAL_AREA = (1.0, 3.0)
PENALTY_AREA = (2.0, 5.0)
CIRCLE_DIAMETER = 1.5
BALL_RADIUS = 0.08
POST_RADIUS = 0.05
POST_HEIGHT = 1.1

TEX_RES = 0.01  # metres per texel of the top-down field texture
CARPET_X = FIELD_LENGTH / 2 + BORDER
CARPET_Y = FIELD_WIDTH / 2 + BORDER
FLOOR_MARGIN = 3.0  # floor drawn around the carpet, beyond it the texture border


@dataclass(frozen=True, slots=True)
class Scene:
    """One rendered frame and its ground truth."""

    image: np.ndarray  # HxWx3 uint8, BGR
    segmentation: np.ndarray  # HxW uint8: 0 background, 1 lines, 2 field
    boxes: np.ndarray  # Kx4 float32, x1 y1 x2 y2 in image pixels
    classes: np.ndarray  # K int64: 0 ball, 1 goalpost, 2 robot
    # K int64: each object's identity, the same in every frame of the sequence (see
    # `object_id`): the ground truth for tracking. None only for Scenes built by hand.
    ids: np.ndarray | None = None


# Identities of the objects of a sequence, stable over its frames: the ball is 1, the four
# goalposts 2..5, robot i of the layout 6 + i. (The per-frame draw order, far to near, is
# not an identity: it changes as the camera moves.)
BALL_ID = 1
FIRST_POST_ID = 2
FIRST_ROBOT_ID = 6


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True, slots=True)
class _Robot:
    x: float
    y: float
    vx: float
    vy: float
    height: float
    width: float
    sprites: tuple[tuple[np.ndarray, np.ndarray], ...]  # (bgr, alpha) pose frames


@dataclass(frozen=True, slots=True)
class _Layout:
    texture: np.ndarray  # top-down BGR
    labels: np.ndarray  # top-down labels
    backdrop: np.ndarray  # panorama above the horizon, BGR
    noise: np.ndarray  # int16 sensor-noise tile
    cam_height: float
    hfov: float
    path: np.ndarray  # parameters of the smooth camera path
    robots: tuple[_Robot, ...]
    ball: tuple[float, float, float, float, float]  # x, y, amplitude x, amplitude y, phase
    ball_colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    post_color: tuple[int, int, int]
    light: np.ndarray  # lighting path parameters


def _world_to_tex(x: np.ndarray | float, y: np.ndarray | float) -> tuple:
    ox = CARPET_X + FLOOR_MARGIN
    oy = CARPET_Y + FLOOR_MARGIN
    return (np.asarray(x) + ox) / TEX_RES, (oy - np.asarray(y)) / TEX_RES


def _draw_field(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    w = int(round(2 * (CARPET_X + FLOOR_MARGIN) / TEX_RES))
    h = int(round(2 * (CARPET_Y + FLOOR_MARGIN) / TEX_RES))
    labels = np.zeros((h, w), np.uint8)
    floor = np.array(rng.uniform(60, 150, 3), np.float32)
    tex = np.empty((h, w, 3), np.float32)
    tex[:] = floor
    # carpet: green with mowing stripes and low-frequency blotches
    x0, y0 = _world_to_tex(-CARPET_X, CARPET_Y)
    x1, y1 = _world_to_tex(CARPET_X, -CARPET_Y)
    x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
    green = np.array([rng.uniform(20, 70), rng.uniform(110, 180), rng.uniform(20, 70)], np.float32)
    cw, ch = x1 - x0, y1 - y0
    stripe_px = int(rng.uniform(0.5, 1.2) / TEX_RES)
    cols = (np.arange(cw) // stripe_px) % 2
    stripe = np.where(cols[None, :, None] == 1, 1.0 + rng.uniform(0.05, 0.15), 1.0)
    blot = cv2.resize(rng.uniform(0.85, 1.15, (8, 12)).astype(np.float32), (cw, ch))
    grain = cv2.resize(rng.uniform(0.9, 1.1, (ch // 4, cw // 4)).astype(np.float32), (cw, ch),
                       interpolation=cv2.INTER_NEAREST)
    # row bands: the same float64 arithmetic as one expression, without its 40 MB temporary
    shade = green * stripe
    gain = blot * grain
    for r in range(0, ch, 64):
        tex[y0 + r:min(y0 + r + 64, y1), x0:x1] = shade * gain[r:r + 64, :, None]
    labels[y0:y1, x0:x1] = 2

    line_img = np.zeros((h, w), np.uint8)
    lw = max(1, int(round(LINE_WIDTH / TEX_RES)))
    shift = 4
    scale = 1 << shift

    def pt(x: float, y: float) -> tuple[int, int]:
        u, v = _world_to_tex(x, y)
        return int(round(float(u) * scale)), int(round(float(v) * scale))

    def seg(a: tuple[float, float], b: tuple[float, float]) -> None:
        cv2.line(line_img, pt(*a), pt(*b), 255, lw, cv2.LINE_8, shift)

    fx, fy = FIELD_LENGTH / 2, FIELD_WIDTH / 2
    for a, b in [((-fx, -fy), (fx, -fy)), ((-fx, fy), (fx, fy)), ((-fx, -fy), (-fx, fy)),
                 ((fx, -fy), (fx, fy)), ((0, -fy), (0, fy))]:
        seg(a, b)
    for side in (-1, 1):
        for depth, width in (GOAL_AREA, PENALTY_AREA):
            gx, ix = side * fx, side * (fx - depth)
            seg((gx, -width / 2), (ix, -width / 2))
            seg((gx, width / 2), (ix, width / 2))
            seg((ix, -width / 2), (ix, width / 2))
        px = side * (fx - 1.5)
        seg((px - 0.05, 0), (px + 0.05, 0))
    seg((-0.05, 0), (0.05, 0))
    cu, cv_ = pt(0, 0)
    cv2.circle(line_img, (cu, cv_), int(CIRCLE_DIAMETER / 2 / TEX_RES * scale), 255, lw, cv2.LINE_8,
               shift)
    on_line = line_img > 0
    white = rng.uniform(200, 250)
    tex[on_line] = white * rng.uniform(0.93, 1.0, 3).astype(np.float32)
    labels[on_line] = 1
    return np.clip(tex, 0, 255, out=tex).astype(np.uint8), labels


def _draw_backdrop(rng: np.random.Generator) -> np.ndarray:
    h, w = 400, 2400
    top = rng.uniform(40, 230, 3)
    bottom = rng.uniform(40, 230, 3)
    ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = (top * (1 - ramp) + bottom * ramp).astype(np.float32) * np.ones((1, w, 1), np.float32)
    for _ in range(int(rng.integers(12, 30))):
        x = int(rng.integers(0, w))
        bw = int(rng.integers(20, 260))
        y = int(rng.integers(h // 3, h))
        bh = int(rng.integers(10, 150))
        color = rng.uniform(0, 255, 3)
        cv2.rectangle(img, (x, y - bh), (x + bw, y), color.tolist(), -1)
    for _ in range(int(rng.integers(3, 10))):  # people / stands silhouettes
        x = int(rng.integers(0, w))
        axes = (int(rng.integers(8, 25)), int(rng.integers(40, 120)))
        cv2.ellipse(img, (x, h - 20), axes, 0, 180, 360, rng.uniform(0, 255, 3).tolist(), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _robot_sprites(rng: np.random.Generator) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """A few pose frames of one procedurally drawn humanoid (64x128, with alpha)."""
    body = rng.uniform(20, 240, 3).tolist()
    limb = rng.uniform(20, 240, 3).tolist()
    marker = [(40, 40, 220), (220, 80, 30), (rng.uniform(0, 255), rng.uniform(0, 255),
                                             rng.uniform(0, 255))][int(rng.integers(0, 3))]
    head = rng.uniform(20, 240, 3).tolist()
    stance = rng.uniform(0.0, 0.35)
    frames = []
    phase0 = rng.uniform(0, math.tau)
    for k in range(4):
        img = np.zeros((128, 64, 3), np.uint8)
        swing = 0.4 * math.sin(phase0 + k * math.pi / 2)
        arm_up = rng.uniform(-0.3, 1.2) if k == 0 else 0.2 * k
        crouch = stance
        hip_y = int(78 + 12 * crouch)
        # legs
        for side, s in ((-1, swing), (1, -swing)):
            hx, hy = 32 + side * 8, hip_y
            fx = int(hx + 45 * math.sin(s) + side * 4 * crouch)
            cv2.line(img, (hx, hy), (fx, 124), limb, 9)
            cv2.rectangle(img, (fx - 7, 119), (fx + 7, 127), limb, -1)
        # torso
        cv2.rectangle(img, (18, 36 + int(12 * crouch)), (46, hip_y + 4), body, -1)
        cv2.rectangle(img, (24, 46 + int(12 * crouch)), (40, 58 + int(12 * crouch)), marker, -1)
        # arms
        for side in (-1, 1):
            sx, sy = 32 + side * 16, 40 + int(12 * crouch)
            ang = math.pi - arm_up if side > 0 else arm_up
            ex = int(sx + side * 6 + 34 * math.cos(ang) * side * side)
            ey = int(sy + 34 * math.cos(arm_up))
            cv2.line(img, (sx, sy), (ex, ey), limb, 7)
        # head
        cv2.circle(img, (32, 22 + int(12 * crouch)), 12, head, -1)
        cy = int(12 * crouch)
        cv2.rectangle(img, (24, 18 + cy), (40, 24 + cy), (20, 20, 20), -1)
        alpha = (img.max(axis=2) > 0).astype(np.uint8)
        # paint pure black pixels of the sprite to a dark grey so alpha stays the drawn shape
        img[alpha.astype(bool) & (img.max(axis=2) < 10)] = 15
        frames.append((img, alpha))
    return tuple(frames)


LAYOUT_BUILDS = [0]  # layouts built since import (tests count rebuilds with it)


def _layout(seed: int) -> _Layout:
    """The seed's layout, from its `Renderer` (built once while anything holds it)."""
    return renderer(seed).layout


def _trim_heap() -> None:
    """Give the build's freed temporaries back to the OS (glibc only; else nothing).

    A build allocates ~30 MB of short-lived float images; freed in a thread's malloc
    arena they stay resident, so 32 cameras building in parallel kept ~0.6 GB extra."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def _build_layout(seed: int, crowd: int = 0) -> _Layout:
    try:
        lay = _draw_layout(seed)
        if crowd:
            lay = _add_crowd(lay, seed, crowd)
        return lay
    finally:
        _trim_heap()


def _add_crowd(lay: _Layout, seed: int, crowd: int) -> _Layout:
    """The layout with `crowd` more robots walking on the field, after its own ones.

    Drawn from a random stream of their own, so the seed's layout (and every frame of
    it with `crowd=0`) stays as it was. They walk faster than the layout's robots (up to
    0.6 m/s at 30 fps) and in every direction, so they cross, occlude each other and
    leave the camera's view and come back: sequences to score trackers on."""
    rng = np.random.default_rng([seed, 0xC40D])
    extra = []
    for _ in range(crowd):
        h = float(rng.uniform(0.4, 0.9))
        speed = float(rng.uniform(0.0, 0.02))
        heading = float(rng.uniform(0, math.tau))
        extra.append(_Robot(
            x=float(rng.uniform(-FIELD_LENGTH / 2, FIELD_LENGTH / 2)),
            y=float(rng.uniform(-FIELD_WIDTH / 2, FIELD_WIDTH / 2)),
            vx=speed * math.cos(heading), vy=speed * math.sin(heading),
            height=h, width=h * 0.5, sprites=_robot_sprites(rng)))
    return dataclasses.replace(lay, robots=lay.robots + tuple(extra))


def _bgr(c: np.ndarray) -> tuple[int, int, int]:
    return int(c[0]), int(c[1]), int(c[2])


def _draw_layout(seed: int) -> _Layout:
    LAYOUT_BUILDS[0] += 1
    rng = np.random.default_rng([seed, 0x5EED])
    texture, labels = _draw_field(rng)
    backdrop = _draw_backdrop(rng)
    noise = rng.normal(0, 1, (256, 256, 3)).astype(np.float32)
    robots = []
    for _ in range(int(rng.integers(1, 7))):
        robots.append(_Robot(
            x=float(rng.uniform(-FIELD_LENGTH / 2, FIELD_LENGTH / 2)),
            y=float(rng.uniform(-FIELD_WIDTH / 2, FIELD_WIDTH / 2)),
            vx=float(rng.uniform(-0.01, 0.01)), vy=float(rng.uniform(-0.01, 0.01)),
            height=float(rng.uniform(0.4, 0.9)), width=0.0,
            sprites=_robot_sprites(rng)))
    robots = [_Robot(r.x, r.y, r.vx, r.vy, r.height, r.height * 0.5, r.sprites) for r in robots]
    ball = (float(rng.uniform(-3.5, 3.5)), float(rng.uniform(-2.5, 2.5)),
            float(rng.uniform(0, 1.5)), float(rng.uniform(0, 1.0)),
            float(rng.uniform(0, math.tau)))
    ball_colors = (_bgr(rng.uniform(200, 255, 3)), _bgr(rng.uniform(0, 80, 3)))
    if rng.uniform() < 0.3:  # an orange ball now and then
        ball_colors = ((30, 120, 240), (20, 60, 160))
    # camera path: a start position, walking direction and head-scan oscillation
    path = np.array([
        rng.uniform(-FIELD_LENGTH / 2, FIELD_LENGTH / 2),
        rng.uniform(-FIELD_WIDTH / 2, FIELD_WIDTH / 2),
        rng.uniform(0, math.tau),  # walking heading
        rng.uniform(0.002, 0.01),  # walking speed, m per frame
        rng.uniform(0.3, 1.1),  # head-scan amplitude (rad)
        rng.uniform(0.01, 0.04),  # head-scan rate (rad per frame)
        rng.uniform(0.15, 0.75),  # mean pitch (rad, down)
        rng.uniform(0.05, 0.25),  # pitch amplitude
        rng.uniform(0, math.tau),  # phase
        rng.uniform(0.003, 0.02),  # heading drift
    ])
    light = np.array([rng.uniform(0.65, 1.3), rng.uniform(0.0, 0.25), rng.uniform(0.005, 0.03),
                      rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08), rng.uniform(0, math.tau)])
    return _Layout(texture, labels, backdrop, noise, float(rng.uniform(0.35, 0.9)),
                   float(rng.uniform(math.radians(60), math.radians(90))), path, tuple(robots),
                   ball, ball_colors, _bgr(rng.uniform(200, 255, 3)), light)


# ----------------------------------------------------------------------------- camera


def _camera(lay: _Layout, index: int) -> tuple[np.ndarray, np.ndarray, float]:
    """World->camera rotation, camera centre, and the head's angular speed (rad/frame)."""
    p = lay.path
    t = float(index)

    def pose(t: float) -> tuple[float, float, float, float, float, float]:
        heading = p[2] + p[9] * 30 * math.sin(t / 300.0 + p[8])
        # walk inside the carpet: reflect position off the carpet bounds
        dist = p[3] * t
        x = p[0] + dist * math.cos(p[2])
        y = p[1] + dist * math.sin(p[2])
        lx, ly = FIELD_LENGTH / 2 + BORDER * 0.6, FIELD_WIDTH / 2 + BORDER * 0.6
        x = lx - abs((x + lx) % (4 * lx) - 2 * lx)
        y = ly - abs((y + ly) % (4 * ly) - 2 * ly)
        yaw = heading + p[4] * math.sin(p[5] * t + p[8])
        pitch = p[6] + p[7] * math.sin(p[5] * 0.7 * t + 1.3 * p[8])
        roll = 0.04 * math.sin(0.35 * t + p[8])  # walking sway
        bob = 0.01 * math.sin(0.7 * t)
        return x, y, yaw, pitch, roll, bob

    x, y, yaw, pitch, roll, bob = pose(t)
    x2, y2, yaw2, pitch2, _, _ = pose(t + 1)
    speed = abs(yaw2 - yaw) + abs(pitch2 - pitch)
    # camera axes in world: forward f, right r, down d
    cy_, sy_ = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    fwd = np.array([cy_ * cp, sy_ * cp, -sp])
    right0 = np.array([sy_, -cy_, 0.0])
    down0 = np.cross(fwd, right0)
    cr, sr = math.cos(roll), math.sin(roll)
    right = cr * right0 + sr * down0
    down = -sr * right0 + cr * down0
    rot = np.stack([right, down, fwd])  # rows: camera x, y, z axes in world coords
    centre = np.array([x, y, lay.cam_height + bob])
    return rot, centre, speed


def _intrinsics(lay: _Layout, width: int, height: int) -> np.ndarray:
    f = (width / 2) / math.tan(lay.hfov / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)


# ----------------------------------------------------------------------------- render


def _project(k: np.ndarray, rot: np.ndarray, centre: np.ndarray, pts: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    cam = (pts - centre) @ rot.T
    z = cam[..., 2]
    uv = (cam[..., :2] / np.maximum(z, 1e-6)[..., None]) * k[0, 0] + k[:2, 2]
    return uv, z


class Renderer:
    """One seed's layout and the per-size images derived from it, built once.

    A camera (`edged.capture.readers.synthetic.SyntheticSource`) holds its own renderer, so any
    number of cameras with different seeds never evict each other's layouts; memory is
    bounded by the renderers alive (about 10 MB per seed plus 2 to 16 MB per frame size
    in use, see docs/benchmarks.md). Cameras with the same seed share one (`renderer`).
    """

    def __init__(self, seed: int, crowd: int = 0) -> None:
        self.seed = int(seed)
        self.crowd = int(crowd)
        self.layout = _build_layout(self.seed, self.crowd)
        self._lock = threading.Lock()
        self._backdrops: dict[int, np.ndarray] = {}
        self._noise: dict[tuple[int, int], np.ndarray] = {}

    def render(self, index: int, width: int = 640, height: int = 480) -> Scene:
        """Frame `index` of this seed's sequence (same as `render(seed, index, ...)`)."""
        return _render(self, index, width, height)

    def backdrop_scaled(self, height: int) -> np.ndarray:
        """The backdrop panorama at the scale a frame of `height` rows shows it."""
        bd = self._backdrops.get(height)
        if bd is None:
            with self._lock:
                src = self.layout.backdrop
                scale = height / 300.0
                # the bit-exact bilinear kernel: INTER_LINEAR's 8-bit SIMD paths round
                # differently on x86 and arm64 (2% of these pixels differed by a level)
                bd = cv2.resize(src, (int(src.shape[1] * scale), int(src.shape[0] * scale)),
                                interpolation=cv2.INTER_LINEAR_EXACT)
                self._backdrops[height] = bd
        return bd

    def noise_field(self, height: int, width: int) -> np.ndarray:
        """The noise tile repeated to cover `height` x `width` (crops of it are shifts)."""
        nf = self._noise.get((height, width))
        if nf is None:
            with self._lock:
                nz = self.layout.noise
                reps = (height // nz.shape[0] + 1, width // nz.shape[1] + 1, 1)
                nf = np.ascontiguousarray(np.tile(nz, reps)[:height, :width])
                self._noise[(height, width)] = nf
        return nf


# Renderers alive anywhere, by seed (by (seed, crowd) with a crowd): a camera that holds
# one shares it with every other user of the seed; it goes away with its last holder.
_Key = int | tuple[int, int]
_live: weakref.WeakValueDictionary[_Key, Renderer] = weakref.WeakValueDictionary()
# Recently used by plain `render(seed, ...)` calls (training, evaluation): kept alive
# here, so a loop over a few seeds does not rebuild them. Cameras do not rely on it.
_RECENT = 8
_recent: OrderedDict[_Key, Renderer] = OrderedDict()
_registry_lock = threading.Lock()


_building: dict[_Key, threading.Lock] = {}  # seed -> held while its layout is built


def renderer(seed: int, crowd: int = 0) -> Renderer:
    """The seed's renderer: the live one if any holder has it, else a new one.

    Layouts of different seeds are built in parallel (about 0.2 s of CPU each); two
    callers wanting the same seed wait for one build. `crowd` adds that many walking
    robots to the seed's layout (see `_add_crowd`); 0 is the seed's own layout."""
    seed, crowd = int(seed), int(crowd)
    key: _Key = seed if crowd == 0 else (seed, crowd)
    with _registry_lock:
        r = _live.get(key)
        if r is None:
            build_lock = _building.setdefault(key, threading.Lock())
    if r is None:
        with build_lock:
            with _registry_lock:
                r = _live.get(key)
            if r is None:
                r = Renderer(seed, crowd)
            with _registry_lock:
                _live[key] = r
                if _building.get(key) is build_lock:
                    del _building[key]
    with _registry_lock:
        _recent[key] = r
        _recent.move_to_end(key)
        while len(_recent) > _RECENT:
            _recent.popitem(last=False)
    return r


def render(seed: int, index: int, width: int = 640, height: int = 480, crowd: int = 0) -> Scene:
    """Render frame `index` of sequence `seed` at `width`x`height` with its ground truth
    (`crowd`: that many more walking robots, see `renderer`)."""
    return _render(renderer(seed, crowd), index, width, height)


@contextlib.contextmanager
def _opencv_own_kernels() -> Iterator[None]:
    """OpenCV's own kernels instead of Intel's IPP (linked into x86 builds only), for this
    thread: IPP's warpPerspective rounds sample positions otherwise, so the same frame
    differed by a level in ~0.01% of its values between x86 and arm64. OpenCV keeps the
    switch per thread, so other threads (inference pre-processing) keep IPP."""
    was = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        yield
    finally:
        cv2.ipp.setUseIPP(was)


def _render(ren: Renderer, index: int, width: int, height: int) -> Scene:
    lay = ren.layout
    k = _intrinsics(lay, width, height)
    rot, centre, speed = _camera(lay, index)

    # above the horizon the ray never meets the ground: find that region first, so the
    # ground is warped only below it and the backdrop is drawn only inside it
    a = (rot.T @ np.linalg.inv(k))[2]  # world z of the ray through pixel (u, v, 1)
    margin = 1e-3 * np.linalg.norm(a[:2])
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    vals = corners @ a[:2] + a[2] + margin
    poly = _clip_halfplane(corners, vals)
    sky_rows = 0  # rows [0, sky_rows) hold some sky
    full_sky = 0  # rows [0, full_sky) are sky only
    if len(poly) >= 3:
        sky_rows = min(height, int(math.ceil(poly[:, 1].max())) + 1)
        if abs(a[1]) > 1e-12:  # the horizon's rows at the left and right image border
            edge = [-(a[0] * x + a[2] + margin) / a[1] for x in (0.0, float(width))]
            full_sky = max(0, min(height, int(math.floor(min(edge))) - 1))
        else:
            full_sky = height if vals[0] > 0 else 0

    # ground-plane homography: texture pixel -> image pixel (rows below full_sky only;
    # shifting the output rows keeps every pixel's sampling exactly as a full warp)
    ox, oy = CARPET_X + FLOOR_MARGIN, CARPET_Y + FLOOR_MARGIN
    tex_to_world = np.array([[TEX_RES, 0, -ox], [0, -TEX_RES, oy], [0, 0, 1]])
    ext = np.column_stack([rot[:, 0], rot[:, 1], -rot @ centre])  # [r1 r2 t] for z=0 points
    hom = np.array([[1, 0, 0], [0, 1, -full_sky], [0, 0, 1]]) @ k @ ext @ tex_to_world
    image = np.empty((height, width, 3), np.uint8)
    seg = np.zeros((height, width), np.uint8)
    if full_sky < height:
        rows = (width, height - full_sky)
        with _opencv_own_kernels():
            cv2.warpPerspective(lay.texture, hom, rows, dst=image[full_sky:],
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            cv2.warpPerspective(lay.labels, hom, rows, dst=seg[full_sky:], flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    if sky_rows:
        sky = np.zeros((sky_rows, width), np.uint8)
        cv2.fillPoly(sky, [np.round(poly * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
        sky[:full_sky] = 1
        bd = ren.backdrop_scaled(height)
        yaw = math.atan2(rot[2, 1], rot[2, 0])
        off = int((yaw / math.tau) * bd.shape[1]) % bd.shape[1]
        # horizon row at the image centre column, so the backdrop sits on it
        hv = -(a[0] * width / 2 + a[2]) / a[1] if abs(a[1]) > 1e-9 else height / 2
        top = int(round(hv)) - bd.shape[0]
        src_rows = np.clip(np.arange(sky_rows) - top, 0, bd.shape[0] - 1)
        src_cols = (np.arange(width) + off) % bd.shape[1]
        canvas = bd[src_rows[:, None], src_cols[None, :]]
        cv2.copyTo(canvas, sky, image[:sky_rows])
        np.multiply(seg[:sky_rows], 1 - sky, out=seg[:sky_rows])

    boxes, classes, ids = _draw_objects(lay, index, k, rot, centre, image, seg, width, height)

    # lighting: smooth global gain and colour cast, plus a soft gradient
    li = lay.light
    gain = li[0] * (1 + li[1] * math.sin(li[2] * index + li[5]))
    cast = np.array([1 + li[3], 1.0, 1 + li[4]], np.float32) * gain
    # OpenCV takes a Scalar (4-tuple) as src2; the stubs of opencv 5.0 list only arrays,
    # those of 5.1 the Scalar too: typed Any, it checks under both
    scalar: Any = (float(cast[0]), float(cast[1]), float(cast[2]), 0.0)
    img = cv2.multiply(image, scalar, dtype=cv2.CV_32F)
    # motion blur along the direction of head motion when the head turns quickly
    if speed > 0.012:
        n = min(9, int(speed * 250) | 1)
        img = cv2.blur(img, (n, 1))  # horizontal streak: a 1-row box filter
    # sensor noise from a per-seed periodic tile, shifted per frame
    sigma = 2.0 + 4.0 * (1.0 / max(gain, 0.5))
    th, tw = lay.noise.shape[:2]
    r0, c0 = (index * 37) % th, (index * 91) % tw
    cv2.scaleAdd(ren.noise_field(height + th, width + tw)[r0:r0 + height, c0:c0 + width],
                 sigma, img, dst=img)
    np.clip(img, 0, 255, out=img)
    return Scene(img.astype(np.uint8), seg, boxes, classes, ids)


def objects(seed: int, index: int, width: int = 640, height: int = 480, crowd: int = 0
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground truth of frame `index` of sequence `seed` without rendering the image.

    (boxes, classes, ids) exactly as `render(seed, index, width, height, crowd)` gives them
    (`Scene.boxes`, `.classes`, `.ids`): the objects are drawn into scratch buffers,
    since visibility through occlusion comes from the id buffer, but the field, the
    backdrop, lighting and noise are skipped (a few hundred microseconds a frame instead
    of milliseconds), so trackers can be scored over thousands of frames cheaply."""
    lay = renderer(seed, crowd).layout
    k = _intrinsics(lay, width, height)
    rot, centre, _ = _camera(lay, index)
    image = np.zeros((height, width, 3), np.uint8)
    seg = np.zeros((height, width), np.uint8)
    return _draw_objects(lay, index, k, rot, centre, image, seg, width, height)


def _clip_halfplane(poly: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Part of a convex polygon where vals > 0 (Sutherland-Hodgman against one line)."""
    out = []
    n = len(poly)
    for i in range(n):
        p, q = poly[i], poly[(i + 1) % n]
        vp, vq = vals[i], vals[(i + 1) % n]
        if vp > 0:
            out.append(p)
        if (vp > 0) != (vq > 0):
            t = vp / (vp - vq)
            out.append(p + t * (q - p))
    return np.array(out)


def _draw_objects(lay: _Layout, index: int, k: np.ndarray, rot: np.ndarray, centre: np.ndarray,
                  image: np.ndarray, seg: np.ndarray, width: int, height: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = k[0, 0]
    # (depth, class, drawing args, identity); the args' shape depends on the class, see
    # the loop below
    objs: list[tuple[float, int, Any, int]] = []
    right = rot[0]
    horiz = np.array([right[0], right[1], 0.0])
    horiz /= max(np.linalg.norm(horiz), 1e-9)
    fx, gy = FIELD_LENGTH / 2, GOAL_WIDTH / 2

    def billboard(x: float, y: float, w: float, h: float) -> tuple[np.ndarray, float] | None:
        base = np.array([x, y, 0.0])
        pts = np.stack([base - horiz * w / 2, base + horiz * w / 2,
                        base - horiz * w / 2 + [0, 0, h], base + horiz * w / 2 + [0, 0, h]])
        uv, z = _project(k, rot, centre, pts)
        if (z < 0.15).any():
            return None
        return uv, float(z.mean())

    for sx in (-1, 1):
        for sy in (-1, 1):
            bb = billboard(sx * (fx + POST_RADIUS), sy * gy, 2 * POST_RADIUS, POST_HEIGHT)
            if bb is not None:
                objs.append((bb[1], 1, bb[0], FIRST_POST_ID + (sx + 1) + (sy + 1) // 2))
        # crossbar is drawn with the posts but is not a goalpost
    bx, by, ax, ay, ph = lay.ball
    t = index * 0.01
    ball_pos = np.array([bx + ax * math.sin(t + ph), by + ay * math.sin(0.7 * t + ph), BALL_RADIUS])
    uv, z = _project(k, rot, centre, ball_pos[None])
    if z[0] > 0.15:
        objs.append((float(z[0]), 0, (uv[0], f * BALL_RADIUS / z[0], ball_pos), BALL_ID))
    for ri, r in enumerate(lay.robots):
        lx, ly = FIELD_LENGTH / 2, FIELD_WIDTH / 2
        x = lx - abs((r.x + r.vx * index + lx) % (4 * lx) - 2 * lx)
        y = ly - abs((r.y + r.vy * index + ly) % (4 * ly) - 2 * ly)
        bb = billboard(x, y, r.width, r.height)
        if bb is not None:
            objs.append((bb[1], 2, (bb[0], r, (index // 8 + ri) % len(r.sprites)),
                         FIRST_ROBOT_ID + ri))

    objs.sort(key=lambda o: -o[0])
    ids = np.zeros((height, width), np.uint8)
    full_boxes: list[tuple[float, float, float, float]] = []
    full_area: list[float] = []
    kept_cls: list[tuple[int, int]] = []  # (object id in the id buffer, class)
    kept_ids: list[int] = []  # identity over the sequence
    for oid, (_, cls, args, ident) in enumerate(objs, start=1):
        if cls == 0:
            (u, v), rad, _pos = args
            box = (u - rad, v - rad, u + rad, v + rad)
            if not _on_screen(box, width, height):
                continue
            c = (int(round(u * 16)), int(round(v * 16)))
            rr = max(1, int(round(rad * 16)))
            cv2.circle(image, c, rr, lay.ball_colors[0], -1, cv2.LINE_8, 4)
            cv2.circle(ids, c, rr, oid, -1, cv2.LINE_8, 4)
            cv2.circle(seg, c, rr, 0, -1, cv2.LINE_8, 4)
            # dark patches rotate with the ball's travel
            for j in range(5):
                ang = j * 1.2566 + index * 0.05
                pu = u + 0.55 * rad * math.cos(ang)
                pv = v + 0.55 * rad * math.sin(ang)
                cv2.circle(image, (int(pu * 16), int(pv * 16)), max(1, int(rad * 0.3 * 16)),
                           lay.ball_colors[1], -1, cv2.LINE_8, 4)
            cv2.circle(image, c, rr, lay.ball_colors[0], -1, cv2.LINE_8, 4) if rad < 2 else None
        elif cls == 1:
            uv = args
            quad = np.round(uv[[0, 1, 3, 2]] * 16).astype(np.int32)
            box = (uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max())
            if not _on_screen(box, width, height):
                continue
            cv2.fillConvexPoly(image, quad, lay.post_color, cv2.LINE_8, 4)
            cv2.fillConvexPoly(ids, quad, oid, cv2.LINE_8, 4)
            cv2.fillConvexPoly(seg, quad, 0, cv2.LINE_8, 4)
        else:
            uv, robot, pose = args
            box = (uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max())
            if not _on_screen(box, width, height):
                continue
            _paste_sprite(image, seg, ids, oid, box, robot.sprites[pose])
        full_boxes.append(box)
        full_area.append((box[2] - box[0]) * (box[3] - box[1]))
        kept_cls.append((oid, cls))
        kept_ids.append(ident)

    none = np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0,), np.int64)
    if not full_boxes:
        return none
    counts = np.bincount(ids.ravel(), minlength=len(objs) + 1)
    out_boxes, out_cls, out_ids = [], [], []
    for box, area, (oid, cls), ident in zip(full_boxes, full_area, kept_cls, kept_ids):
        x1, y1 = max(box[0], 0.0), max(box[1], 0.0)
        x2, y2 = min(box[2], float(width)), min(box[3], float(height))
        if x2 - x1 < 3 or y2 - y1 < 3:
            continue
        clipped = (x2 - x1) * (y2 - y1)
        visible = counts[oid] / max(area * (0.785 if cls == 0 else 0.6 if cls == 2 else 1.0), 1.0)
        if clipped < 0.3 * area or visible < 0.3:
            continue
        out_boxes.append((x1, y1, x2, y2))
        out_cls.append(cls)
        out_ids.append(ident)
    if not out_boxes:
        return none
    return (np.array(out_boxes, np.float32), np.array(out_cls, np.int64),
            np.array(out_ids, np.int64))


def _on_screen(box: tuple, width: int, height: int) -> bool:
    return box[2] > 0 and box[3] > 0 and box[0] < width and box[1] < height and \
        (box[2] - box[0]) < 4 * width and (box[3] - box[1]) < 4 * height


def _paste_sprite(image: np.ndarray, seg: np.ndarray, ids: np.ndarray, oid: int, box: tuple,
                  sprite: tuple[np.ndarray, np.ndarray]) -> None:
    bgr, alpha = sprite
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    w, h = x2 - x1, y2 - y1
    if w < 1 or h < 1:
        return
    sx1, sy1 = max(x1, 0), max(y1, 0)
    sx2, sy2 = min(x2, image.shape[1]), min(y2, image.shape[0])
    if sx2 <= sx1 or sy2 <= sy1:
        return
    # resize only the visible part: map the visible window back into sprite coordinates
    src_x = (np.arange(sx1, sx2) - x1 + 0.5) * (bgr.shape[1] / w)
    src_y = (np.arange(sy1, sy2) - y1 + 0.5) * (bgr.shape[0] / h)
    ix = np.clip(src_x.astype(np.int32), 0, bgr.shape[1] - 1)
    iy = np.clip(src_y.astype(np.int32), 0, bgr.shape[0] - 1)
    a = alpha[iy][:, ix].astype(bool)
    patch = bgr[iy][:, ix]
    image[sy1:sy2, sx1:sx2][a] = patch[a]
    seg[sy1:sy2, sx1:sx2][a] = 0
    ids[sy1:sy2, sx1:sx2][a] = oid
