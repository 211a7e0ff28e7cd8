"""Wire protocol v1: `Result` <-> ZeroMQ multipart frames (topic, msgpack header, mask).

Instance masks (formats that have them) travel inside the header, under `instances`,
so that the frame count stays 2 or 3 and v1 decoders that predate them keep working;
track ids and velocities likewise, under `tracks`, a map with a version of its own.

The normative description, written for implementers in other languages, is
docs/protocol.md; keep the two in step. Encoding is done by the daemon's publish
thread, decoding by subscribers (see `edged.wire.client`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import cv2
import msgpack
import numpy as np
import zmq
import zstandard as zstd

from edged.names import CAMERA_NAME_RE, camera_name_problem
from edged.results import Result, Tracks, instance_extents, mask_at

PROTOCOL_VERSION = 1
# the `tracks` map's own version: a decoder leaves out (with a problem) a map of a
# version it does not know, and keeps the rest of the message
TRACKS_VERSION = 1
MaskEncoding = Literal["raw", "zstd", "png"]
MASK_ENCODINGS: tuple[str, ...] = get_args(MaskEncoding)

# one definition of a valid camera name, shared with the config (see edged.names)
CAMERA_RE = CAMERA_NAME_RE
TOPIC_RESULT = "result"
TOPIC_EOS = "eos"
TOPIC_STATE = "state"  # reserved
TOPIC_STATS = "_stats"  # reserved, daemon-wide (no camera part)
TOPIC_MODEL = "_model"  # reserved, daemon-wide: the degradation ladder switched variant

# Sanity limits for decoding: a garbage or hostile header must not make us allocate
# gigabytes (a zstd frame header or a PNG header can claim any size).
MAX_DIM = 32768
MAX_MASK_PIXELS = 1 << 26

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


# the largest seq a decoder takes: 2^53 - 1 (exact in a double, so in every language);
# at 1000 frames/s it lasts 285,000 years
MAX_SEQ = 2**53 - 1


class ProtocolError(ValueError):
    """A message that does not follow the wire protocol."""


def check_camera(camera: str) -> str:
    """Return `camera` if it is a valid camera name, else raise ValueError."""
    problem = camera_name_problem(camera)
    if problem is not None:
        raise ValueError(f"{problem} (got {camera!r:.80})")
    return camera


def topic(camera: str, kind: str) -> bytes:
    return f"{camera}/{kind}".encode()


def _packb(obj: Any) -> bytes:
    # float32 on the wire: the values come from float32 arrays anyway, so this is lossless
    # for boxes and scores and halves their size.
    return msgpack.packb(obj, use_single_float=True)


# ----------------------------------------------------------------------------- masks


class MaskEncoder:
    """Encodes class-index masks; reuses one zstd compression context.

    Not thread-safe (the zstd context is stateful): one instance per thread.
    """

    def __init__(self, encoding: MaskEncoding = "zstd", zstd_level: int = 1) -> None:
        if encoding not in MASK_ENCODINGS:
            raise ValueError(f"unknown mask encoding {encoding!r}, expected {MASK_ENCODINGS}")
        self.encoding: MaskEncoding = encoding
        self.zstd_level = zstd_level
        # content size in the frame header lets decoders check the size before allocating
        self._zstd = (zstd.ZstdCompressor(level=zstd_level, write_content_size=True)
                      if encoding == "zstd" else None)

    def encode(self, mask: np.ndarray) -> bytes:
        """Row-major bytes of a 2-D uint8 mask, in this encoder's encoding.

        `mask` may be a non-contiguous view; it is copied at most once.
        """
        if mask.ndim != 2 or mask.dtype != np.uint8 or mask.size == 0:
            raise ValueError(f"mask must be non-empty 2-D uint8, got {mask.dtype} {mask.shape}")
        if self.encoding == "raw":
            # tobytes() always copies (even a contiguous mask), so a mask buffer the
            # pipeline reuses cannot change under a zero-copy send
            return mask.tobytes()
        data = np.ascontiguousarray(mask)
        if self._zstd is not None:
            return self._zstd.compress(data.data)  # the array's buffer, no copy
        ok, png = cv2.imencode(".png", data, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise ValueError("PNG encoding failed")
        return png.tobytes()


def _png_size(data: bytes | memoryview) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, without decoding it."""
    head = bytes(data[:24])
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ProtocolError("mask: not a PNG image")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def decode_mask(data: bytes | memoryview, shape: tuple[int, int], encoding: str) -> np.ndarray:
    """Decode a mask frame into an HxW uint8 array; ProtocolError if it is not one.

    A raw mask is a read-only view of `data` (no copy).
    """
    h, w = shape
    n = h * w
    if not (0 < h <= MAX_DIM and 0 < w <= MAX_DIM and n <= MAX_MASK_PIXELS):
        raise ProtocolError(f"mask: shape {shape} out of range")
    try:
        if encoding == "raw":
            if len(data) != n:
                raise ProtocolError(f"mask: {len(data)} bytes, expected {h}x{w} = {n}")
            return np.frombuffer(data, np.uint8).reshape(h, w)
        if encoding == "zstd":
            size = zstd.frame_content_size(data)
            if size not in (-1, n):  # -1: not in the frame header, bounded below instead
                raise ProtocolError(f"mask: zstd content size {size}, expected {h}x{w} = {n}")
            raw = zstd.ZstdDecompressor().decompress(data, max_output_size=n,
                                                     allow_extra_data=False)
            if len(raw) != n:
                raise ProtocolError(f"mask: zstd gave {len(raw)} bytes, expected {h}x{w} = {n}")
            return np.frombuffer(raw, np.uint8).reshape(h, w)
        if encoding == "png":
            if _png_size(data) != (w, h):
                raise ProtocolError(f"mask: PNG is {_png_size(data)} (w, h), expected {(w, h)}")
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if img is None or img.dtype != np.uint8 or img.shape != (h, w):
                got = "undecodable" if img is None else f"{img.dtype} {img.shape}"
                raise ProtocolError(f"mask: PNG is {got}, expected 8-bit grey {h}x{w}")
            return img
    except ProtocolError:
        raise
    except (zstd.ZstdError, cv2.error, ValueError, TypeError) as e:
        raise ProtocolError(f"mask: cannot decode {encoding}: {e}") from e
    raise ProtocolError(f"mask: unknown encoding {encoding!r}")


