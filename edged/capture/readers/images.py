"""A folder (or glob) of images as a camera, each image's size checked before decoding."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import cv2
import numpy as np

from edged.capture.base import CorruptFrame, SourceError
from edged.capture.defaults import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS
from edged.capture.readers.mjpeg import jpeg_size


def image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP or WebP header without decoding the image;
    None for other formats or an unreadable header (OpenCV's own pixel limit, set from
    max_pixels at start by `limit_image_decoding`, covers those)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
            if head.startswith(b"BM") and len(head) >= 26:
                w = int.from_bytes(head[18:22], "little", signed=True)
                h = int.from_bytes(head[22:26], "little", signed=True)
                return abs(w), abs(h)
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                kind = head[12:16]
                if kind == b"VP8 " and len(head) >= 30:
                    return (int.from_bytes(head[26:28], "little") & 0x3FFF,
                            int.from_bytes(head[28:30], "little") & 0x3FFF)
                if kind == b"VP8L" and len(head) >= 25:
                    b = int.from_bytes(head[21:25], "little")
                    return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
                if kind == b"VP8X" and len(head) >= 30:
                    return (int.from_bytes(head[24:27], "little") + 1,
                            int.from_bytes(head[27:30], "little") + 1)
                return None
            if head[:2] == b"\xff\xd8":
                return jpeg_size(f)
    except OSError:
        return None
    return None


def limit_image_decoding(max_pixels: int) -> None:
    """OpenCV's own bound on a decoded image's pixels (OPENCV_IO_MAX_IMAGE_PIXELS, read by
    OpenCV at its first decode): the backstop for formats `image_size` cannot read. Set
    once, before the first frame, from the largest camera max_pixels; an explicit
    environment setting wins."""
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_pixels))


class ImageFolderSource:
    """A folder of images or a glob, in name order."""

    live = False

    def __init__(self, pattern: str, loop: bool, description: str = "",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.pattern, self.loop = pattern, loop
        self.max_pixels = max_pixels
        self.files: list[str] = []
        self.pos = 0
        self._bad_in_pass = 0  # a looping folder with no readable image is an error
        self.description = description or f"images {pattern}"

    def open(self) -> None:
        p = Path(self.pattern)
        if p.is_dir():
            files = [str(f) for f in sorted(p.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
        else:
            files = sorted(glob.glob(self.pattern))
        if not files:
            raise SourceError(f"no images match {self.description.removeprefix('images ')}")
        self.files = files

    def read(self) -> np.ndarray | None:
        if self.pos >= len(self.files):
            if not self.loop:
                return None
            if self._bad_in_pass == len(self.files):
                raise SourceError(f"no readable image in {self.pattern}")
            self.pos = 0
            self._bad_in_pass = 0
        path = self.files[self.pos]
        self.pos += 1
        size = image_size(path)  # from the header: a huge image is never decoded
        if size is not None and size[0] * size[1] > self.max_pixels:
            self._bad_in_pass += 1
            raise CorruptFrame(f"image {path} is {size[0]}x{size[1]} = {size[0] * size[1]} "
                               f"pixels, above max_pixels {self.max_pixels}")
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:  # replaced, truncated or not an image: skipped and counted
            self._bad_in_pass += 1
            raise CorruptFrame(f"unreadable image {path}")
        return img

    def close(self) -> None:
        pass

    def default_fps(self) -> float | None:
        return None

    def fresh(self) -> ImageFolderSource:
        new = ImageFolderSource(self.pattern, self.loop, self.description, self.max_pixels)
        new.pos = self.pos
        return new
