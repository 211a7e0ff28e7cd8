"""`foxglove`: Foxglove live, a WebSocket server in the daemon."""

from __future__ import annotations

from pydantic import Field, model_validator

from edged.config.errors import custom_error
from edged.config.fields import Int, Section
from edged.config.network import HostPortAddress, TlsConfig, host_is_loopback


class FoxgloveConfig(Section):
    """Foxglove live (`edged[foxglove]`): a Foxglove WebSocket server in the daemon."""

    listen: HostPortAddress = "127.0.0.1:8765"  # HOST:PORT
    quality: Int = Field(80, ge=10, le=100)  # JPEG quality of the camera image channel
    # the Foxglove WebSocket protocol has no authentication: off loopback only on request
    allow_remote: bool = False
    tls: TlsConfig | None = None  # wss:// instead of ws:// (encryption, not authentication)
    # messages queued per client; a client that reads slower keeps the newest ones. The
    # worst case is this many of the largest message (a 720p mono8 mask: 0.9 MB): with 32
    # a stalled client cost +19 MB at 720p 30 fps, with foxglove-sdk's default (1024)
    # +274 MB (docs/benchmarks.md, "Foxglove clients")
    client_backlog: Int = Field(32, ge=1, le=100_000)

    @model_validator(mode="after")
    def _remote_on_request(self) -> FoxgloveConfig:
        if not self.allow_remote and not host_is_loopback(self.listen):
            raise custom_error(
                "foxglove_remote",
                f"foxglove.listen {self.listen!r} is reachable from other machines, and the "
                "Foxglove WebSocket protocol has no authentication: listen on 127.0.0.1 and "
                "tunnel (ssh -L 8765:127.0.0.1:8765 robot), or set foxglove.allow_remote: "
                "true on a trusted network")
        return self
