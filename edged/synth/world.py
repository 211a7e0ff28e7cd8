"""The synthetic world: the field, its objects and the camera's path through it.

A seed's `Layout` is drawn once: the field (grass, lines, the floor around the carpet)
as a top-down texture at 1 cm per pixel with its labels, the backdrop panorama, the
robots' sprites, the ball's and the robots' paths and the lighting. `camera_pose`,
`intrinsics` and `project` place the camera of frame `index` and project world points
into it; `edged.synth.frames` turns that into images and ground truth.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

from edged import heap

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
class Robot:
    x: float
    y: float
    vx: float
    vy: float
    height: float
    width: float
    sprites: tuple[tuple[np.ndarray, np.ndarray], ...]  # (bgr, alpha) pose frames


@dataclass(frozen=True, slots=True)
class Layout:
    texture: np.ndarray  # top-down BGR
    labels: np.ndarray  # top-down labels
    backdrop: np.ndarray  # panorama above the horizon, BGR
    noise: np.ndarray  # int16 sensor-noise tile
    cam_height: float
    hfov: float
    path: np.ndarray  # parameters of the smooth camera path
    robots: tuple[Robot, ...]
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


def build_layout(seed: int, crowd: int = 0) -> Layout:
    try:
        lay = _draw_layout(seed)
        if crowd:
            lay = _add_crowd(lay, seed, crowd)
        return lay
    finally:
        # a build allocates ~30 MB of short-lived float images; kept resident in each
        # thread's arena, 32 cameras building in parallel held ~0.6 GB extra
        heap.give_back()


def _add_crowd(lay: Layout, seed: int, crowd: int) -> Layout:
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
        extra.append(Robot(
            x=float(rng.uniform(-FIELD_LENGTH / 2, FIELD_LENGTH / 2)),
            y=float(rng.uniform(-FIELD_WIDTH / 2, FIELD_WIDTH / 2)),
            vx=speed * math.cos(heading), vy=speed * math.sin(heading),
            height=h, width=h * 0.5, sprites=_robot_sprites(rng)))
    return dataclasses.replace(lay, robots=lay.robots + tuple(extra))


def _bgr(c: np.ndarray) -> tuple[int, int, int]:
    return int(c[0]), int(c[1]), int(c[2])


def _draw_layout(seed: int) -> Layout:
    LAYOUT_BUILDS[0] += 1
    rng = np.random.default_rng([seed, 0x5EED])
    texture, labels = _draw_field(rng)
    backdrop = _draw_backdrop(rng)
    noise = rng.normal(0, 1, (256, 256, 3)).astype(np.float32)
    robots = []
    for _ in range(int(rng.integers(1, 7))):
        robots.append(Robot(
            x=float(rng.uniform(-FIELD_LENGTH / 2, FIELD_LENGTH / 2)),
            y=float(rng.uniform(-FIELD_WIDTH / 2, FIELD_WIDTH / 2)),
            vx=float(rng.uniform(-0.01, 0.01)), vy=float(rng.uniform(-0.01, 0.01)),
            height=float(rng.uniform(0.4, 0.9)), width=0.0,
            sprites=_robot_sprites(rng)))
    robots = [Robot(r.x, r.y, r.vx, r.vy, r.height, r.height * 0.5, r.sprites) for r in robots]
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
    return Layout(texture, labels, backdrop, noise, float(rng.uniform(0.35, 0.9)),
                   float(rng.uniform(math.radians(60), math.radians(90))), path, tuple(robots),
                   ball, ball_colors, _bgr(rng.uniform(200, 255, 3)), light)


# ----------------------------------------------------------------------------- camera


def camera_pose(lay: Layout, index: int) -> tuple[np.ndarray, np.ndarray, float]:
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


def intrinsics(lay: Layout, width: int, height: int) -> np.ndarray:
    f = (width / 2) / math.tan(lay.hfov / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)


# ----------------------------------------------------------------------------- render


def project(k: np.ndarray, rot: np.ndarray, centre: np.ndarray, pts: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    cam = (pts - centre) @ rot.T
    z = cam[..., 2]
    uv = (cam[..., :2] / np.maximum(z, 1e-6)[..., None]) * k[0, 0] + k[:2, 2]
    return uv, z
