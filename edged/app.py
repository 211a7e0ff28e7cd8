"""The composition root: the one place that names every output.

The daemon (`edged.daemon`) builds sinks only from what it is handed here, so it names
none of them; `edged check` and `edged run` take the same list. An output is one package
under `edged/outputs/` declaring `OUTPUT` plus one line below; the order is the order of
their sinks (each on its own thread, so it changes nothing but the stats' order).
"""

from __future__ import annotations

from edged.outputs import foxglove, record, ros2, view, zmq
from edged.outputs.base.output import Output

OUTPUTS: tuple[Output, ...] = (
    zmq.OUTPUT,
    view.OUTPUT,
    foxglove.OUTPUT,
    record.OUTPUT,
    ros2.OUTPUT,
)
