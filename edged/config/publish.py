"""`publish`: the ZeroMQ endpoints, CURVE, and what every message carries."""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import Field, field_validator, model_validator

from edged.config.errors import custom_error
from edged.config.fields import ConfigPath, Float, Frozen, Int, Section
from edged.config.network import Endpoint, is_loopback_host
from edged.names import parse_endpoint

# publish.sndhwm: messages queued per subscriber; memory is about sndhwm x message size
# (a frame with its mask is up to a few hundred KB) for every subscriber
MAX_SNDHWM: Final = 10_000


class CurveConfig(Frozen):
    """`publish.curve`: encrypt every publish connection and admit only the subscribers
    whose public keys are in `clients_dir` (see edged.wire.curve; `edged keygen`)."""

    secret_key_file: ConfigPath  # the daemon's NAME.key_secret
    clients_dir: ConfigPath  # one NAME.key (public) per admitted subscriber; re-read on SIGHUP


class PublishConfig(Section):
    curve: CurveConfig | None = None
    # publish unencrypted to anyone who reaches a non-loopback tcp endpoint (no CURVE):
    # only when said so, and warned about at every start
    insecure: bool = False
    # the cameras start once this many subscriptions have arrived (or wait_timeout_s has
    # passed): a lossless replay is then lossless at its subscribers too
    wait_for_subscribers: Int = Field(0, ge=0, le=1000)
    wait_timeout_s: Float = Field(30.0, gt=0, le=3600)
    # ipc socket files: created with this mode (octal text) and, if set, this group
    ipc_mode: str = "0600"
    ipc_group: str | None = None

    @field_validator("ipc_mode")
    @classmethod
    def _octal_mode(cls, value: str) -> str:
        if not re.fullmatch(r"0?[0-7]{3}", value):
            raise custom_error("ipc_mode", "an octal file mode such as \"0600\" or \"0660\"")
        return value

    @property
    def ipc_mode_bits(self) -> int:
        return int(self.ipc_mode, 8)
    endpoints: list[Endpoint] = Field(
        default_factory=lambda: ["tcp://127.0.0.1:5555"], min_length=1
    )
    mask_encoding: Literal["raw", "zstd", "png"] = "zstd"
    zstd_level: Int = Field(1, ge=1, le=22)
    send_masks: bool = True
    sndhwm: Int = Field(8, ge=1, le=MAX_SNDHWM)

    @field_validator("endpoints")
    @classmethod
    def _distinct(cls, endpoints: list[str]) -> list[str]:
        seen: dict[str, int] = {}
        for i, ep in enumerate(endpoints):
            if ep in seen:
                raise custom_error("endpoint_duplicate",
                                    f"{ep} is listed twice (items {seen[ep]} and {i}); "
                                    "an endpoint can be bound once")
            seen[ep] = i
        return endpoints

    def exposed(self) -> list[str]:
        """The tcp endpoints other machines can reach (not loopback)."""
        out = []
        for ep in self.endpoints:
            hp = parse_endpoint(ep).tcp
            if hp is not None and not is_loopback_host(hp.host):
                out.append(ep)
        return out

    def unencrypted_exposed(self) -> list[str]:
        """The exposed endpoints without CURVE (allowed only with `insecure`; warned
        about at every start)."""
        return self.exposed() if self.curve is None else []

    @model_validator(mode="after")
    def _curve_off_loopback(self) -> PublishConfig:
        exposed = self.unencrypted_exposed()
        if exposed and not self.insecure:
            raise custom_error(
                "publish_needs_curve",
                f"{exposed[0]} is reachable from other machines and publish.curve is not "
                "set: anyone who reaches it would read every camera's results. Set "
                "publish.curve (keys from `edged keygen`), bind 127.0.0.1, or set "
                "publish.insecure: true to publish unencrypted on purpose")
        return self
