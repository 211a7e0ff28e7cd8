"""The composition root: the one place that names every output.

The daemon (`edged.daemon`) builds sinks only from what it is handed here, so it names
none of them; `edged check` and `edged run` take the same list, and the config loader
the sections it declares (`SECTIONS`), so nothing below names an output either. An
output is one package under `edged/outputs/` declaring `OUTPUT` plus one line below;
the order is the order of their sinks (each on its own thread, so it changes nothing
but the stats' order) and of their sections in the config's did-you-mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edged.config import Section
from edged.outputs import foxglove, record, ros2, view, zmq
from edged.outputs.base.output import Output, output_sections

OUTPUTS: tuple[Output[Any], ...] = (
    zmq.OUTPUT,
    view.OUTPUT,
    foxglove.OUTPUT,
    record.OUTPUT,
    ros2.OUTPUT,
)

# the output sections a config file may have (`load_config(path, sections=SECTIONS)`)
SECTIONS: Mapping[str, type[Section]] = output_sections(OUTPUTS)
