"""The configuration layer: one YAML file, parsed once into typed, frozen pydantic models.

`loader` reads the file (through `reader`, the YAML with its line numbers) and maps every
problem back to its line (`errors`); each core section has its own schema module
(`model`, `camera`, `publish`, `log`), `root` the whole file; `network` validates every
address once. An output's section is its own (`edged/outputs/<name>/settings.py`, a
`Section`): the loader is handed those as values (`load_config(path, sections=...)`, from
`edged.app.SECTIONS`), so nothing here names an output. Callers import from `edged.config`.
"""

from __future__ import annotations

from edged.config.camera import MAX_SIDE, BudgetConfig, CameraConfig
from edged.config.errors import NO_VALUE, ConfigError, ConfigIssue
from edged.config.fields import Section
from edged.config.loader import (
    MAX_CONFIG_BYTES,
    NO_SECTIONS,
    default_config_path,
    load_config,
    parse_config,
)
from edged.config.log import LogConfig
from edged.config.model import (
    KNOWN_PROVIDERS,
    LadderConfig,
    ModelConfig,
    PreprocessConfig,
    ProviderSpec,
    VariantConfig,
    builtin_variant,
    known_formats,
)
from edged.config.network import TlsConfig, check_host_port, host_is_loopback, is_loopback_host
from edged.config.publish import CurveConfig, PublishConfig
from edged.config.root import MAX_CAMERAS, Config, config_class
from edged.names import CAMERA_NAME_RE

__all__ = [
    "CAMERA_NAME_RE",
    "KNOWN_PROVIDERS",
    "MAX_CAMERAS",
    "MAX_CONFIG_BYTES",
    "MAX_SIDE",
    "NO_SECTIONS",
    "NO_VALUE",
    "BudgetConfig",
    "CameraConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "CurveConfig",
    "LadderConfig",
    "LogConfig",
    "ModelConfig",
    "PreprocessConfig",
    "ProviderSpec",
    "PublishConfig",
    "Section",
    "TlsConfig",
    "VariantConfig",
    "builtin_variant",
    "check_host_port",
    "config_class",
    "default_config_path",
    "host_is_loopback",
    "is_loopback_host",
    "known_formats",
    "load_config",
    "parse_config",
]