# ----------------------------------------------------------------------------- encode


def _letterbox_map(result: Result) -> dict[str, list[Any]] | None:
    lb = result.letterbox
    if lb is None:
        return None
    return {"input": [lb.input_w, lb.input_h], "scale": [float(lb.scale_x), float(lb.scale_y)],
            "pad": [lb.pad_x, lb.pad_y], "content": [lb.content_w, lb.content_h]}


def encode_result(result: Result, encoder: MaskEncoder | None,
                  send_mask: bool = True) -> list[bytes]:
    """[topic, header] or [topic, header, mask] for one result.

    The mask is left out when `send_mask` is false, there is none, or `encoder` is None.
    `t_publish_ns` is stamped here; time spent encoding is for the caller to measure.
    """
    return encode_stamped(result, encoder, send_mask).frames


@dataclass(frozen=True, slots=True)
class Stamped:
    """An encoded result message, its publish stamp, whether it was late then, and the
    flags it carries (with "late" when it was)."""

    frames: list[bytes]
    t_publish_ns: int
    late: bool
    flags: tuple[str, ...]


LATE = "late"


def flag_late(flags: tuple[str, ...]) -> tuple[str, ...]:
    """`flags` with the "late" flag (once)."""
    return flags if LATE in flags else (*flags, LATE)


