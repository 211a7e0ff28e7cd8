"""The frames: calibration and held-out frames from cameras, a folder, a video or synthetic
scenes, turned into the model's own input tensors, and the search's progress line."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edged.inference.preprocess import Preprocessor, PreprocessSpec
from edged.synth import render
from edged.tools.evaluate import scene_ids
from edged.tools.quantize.choices import (
    CALIBRATION_SEED,
    HOLDOUT_SEED,
    QuantizeError,
)


@dataclass
class FrameSet:
    """BGR frames for calibration and for the held-out check, and where they came from."""

    calibration: list[np.ndarray]
    holdout: list[np.ndarray]
    source: str
    truth: list[Any] | None = None  # edged.synth.Scene per held-out frame, when known


def synthetic_frames(count: int, holdout: int, width: int = 640,
                     height: int = 480) -> FrameSet:
    """Calibration from training seeds (8 frames per sequence), held out from eval seeds."""
    cal = [render(CALIBRATION_SEED + i // 8, (i % 8) * 131, width, height).image
           for i in range(count)]
    scenes = [render(seq, idx, width, height) for seq, idx in scene_ids(holdout, HOLDOUT_SEED)]
    return FrameSet(cal, [s.image for s in scenes],
                    f"synthetic scenes (calibration seeds {CALIBRATION_SEED}+, held-out seeds "
                    f"{HOLDOUT_SEED}+)", truth=scenes)


def _split(frames: list[np.ndarray], count: int, holdout: int, source: str) -> FrameSet:
    """The last `holdout` frames are held out (later in a video: not near-duplicates of
    calibration frames); with too few frames, a quarter is held out."""
    if len(frames) < 2:
        raise QuantizeError(f"{source}: need at least 2 readable frames (one to calibrate, "
                            f"one to check), got {len(frames)}")
    if len(frames) < count + holdout:
        holdout = max(1, len(frames) // 4)
    return FrameSet(frames[:len(frames) - holdout][:count], frames[len(frames) - holdout:],
                    source)


def _even_indices(total: int, want: int) -> set[int]:
    if total <= want:
        return set(range(total))
    return {int(i * total / want) for i in range(want)}


def video_frames(path: Path, count: int, holdout: int) -> FrameSet:
    """Frames spread evenly over the whole video (neighbouring frames add little)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise QuantizeError(f"cannot open video {path}")
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        keep = _even_indices(total, count + holdout) if total > 0 else None
        frames: list[np.ndarray] = []
        # streams without a frame count: the first count + holdout frames
        last = total if keep is not None else count + holdout
        for i in range(last):
            ok, img = cap.read()
            if not ok or img is None:
                break
            if keep is None or i in keep:
                frames.append(img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    finally:
        cap.release()
    return _split(frames, count, holdout, f"video {path}")


def image_frames(folder: Path, count: int, holdout: int) -> FrameSet:
    import cv2

    from edged.capture.defaults import IMAGE_EXTENSIONS

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise QuantizeError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}")
    frames = []
    for i in sorted(_even_indices(len(files), count + holdout)):
        img = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
        if img is not None:
            frames.append(img)
    return _split(frames, count, holdout, f"{len(frames)} images from {folder}")


def config_frames(config: Any, count: int, holdout: int) -> FrameSet:
    """Frames from the configured cameras, read with edged's own sources, in turn."""
    from edged.capture.base import SourceError
    from edged.capture.sources import source_for

    redact = config.redactor()
    cams = [(name, c) for name, c in config.cameras.items() if c.enabled]
    if not cams:
        raise QuantizeError("the configuration has no enabled camera")
    per_cam = math.ceil((count + holdout) / len(cams))
    frames: list[np.ndarray] = []
    names = []
    for name, cam in cams:
        src = source_for(cam, loop=False, redactor=redact)
        try:
            src.open()
            got = 0
            while got < per_cam:
                img = src.read()
                if img is None:
                    break
                frames.append(img)
                got += 1
        except SourceError as e:
            raise QuantizeError(f"camera {name}: {e}") from None
        finally:
            src.close()
        names.append(f"{name} ({redact(cam.source)})")
    # held out: the last frames read, i.e. the last camera's when there are several
    return _split(frames, count, holdout, "cameras " + ", ".join(names))


def frames_for(path: str | None, config: Any | None, count: int, holdout: int) -> FrameSet:
    if config is not None:
        return config_frames(config, count, holdout)
    if path is None:
        return synthetic_frames(count, holdout)
    p = Path(path)
    if p.is_dir():
        return image_frames(p, count, holdout)
    if p.is_file():
        return video_frames(p, count, holdout)
    raise QuantizeError(f"--frames {path}: no such folder or video file")


def tensors(frames: Iterable[np.ndarray], spec: PreprocessSpec, unbatched: bool = False
            ) -> list[np.ndarray]:
    """The model's input tensors for `frames`, through edged's own pre-processing."""
    pre = Preprocessor(spec)
    out = []
    for img in frames:
        pre(img)
        out.append(pre.tensor[0].copy() if unbatched else pre.tensor.copy())
    return out


# ----------------------------------------------------------------------------- progress


class Progress:
    """A bar on a terminal; plain lines every ~10 % (or 5 s) when stderr is a file/pipe."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last_line = 0.0
        self._last_pct = -1

    def __call__(self, label: str, done: int, total: int) -> None:
        if self.tty:
            width = 30
            fill = int(width * done / max(total, 1))
            end = "\n" if done >= total else ""
            print(f"\r{label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}", end=end,
                  file=self.stream, flush=True)
            return
        pct = int(100 * done / max(total, 1)) // 10 * 10
        now = time.monotonic()
        if done >= total or pct > self._last_pct or now - self._last_line >= 5.0:
            if done < total and pct == self._last_pct and now - self._last_line < 5.0:
                return
            print(f"{label}: {done}/{total}", file=self.stream, flush=True)
            self._last_pct, self._last_line = pct, now
            if done >= total:
                self._last_pct = -1


class CalibrationReader(CalibrationDataReader):
    """Feeds calibration tensors; `set_range` lets onnxruntime calibrate in strides so
    the intermediate outputs of only a few frames are held in memory at once."""

    def __init__(self, input_name: str, data: list[np.ndarray],
                 progress: Callable[[int, int], None] | None) -> None:
        self.input_name, self.data, self.progress = input_name, data, progress
        self.start, self.end = 0, len(data)
        self.pos = 0
        self.served = 0

    def __len__(self) -> int:
        return len(self.data)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, min(end_index, len(self.data))
        self.pos = self.start

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= self.end:
            return None
        t = self.data[self.pos]
        self.pos += 1
        self.served += 1
        if self.progress is not None:
            self.progress(self.served, len(self.data))
        return {self.input_name: t}

    def rewind(self) -> None:
        self.start, self.end, self.pos, self.served = 0, len(self.data), 0, 0
