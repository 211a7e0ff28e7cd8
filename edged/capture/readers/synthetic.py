"""The synthetic camera: rendered RoboCup scenes (`edged.synth`)."""

from __future__ import annotations

from typing import Any

import numpy as np


class SyntheticSource:
    """The RoboCup scene renderer as a camera (`edged.synth`).

    It holds its seed's `edged.synth.Renderer` (layout and per-size images) for as long
    as the camera exists, so cameras with different seeds never evict each other's
    layouts."""

    live = True
    can_stall = False  # rendering never blocks: no watchdog (reader) thread needed

    def __init__(self, seed: int, width: int, height: int) -> None:
        self.seed, self.width, self.height = seed, width, height
        self.index = 0
        self.description = f"synthetic seed {seed} {width}x{height}"
        self._renderer: Any = None  # edged.synth.Renderer, from the first open

    def open(self) -> None:
        if self._renderer is None:
            from edged import synth  # only cameras that use it pay for the import

            self._renderer = synth.renderer(self.seed)

    def read(self) -> np.ndarray | None:
        img = self._renderer.render(self.index, self.width, self.height).image
        self.index += 1
        return img

    def close(self) -> None:
        pass  # the renderer stays: a reopen after a restart needs it again

    def default_fps(self) -> float | None:
        return 15.0

    def fresh(self) -> SyntheticSource:
        new = SyntheticSource(self.seed, self.width, self.height)
        new.index = self.index  # the scene sequence carries on
        new._renderer = self._renderer
        return new