def encode_stamped(result: Result, encoder: MaskEncoder | None, send_mask: bool = True,
                   late_at: Callable[[int], bool] | None = None, late: bool = False,
                   boot: str = "") -> Stamped:
    """`encode_result` that asks whether the result is late at the moment it is stamped;
    `result` is not changed.

    `late`: already judged late (or `result.flags` says so); otherwise
    `late_at(t_publish_ns)`, the caller's budget rule (edged.daemon.publish), is asked at
    the stamp, so no `late` flag can disagree with the message's own timestamps.
    """
    check_camera(result.camera)
    flags = result.flags
    det = result.detections
    header: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "type": TOPIC_RESULT,
        "camera": result.camera,
        "seq": int(result.seq),
        "t_capture_ns": int(result.t_capture_wall_ns),
        "t_publish_ns": 0,  # stamped last, below
        "frame": [int(result.frame_w), int(result.frame_h)],
        "model": result.model_id,
        "classes": list(result.class_names),
        "boxes": np.asarray(det.boxes, np.float32).reshape(-1, 4).tolist(),
        "scores": np.asarray(det.scores, np.float32).reshape(-1).tolist(),
        "class_ids": np.asarray(det.class_ids, np.int64).reshape(-1).tolist(),
        "mask": None,
        "timing_ms": {str(k): float(v) for k, v in result.timings_ms.items()},
        "flags": list(flags),
    }
    if boot:
        header["boot"] = boot
    if not len(header["boxes"]) == len(header["scores"]) == len(header["class_ids"]):
        raise ValueError("detections: boxes, scores and class_ids differ in length")
    mask_bytes: bytes | None = None
    if send_mask and encoder is not None and result.mask is not None:
        mask = result.mask
        mask_bytes = encoder.encode(mask)
        mh, mw = mask.shape
        header["mask"] = {
            "shape": [mh, mw],
            "dtype": "uint8",
            "encoding": encoder.encoding,
            "classes": list(result.mask_classes),
            "to_camera": [result.frame_w / mw, result.frame_h / mh],
            "letterbox": _letterbox_map(result),
        }
    if result.tracks is not None:
        header["tracks"] = _encode_tracks(result.tracks, len(header["scores"]))
    if send_mask and encoder is not None and det.instance_masks is not None:
        header["instances"] = _encode_instances(det.boxes, det.instance_masks, encoder,
                                                result.frame_w, result.frame_h)
    header["t_publish_ns"] = now = time.time_ns()
    late = late or LATE in flags or (late_at is not None and late_at(now))
    if late:
        flags = flag_late(flags)
        header["flags"] = list(flags)
    frames = [topic(result.camera, TOPIC_RESULT), _packb(header)]
    if mask_bytes is not None:
        frames.append(mask_bytes)
    return Stamped(frames, now, late, flags)


def _encode_tracks(tracks: Tracks, n: int) -> dict[str, Any]:
    """The `tracks` header map: per detection, in detection order, its track id and the
    track's velocity."""
    ids = np.asarray(tracks.ids, np.int64).reshape(-1)
    vel = np.asarray(tracks.velocities, np.float32).reshape(-1, 2)
    if not len(ids) == len(vel) == n:
        raise ValueError(f"tracks: {len(ids)} ids and {len(vel)} velocities for {n} detections")
    return {"v": TRACKS_VERSION, "epoch": int(tracks.epoch), "ids": ids.tolist(),
            "velocities": vel.tolist(), "active": int(tracks.active)}


def _encode_instances(boxes: np.ndarray, masks: list[np.ndarray], encoder: MaskEncoder,
                      frame_w: int, frame_h: int) -> dict[str, Any]:
    """The `instances` header map: one entry per detection, in detection order."""
    if len(masks) != len(boxes):
        raise ValueError(f"detections: {len(boxes)} boxes but {len(masks)} instance masks")
    entries = []
    for (x0, y0, x1, y1), m in zip(instance_extents(boxes).tolist(), masks):
        if m.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"instance mask {m.shape} does not cover its box's extent "
                             f"{(y1 - y0, x1 - x0)} at ({x0}, {y0})")
        if x1 > frame_w or y1 > frame_h:
            raise ValueError(f"instance mask at ({x0}, {y0}) size {m.shape} leaves the "
                             f"{frame_w}x{frame_h} frame")
        data = encoder.encode(m.view(np.uint8)) if m.size else b""
        entries.append({"origin": [x0, y0], "shape": [y1 - y0, x1 - x0], "data": data})
    return {"encoding": encoder.encoding, "masks": entries}


def encode_eos(camera: str, last_seq: int, reason: str, boot: str = "",
               t_ns: int | None = None) -> list[bytes]:
    """[topic, header] announcing that `camera` will publish nothing more (`t_ns`: when
    it ended; default now)."""
    check_camera(camera)
    header = {"v": PROTOCOL_VERSION, "type": TOPIC_EOS, "camera": camera, "seq": int(last_seq),
              "t_publish_ns": time.time_ns() if t_ns is None else t_ns,
              "reason": str(reason)}
    if boot:
        header["boot"] = boot
    return [topic(camera, TOPIC_EOS), _packb(header)]


