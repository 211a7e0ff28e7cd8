"""`view`: the live view in the browser."""

from __future__ import annotations

from typing import Final

from pydantic import Field, field_validator, model_validator

from edged.config.errors import custom_error
from edged.config.fields import Float, Int, Section
from edged.config.network import HostPortAddress, TlsConfig, host_is_loopback

MIN_VIEW_TOKEN: Final = 16  # characters: a token is a password typed by nobody


class ViewConfig(Section):
    """The live view in the browser (`edged[view]`); off unless the section is present."""

    listen: HostPortAddress = "127.0.0.1:8080"  # HOST:PORT; anything but loopback needs `token`
    fps: Float = Field(5.0, gt=0, le=30)  # per camera, the most a viewer is sent
    quality: Int = Field(70, ge=10, le=100)  # JPEG quality
    token: str | None = None  # asked for on the page and the stream when set
    max_viewers: Int = Field(8, ge=1, le=64)
    tls: TlsConfig | None = None  # https (and wss) instead of http

    @field_validator("token")
    @classmethod
    def _token_length(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_VIEW_TOKEN:
            raise custom_error("short_token", f"a view token needs at least {MIN_VIEW_TOKEN} "
                                "characters (e.g. from `openssl rand -hex 16`)")
        return value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> ViewConfig:
        if self.token is None and not host_is_loopback(self.listen):
            raise custom_error(
                "view_needs_token",
                f"view.listen {self.listen!r} is reachable from other machines: set "
                "view.token (e.g. token: ${EDGED_VIEW_TOKEN}) so that only those who have "
                "it can watch, or listen on 127.0.0.1")
        return self
