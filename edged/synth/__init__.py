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

The package: `world` (field, layout, camera path), `frames` (rendering and ground truth).
"""

from edged.synth.frames import Renderer, objects, render, renderer
from edged.synth.world import CLASS_NAMES, SEG_CLASS_NAMES, Scene

__all__ = ["CLASS_NAMES", "SEG_CLASS_NAMES", "Renderer", "Scene", "objects", "render", "renderer"]