# ----------------------------------------------------------------------------- decode


@dataclass(frozen=True, slots=True)
class InstanceMask:
    """One detection's mask: camera pixels (x + c, y + r) for mask cell (r, c)."""

    x: int
    y: int
    mask: np.ndarray  # h x w uint8, nonzero = instance (edged writes 1), read-only

    def to_frame(self, frame_w: int, frame_h: int) -> np.ndarray:
        out = np.zeros((frame_h, frame_w), np.uint8)
        h, w = self.mask.shape
        out[self.y:self.y + h, self.x:self.x + w] = self.mask != 0
        return out


@dataclass(frozen=True, slots=True)
class Message:
    """One result, as a subscriber sees it."""

    camera: str
    seq: int
    t_capture_ns: int
    t_publish_ns: int
    frame_w: int
    frame_h: int
    model: str
    class_names: tuple[str, ...]
    boxes: np.ndarray  # Nx4 float32, x1 y1 x2 y2, camera pixels
    scores: np.ndarray  # N float32
    class_ids: np.ndarray  # N int32
    mask: np.ndarray | None  # HxW uint8 class indices at mask resolution (read-only)
    mask_classes: tuple[str, ...]
    timings_ms: dict[str, float]
    flags: tuple[str, ...]
    letterbox: dict[str, tuple[int | float, int | float]] | None
    t_received_ns: int
    # None: no instance masks in the message (the model has none, or masks are off);
    # else one per detection, in detection order
    instances: tuple[InstanceMask, ...] | None = None
    # the daemon process's boot id ("" from a publisher without one): a new one means a
    # restart, not lost frames
    boot: str = ""
    # None: no track ids in the message (tracking off for the camera, or an older
    # daemon); else one per detection: the id of its confirmed track, 0 for none
    track_ids: np.ndarray | None = None  # N int64
    velocities: np.ndarray | None = None  # Nx2 float32, the track's velocity in px/s
    track_epoch: int | None = None  # +1 at each reconnect of the camera's source
    tracks_active: int | None = None  # confirmed tracks in this frame
    # what the decoder left out and why (an unknown mask encoding from a newer
    # publisher: the detections are still good, the mask is None)
    problems: tuple[str, ...] = ()

    def instance_mask_camera(self, i: int) -> np.ndarray:
        """Detection i's instance mask as a frame-sized uint8 0/1 array."""
        if self.instances is None:
            raise ValueError("this message carries no instance masks")
        return self.instances[i].to_frame(self.frame_w, self.frame_h)

    def mask_camera(self) -> np.ndarray | None:
        """The mask at camera resolution, by the protocol's nearest-neighbour rule."""
        return mask_at(self.mask, self.frame_w, self.frame_h)

    @property
    def latency_ms(self) -> float:
        """Capture -> receive, in ms (wall clocks: meaningful across hosts only with NTP)."""
        return (self.t_received_ns - self.t_capture_ns) / 1e6

    def track_index(self, track_id: int) -> int | None:
        """The detection that belongs to track `track_id` in this frame, None if none."""
        if self.track_ids is None or track_id <= 0:
            return None
        hit = np.flatnonzero(self.track_ids == track_id)
        return int(hit[0]) if len(hit) else None

    def labels(self) -> list[str]:
        """Class name per detection (the id as a string when it has no name)."""
        n = len(self.class_names)
        return [self.class_names[i] if 0 <= i < n else str(i) for i in self.class_ids.tolist()]

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The camera's stream ended; `last_seq` is the last seq published, -1 if none."""

    camera: str
    last_seq: int
    reason: str
    t_publish_ns: int
    boot: str = ""


# Typed getters: msgpack gives bool for true/false, and bool is an int in Python,
# so ints are checked with `type(...) is not bool`.

