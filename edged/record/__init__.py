"""MCAP recording (`record:` in the config, `edged record`, `edged replay`; optional
extra `edged[record]`).

`files` writes rotated MCAP files into a bounded directory; `sink` is the recorder (all
the time, or a flight recorder of the seconds around an event); `replay` publishes a
recording on ZeroMQ again with its original timing.

A recording holds, per camera, the Foxglove messages (`/<camera>/image` JPEG when
`record.frames`, `/<camera>/mask` mono8 class ids, `/<camera>/annotations`; protobuf,
so Foxglove opens the file) and edged's own wire messages (`/<camera>/edged` and
`/edged/control`, message encoding `edged.multipart`: a msgpack array of the ZeroMQ
frames, exactly as published; docs/protocol.md).
"""

from __future__ import annotations

WIRE_ENCODING = "edged.multipart"


class RecordError(RuntimeError):
    """Recording cannot start (its extra is missing, or its directory is unusable)."""


def require_record() -> None:
    try:
        import foxglove  # noqa: F401
        import mcap  # noqa: F401
    except ImportError:
        raise RecordError("recording needs mcap and foxglove-sdk: pip install "
                          "'edged[record]'") from None
