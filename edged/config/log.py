"""`log`: the level, the statistics interval and the Prometheus endpoint."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field, field_validator

from edged.config.fields import Float, Frozen
from edged.config.network import HostPortAddress, host_is_loopback

MIN_STATS_INTERVAL_S: Final = 0.1  # log.stats_interval_s: each report costs a snapshot
MAX_STATS_INTERVAL_S: Final = 3600.0


class LogConfig(Frozen):
    level: Literal["debug", "info", "warning", "error"] = "info"
    stats_interval_s: Float = Field(5.0, ge=MIN_STATS_INTERVAL_S, le=MAX_STATS_INTERVAL_S)
    # Prometheus text endpoint "HOST:PORT" (e.g. "127.0.0.1:9464", "[::1]:9464"); None: off
    metrics: HostPortAddress | None = None

    def metrics_exposed(self) -> bool:
        """Whether /metrics is reachable from other machines: allowed without a flag (a
        Prometheus server scrapes from elsewhere; it serves counters, never results,
        images or secrets), and warned about at every start and by `edged check`."""
        return self.metrics is not None and not host_is_loopback(self.metrics)

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        # Case-insensitive, but an invalid level is reported as written.
        if isinstance(value, str) and value.lower() in ("debug", "info", "warning", "error"):
            return value.lower()
        return value
