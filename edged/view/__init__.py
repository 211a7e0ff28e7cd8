"""The live view in the browser (`view:` in the config, optional extra `edged[view]`).

`overlay` draws results onto frames; `server` holds the aiohttp server and the sink
that feeds it; `page.html` is the page (no external resources, works offline).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edged.config import ViewConfig
    from edged.view.server import ViewSink


class ViewError(RuntimeError):
    """The view cannot start (its optional extra is not installed)."""


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
    from edged.daemon.listen import bind_tcp, server_context
    from edged.view.server import ViewSink

    tls = server_context(config.tls, "view.tls") if config.tls is not None else None
    if sock is None:
        sock = bind_tcp(config.listen, "view.listen")
    return ViewSink(config, sock, cameras, tls)
