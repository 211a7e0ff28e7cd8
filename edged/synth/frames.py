"""Frames of the synthetic world and their ground truth: `Renderer` (one seed's layout
and its per-size images), `renderer` (the live one per seed), `render` and `objects`.

The field is warped into the camera with the ground-plane homography; labels are warped
the same way with nearest neighbour, so image and ground truth can never disagree.
Objects (balls, goalposts, robots) are billboards projected from world coordinates and
painted far to near, which gives occlusion for free; an id buffer tells how much of each
object stays visible.
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np

from edged.synth.world import (
    BALL_ID,
    BALL_RADIUS,
    CARPET_X,
    CARPET_Y,
    FIELD_LENGTH,
    FIELD_WIDTH,
    FIRST_POST_ID,
    FIRST_ROBOT_ID,
    FLOOR_MARGIN,
    GOAL_WIDTH,
    POST_HEIGHT,
    POST_RADIUS,
    TEX_RES,
    Layout,
    Scene,
    build_layout,
    camera_pose,
    intrinsics,
    project,
)


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
        self.layout = build_layout(self.seed, self.crowd)
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
    k = intrinsics(lay, width, height)
    rot, centre, speed = camera_pose(lay, index)

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
    k = intrinsics(lay, width, height)
    rot, centre, _ = camera_pose(lay, index)
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


def _draw_objects(lay: Layout, index: int, k: np.ndarray, rot: np.ndarray, centre: np.ndarray,
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
        uv, z = project(k, rot, centre, pts)
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
    uv, z = project(k, rot, centre, ball_pos[None])
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
