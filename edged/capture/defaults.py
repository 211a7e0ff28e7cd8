"""Capture defaults the config validates against (standard library only, so the config
reads them without importing the sources)."""

from __future__ import annotations

from typing import Final

# what a folder source and `edged quantize --calibration` read as images
IMAGE_EXTENSIONS: Final = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff",
                                     ".webp"})
# the default of cameras.NAME.max_pixels: 8K UHD
DEFAULT_MAX_PIXELS: Final = 7680 * 4320
