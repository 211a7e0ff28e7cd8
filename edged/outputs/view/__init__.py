"""The live view in the browser (`view:` in the config, optional extra `edged[view]`).

`settings` is its config section (`ViewConfig`); `server` holds the aiohttp server and
the sink that feeds it (drawing with `edged.outputs.base.draw`); `page.html` is the page
(no external resources, works offline).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from edged.errors import UserError
from edged.outputs.base.output import Held, Output
from edged.outputs.base.sink import Sink
from edged.outputs.view.settings import ViewConfig

if TYPE_CHECKING:
    from edged.config import Config
    from edged.outputs.view.server import ViewSink


class ViewError(UserError, RuntimeError):
    """The view cannot start (its optional extra is not installed)."""

    prefix = "view: "


def require_aiohttp() -> None:
    """ViewError naming the extra when aiohttp is missing (`edged check` asks too)."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise ViewError("the live view needs aiohttp: pip install 'edged[view]'") from None


def make_view_sink(config: ViewConfig, cameras: list[str],
                   sock: socket.socket | None = None) -> ViewSink:
    """The view's sink, listening on `sock` (else bound here: ListenError), over TLS
    with `view.tls` (its files are read here: ListenError)."""
    require_aiohttp()
    from edged.outputs.base.listen import bind_tcp, server_context
    from edged.outputs.view.server import ViewSink

    tls = server_context(config.tls, "view.tls") if config.tls is not None else None
    if sock is None:
        sock = bind_tcp(config.listen, "view.listen")
    return ViewSink(config, sock, cameras, tls)


def _check(config: Config, c: ViewConfig, held: list[Held]) -> str:
    from edged.outputs.base.listen import bind_tcp, server_context

    if c.tls is not None:
        server_context(c.tls, "view.tls")
    held.append(bind_tcp(c.listen, "view.listen"))
    return (f"view: {'https' if c.tls else 'http'}://{c.listen}/: bound OK"
            + (" (token required)" if c.token else ""))


def _build(config: Config, c: ViewConfig, cameras: list[str]) -> Sink:
    return make_view_sink(c, cameras)


# a small queue: the view draws at most view.fps per camera anyway
OUTPUT = Output("view", ViewConfig, queue_size=2, require=lambda _, __: require_aiohttp(),
                check=_check, build=_build)
