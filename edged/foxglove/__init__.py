"""Foxglove live (`foxglove:` in the config, optional extra `edged[foxglove]`).

`messages` turns a result and its frame into Foxglove schema messages (shared with the
MCAP recorder); `sink` holds the WebSocket server (foxglove-sdk) and the sink that logs
to its channels.
"""

from __future__ import annotations


class FoxgloveError(RuntimeError):
    """Foxglove live cannot start (its extra is missing, or its port cannot be bound)."""


def require_foxglove() -> None:
    try:
        import foxglove  # noqa: F401
    except ImportError:
        raise FoxgloveError("Foxglove live needs foxglove-sdk: pip install "
                            "'edged[foxglove]'") from None