def _get(m: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in m:
        raise ProtocolError(f"{where}: missing key {key!r}")
    return m[key]


def _int(m: Mapping[str, Any], key: str, where: str, lo: int | None = None,
         hi: int | None = None) -> int:
    v = _get(m, key, where)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProtocolError(f"{where}: {key!r} must be an int, got {type(v).__name__}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ProtocolError(f"{where}: {key!r} = {v} out of range [{lo}, {hi}]")
    return v


def _str(m: Mapping[str, Any], key: str, where: str) -> str:
    v = _get(m, key, where)
    if not isinstance(v, str):
        raise ProtocolError(f"{where}: {key!r} must be a str, got {type(v).__name__}")
    return v


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _list(m: Mapping[str, Any], key: str, where: str, n: int | None = None) -> list[Any]:
    v = _get(m, key, where)
    if not isinstance(v, list) or (n is not None and len(v) != n):
        want = "a list" if n is None else f"a list of {n}"
        raise ProtocolError(f"{where}: {key!r} must be {want}, got {v!r:.60}")
    return v


def _strs(m: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    v = _list(m, key, where)
    if not all(isinstance(s, str) for s in v):
        raise ProtocolError(f"{where}: {key!r} must be a list of str")
    return tuple(v)


def _ints(m: Mapping[str, Any], key: str, where: str, n: int, lo: int, hi: int) -> list[int]:
    v = _list(m, key, where, n)
    if not all(isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi for x in v):
        raise ProtocolError(f"{where}: {key!r} must be {n} ints in [{lo}, {hi}], got {v!r:.60}")
    return v


def _nums(m: Mapping[str, Any], key: str, where: str, n: int) -> list[float]:
    v = _list(m, key, where, n)
    if not all(_is_num(x) for x in v):
        raise ProtocolError(f"{where}: {key!r} must be {n} numbers, got {v!r:.60}")
    return [float(x) for x in v]


def _float_array(values: list[Any], key: str, width: int | None) -> np.ndarray:
    if width is None:
        ok = all(_is_num(x) for x in values)
    else:
        ok = all(isinstance(r, list) and len(r) == width and all(_is_num(x) for x in r)
                 for r in values)
    if not ok:
        shape = "numbers" if width is None else f"lists of {width} numbers"
        raise ProtocolError(f"header: {key!r} must be a list of {shape}")
    arr = np.array(values, np.float64).reshape(-1, width) if width else np.array(values, np.float64)
    if not np.isfinite(arr).all():
        raise ProtocolError(f"header: {key!r} holds a non-finite value")
    return arr.astype(np.float32)


def _letterbox(v: Any) -> dict[str, tuple[int | float, int | float]] | None:
    if v is None:
        return None
    where = "mask.letterbox"
    if not isinstance(v, dict):
        raise ProtocolError(f"{where} must be a map or nil, got {type(v).__name__}")
    iw, ih = _ints(v, "input", where, 2, 1, MAX_DIM)
    sx, sy = _nums(v, "scale", where, 2)
    px, py = _ints(v, "pad", where, 2, 0, MAX_DIM)
    cw, ch = _ints(v, "content", where, 2, 1, MAX_DIM)
    return {"input": (iw, ih), "scale": (sx, sy), "pad": (px, py), "content": (cw, ch)}


def _boot(header: Mapping[str, Any]) -> str:
    v = header.get("boot", "")
    if not isinstance(v, str) or len(v) > 64:
        raise ProtocolError("header: 'boot' must be a str of at most 64 characters")
    return v


def _decode_instances(v: Any, n: int, frame_w: int, frame_h: int,
                      problems: list[str]) -> tuple[InstanceMask, ...] | None:
    if v is None:
        return None
    where = "instances"
    if not isinstance(v, dict):
        raise ProtocolError(f"header: {where!r} must be a map or nil, got {type(v).__name__}")
    encoding = _str(v, "encoding", where)
    if encoding not in MASK_ENCODINGS:
        problems.append(f"{where}: unknown encoding {encoding!r:.40}, left out")
        return None
    entries = _list(v, "masks", where)
    if len(entries) != n:
        raise ProtocolError(f"{where}: {len(entries)} masks for {n} detections")
    out = []
    total = 0
    for i, e in enumerate(entries):
        at = f"{where}.masks[{i}]"
        if not isinstance(e, dict):
            raise ProtocolError(f"{at} must be a map, got {type(e).__name__}")
        x, y = _ints(e, "origin", at, 2, 0, MAX_DIM)
        h, w = _ints(e, "shape", at, 2, 0, MAX_DIM)
        if x + w > frame_w or y + h > frame_h:
            raise ProtocolError(f"{at}: {w}x{h} at ({x}, {y}) leaves the "
                                f"{frame_w}x{frame_h} frame")
        total += h * w
        if total > MAX_MASK_PIXELS:
            raise ProtocolError(f"{where}: more than {MAX_MASK_PIXELS} cells in all")
        data = _get(e, "data", at)
        if not isinstance(data, bytes):
            raise ProtocolError(f"{at}: 'data' must be bin, got {type(data).__name__}")
        if h * w == 0:
            if data:
                raise ProtocolError(f"{at}: empty {h}x{w} mask with {len(data)} data bytes")
            m = np.zeros((h, w), np.uint8)
            m.flags.writeable = False
        else:
            try:
                m = decode_mask(data, (h, w), encoding)
            except ProtocolError as err:
                raise ProtocolError(f"{at}: {err}") from None
        out.append(InstanceMask(x, y, m))
    return tuple(out)


def _decode_tracks(v: Any, n: int, problems: list[str]
                   ) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """(ids, velocities, epoch, active) from the `tracks` map; None when absent or nil,
    or of a version this decoder does not know (said in `problems`)."""
    if v is None:
        return None
    where = "tracks"
    if not isinstance(v, dict):
        raise ProtocolError(f"header: {where!r} must be a map or nil, got {type(v).__name__}")
    version = _int(v, "v", where)
    if version != TRACKS_VERSION:
        problems.append(f"{where}: unknown version {version}, left out")
        return None
    epoch = _int(v, "epoch", where, 0, MAX_SEQ)
    active = _int(v, "active", where, 0, MAX_SEQ)
    ids = _list(v, "ids", where, n)
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= MAX_SEQ
               for i in ids):
        raise ProtocolError(f"{where}: 'ids' must be {n} ints in [0, 2^53 - 1]")
    vel = _float_array(_list(v, "velocities", where, n), f"{where}.velocities", 2)
    return np.array(ids, np.int64), vel.reshape(-1, 2), epoch, active


def _as_buffer(frame: Any) -> bytes | memoryview:
    if isinstance(frame, bytes | memoryview):
        return frame
    if isinstance(frame, zmq.Frame):
        return frame.buffer
    if isinstance(frame, bytearray):
        return memoryview(frame)
    raise ProtocolError(f"frame of type {type(frame).__name__} is not bytes")


def decode(frames: Sequence[bytes | memoryview | zmq.Frame], *,
           t_received_ns: int | None = None) -> Message | EndOfStream:
    """Parse one multipart message; ProtocolError (only) for anything malformed.

    `t_received_ns` defaults to now. Unknown header keys are ignored (forward
    compatible); an unknown version or message type is an error.
    """
    if t_received_ns is None:
        t_received_ns = time.time_ns()
    try:
        return _decode(frames, t_received_ns)
    except ProtocolError:
        raise
    except Exception as e:  # the contract is "ProtocolError for any garbage": no leaks
        raise ProtocolError(f"malformed message: {type(e).__name__}: {e}") from e


def _decode(frames: Sequence[Any], t_received_ns: int) -> Message | EndOfStream:
    if isinstance(frames, bytes | str) or not isinstance(frames, Sequence):
        raise ProtocolError(f"expected a sequence of frames, got {type(frames).__name__}")
    if len(frames) not in (2, 3):
        raise ProtocolError(f"expected 2 or 3 frames, got {len(frames)}")
    try:
        topic_s = bytes(_as_buffer(frames[0])).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"topic is not UTF-8: {e}") from e
    try:
        header = msgpack.unpackb(_as_buffer(frames[1]), raw=False)
    except Exception as e:  # msgpack raises ValueError subclasses, StackError, ...
        raise ProtocolError(f"header is not msgpack: {type(e).__name__}: {e}") from e
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a msgpack map, got {type(header).__name__}")
    version = _get(header, "v", "header")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r} "
                            f"(this decoder speaks {PROTOCOL_VERSION})")
    kind = _str(header, "type", "header")
    camera = _str(header, "camera", "header")
    if CAMERA_RE.fullmatch(camera) is None:
        raise ProtocolError(f"header: invalid camera name {camera!r:.80}")
    if kind not in (TOPIC_RESULT, TOPIC_EOS):
        raise ProtocolError(f"unknown message type {kind!r:.40}")
    if topic_s != f"{camera}/{kind}":
        raise ProtocolError(f"topic {topic_s!r:.80} does not match header ({camera}/{kind})")

    if kind == TOPIC_EOS:
        if len(frames) != 2:
            raise ProtocolError(f"eos: expected 2 frames, got {len(frames)}")
        return EndOfStream(camera=camera, last_seq=_int(header, "seq", "eos", -1, MAX_SEQ),
                           reason=_str(header, "reason", "eos"),
                           t_publish_ns=_int(header, "t_publish_ns", "eos"),
                           boot=_boot(header))

    where = "header"
    seq = _int(header, "seq", where, 0, MAX_SEQ)
    t_capture = _int(header, "t_capture_ns", where)
    t_publish = _int(header, "t_publish_ns", where)
    frame_w, frame_h = _ints(header, "frame", where, 2, 1, MAX_DIM)
    model = _str(header, "model", where)
    classes = _strs(header, "classes", where)
    boxes = _float_array(_list(header, "boxes", where), "boxes", 4)
    scores = _float_array(_list(header, "scores", where), "scores", None)
    ids = _list(header, "class_ids", where)
    if not all(isinstance(i, int) and not isinstance(i, bool) and _INT32_MIN <= i <= _INT32_MAX
               for i in ids):
        raise ProtocolError("header: 'class_ids' must be a list of int32")
    class_ids = np.array(ids, np.int32)
    if not len(boxes) == len(scores) == len(class_ids):
        raise ProtocolError(f"header: {len(boxes)} boxes, {len(scores)} scores, "
                            f"{len(class_ids)} class_ids")
    timing = _get(header, "timing_ms", where)
    if not isinstance(timing, dict) or not all(isinstance(k, str) and _is_num(v)
                                               for k, v in timing.items()):
        raise ProtocolError("header: 'timing_ms' must be a map of str -> number")
    flags = _strs(header, "flags", where)

    problems: list[str] = []
    mask_h = _get(header, "mask", where)
    mask: np.ndarray | None = None
    mask_classes: tuple[str, ...] = ()
    letterbox = None
    if mask_h is None:
        if len(frames) != 2:
            raise ProtocolError(f"header has no mask but the message has {len(frames)} frames")
    else:
        if not isinstance(mask_h, dict):
            raise ProtocolError(f"header: 'mask' must be a map or nil, got {type(mask_h).__name__}")
        if len(frames) != 3:
            raise ProtocolError("header announces a mask but there is no mask frame")
        where = "mask"
        mh, mw = _ints(mask_h, "shape", where, 2, 1, MAX_DIM)
        if (dtype := _str(mask_h, "dtype", where)) != "uint8":
            raise ProtocolError(f"mask: unsupported dtype {dtype!r:.40}")
        encoding = _str(mask_h, "encoding", where)
        mask_classes = _strs(mask_h, "classes", where)
        _nums(mask_h, "to_camera", where, 2)  # validated; derivable from frame and shape
        letterbox = _letterbox(mask_h.get("letterbox"))
        if encoding in MASK_ENCODINGS:
            mask = decode_mask(_as_buffer(frames[2]), (mh, mw), encoding)
        else:  # a newer publisher's encoding: the mask is unusable, the rest is not
            problems.append(f"mask: unknown encoding {encoding!r:.40}, left out")
    instances = _decode_instances(header.get("instances"), len(boxes), frame_w, frame_h,
                                  problems)
    tracks = _decode_tracks(header.get("tracks"), len(boxes), problems)
    track_ids, velocities, epoch, active = tracks if tracks is not None else (
        None, None, None, None)

    return Message(
        camera=camera, seq=seq, t_capture_ns=t_capture, t_publish_ns=t_publish,
        frame_w=frame_w, frame_h=frame_h, model=model, class_names=classes,
        boxes=boxes.reshape(-1, 4), scores=scores, class_ids=class_ids, mask=mask,
        mask_classes=mask_classes, timings_ms={k: float(v) for k, v in timing.items()},
        flags=flags, letterbox=letterbox, t_received_ns=t_received_ns, instances=instances,
        boot=_boot(header), problems=tuple(problems), track_ids=track_ids,
        velocities=velocities, track_epoch=epoch, tracks_active=active)
