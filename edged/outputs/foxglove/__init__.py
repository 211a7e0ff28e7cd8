"""Foxglove live (`foxglove:` in the config, optional extra `edged[foxglove]`).

`settings` is its config section (`FoxgloveConfig`); `messages` turns a result and its
frame into Foxglove schema messages (shared with the MCAP recorder); `sink` holds the
WebSocket server (foxglove-sdk) and the sink that logs to its channels.
"""

from __future__ import annotations

from edged.config import Config
from edged.errors import UserError
from edged.outputs.base.output import Held, Output
from edged.outputs.base.sink import Sink
from edged.outputs.foxglove.settings import FoxgloveConfig


class FoxgloveError(UserError, RuntimeError):
    """Foxglove live cannot start (its extra is missing, or its port cannot be bound)."""


def require_foxglove() -> None:
    try:
        import foxglove  # noqa: F401
    except ImportError:
        raise FoxgloveError("Foxglove live needs foxglove-sdk: pip install "
                            "'edged[foxglove]'") from None


def _check(config: Config, c: FoxgloveConfig, held: list[Held]) -> str:
    import foxglove

    from edged.outputs.foxglove.sink import start_server

    start_server(c, foxglove.Context()).stop()
    return f"foxglove: {'wss' if c.tls else 'ws'}://{c.listen}: bound OK"


def _build(config: Config, c: FoxgloveConfig, cameras: list[str]) -> Sink:
    from edged.outputs.foxglove.sink import FoxgloveSink

    return FoxgloveSink(c, cameras)


OUTPUT = Output("foxglove", FoxgloveConfig, queue_size=4,
                require=lambda _, __: require_foxglove(), check=_check, build=_build)
