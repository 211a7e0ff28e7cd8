"""`model.triton`: where the remote model is and how to reach it.

Pydantic only (no tritonclient), so `edged.config` validates a config without the
`triton` extra installed; the client checks for the extra when it is built.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = ["TritonConfig", "TlsFiles"]

# a Triton model name: what its repository accepts as a directory name
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")


def _config_path(value: Any, info: ValidationInfo) -> Any:
    """Relative paths from the config file's folder, as `edged.config` does for its own."""
    if not isinstance(value, str | Path):
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path((info.context or {}).get("base_dir") or Path.cwd()) / path
    return Path(os.path.normpath(path.absolute()))


FilePath = Annotated[Path, BeforeValidator(_config_path)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsFiles(_Frozen):
    """TLS to the server: the CA that signed its certificate, and a client certificate and
    key where the server asks for one (mutual TLS)."""

    ca: FilePath | None = None
    cert: FilePath | None = None
    key: FilePath | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsFiles:
        if (self.cert is None) != (self.key is None):
            raise PydanticCustomError("triton_tls", "cert and key go together: give both or "
                                      "neither")
        return self


class TritonConfig(_Frozen):
    """The server, the model on it, and the limits of one request."""

    # host:port of the server's gRPC (default 8001) or HTTP (default 8000) endpoint
    url: str
    protocol: Literal["grpc", "http"] = "grpc"
    model: str  # the model's name in the server's repository
    version: str = ""  # "" = the server's choice (its latest ready version)
    # one request's limit; None = `timeout_share` of the smallest camera budget, so that a
    # request that times out still leaves the local fallback time within the budget
    timeout_ms: float | None = Field(None, gt=0, le=600_000)
    timeout_share: float = Field(0.5, gt=0, lt=1)
    tls: TlsFiles | None = None
    # an auth header (e.g. Authorization: Bearer ...), its value read from the environment
    # or a file when the model loads; never logged or reported
    auth_header: str = "Authorization"
    auth_env: str | None = None
    auth_file: FilePath | None = None
    # system shared memory for inputs and outputs: only for a server on this host
    shared_memory: bool = False
    # back-off between reconnect attempts while the server is unusable: doubles from the
    # first to the last
    retry_s: float = Field(0.5, gt=0, le=60)
    retry_max_s: float = Field(5.0, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if "://" in value or not sep or not host or not port.isdigit() \
                or not 0 < int(port) < 65536:
            raise PydanticCustomError(
                "triton_url", "expected host:port (e.g. 127.0.0.1:8001), without a scheme: "
                "{value!r}", {"value": value})
        return value

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if not _MODEL_NAME.match(value):
            raise PydanticCustomError("triton_model", "a Triton model name has letters, "
                                      "digits, '_', '.' and '-' only: {value!r}",
                                      {"value": value})
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value and not value.isdigit():
            raise PydanticCustomError("triton_version", "a model version is a number, or "
                                      "empty for the server's latest: {value!r}",
                                      {"value": value})
        return value

    @field_validator("auth_header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise PydanticCustomError("triton_header", "not an HTTP header name: {value!r}",
                                      {"value": value})
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TritonConfig:
        if self.auth_env is not None and self.auth_file is not None:
            raise PydanticCustomError("triton_auth", "auth_env and auth_file both given: "
                                      "the header's value comes from one of them")
        if self.retry_max_s < self.retry_s:
            raise PydanticCustomError("triton_retry", "retry_max_s is below retry_s")
        if self.shared_memory and self.tls is not None:
            raise PydanticCustomError("triton_shm", "shared_memory is for a server on this "
                                      "host; TLS is for one elsewhere: choose one")
        return self

    def timeout_s(self, budget_ms: float) -> float:
        """One request's limit for cameras whose smallest budget is `budget_ms`."""
        ms = self.timeout_ms if self.timeout_ms is not None else budget_ms * self.timeout_share
        return ms / 1000

    @property
    def where(self) -> str:
        """The model on its server, for messages: `yoeo@127.0.0.1:8001 (grpc)`."""
        v = f" version {self.version}" if self.version else ""
        return f"triton model {self.model}{v} at {self.url} ({self.protocol})"
