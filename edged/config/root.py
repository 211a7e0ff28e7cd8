"""`Config`: the whole file, one field per section; `config_class` adds the outputs'."""

from __future__ import annotations

import functools
import keyword
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import pydantic
from pydantic import Field, field_validator, model_validator

from edged.config.camera import BudgetConfig, CameraConfig
from edged.config.errors import custom_error
from edged.config.fields import CameraName, Frozen, Section
from edged.config.log import LogConfig
from edged.config.model import ModelConfig
from edged.config.publish import PublishConfig
from edged.redaction import Redactor
from edged.tracking.config import TrackingConfig

# Cameras one daemon serves (enabled ones; disabled ones cost nothing). Measured up to
# 100 synthetic cameras on 2 cores in docs/benchmarks.md ("Scale: many cameras"); far
# beyond it start-up and stop outgrow systemd's timeouts, so more is a config error.
MAX_CAMERAS: Final = 128
# The sections every config file may have (the outputs' follow them: `file_sections`);
# `source_file` and `secrets` are Config fields set by the loader, never written in the file.
CORE_SECTIONS: Final = ("model", "camera_defaults", "cameras", "publish", "budget", "log",
                        "tracking")

S = TypeVar("S", bound=Section)


class Config(Frozen):
    """The core sections; `config_class` adds a field per output section."""

    model: ModelConfig
    cameras: dict[CameraName, CameraConfig]  # camera_defaults and budget already merged in
    publish: PublishConfig = Field(default_factory=PublishConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)  # merged into cameras
    source_file: Path | None = None  # None: parsed from a string
    # the values ${VAR} substitutions inserted (set by the loader, never in the file):
    # hidden in every output by `redactor()`
    secrets: frozenset[str] = Field(default_factory=frozenset, exclude=True, repr=False)

    def redactor(self) -> Redactor:
        """The redaction every rendering of a source or config value goes through."""
        return Redactor(self.secrets)

    def section(self, model: type[S]) -> S | None:
        """The section whose type is `model` (`config.section(ViewConfig)`, typed as
        such); None when the file leaves it out or this config has no such section (the
        loader was not given it)."""
        name = _field_of(type(self), model)
        value = None if name is None else getattr(self, name)
        if value is None or isinstance(value, model):
            return value
        raise TypeError(f"Config.{name} is a {type(value).__name__}, not a {model.__name__}")

    @model_validator(mode="after")
    def _sections_agree(self) -> Config:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, Section):
                value.check_with(self)
        return self

    @field_validator("cameras")
    @classmethod
    def _at_least_one(cls, cameras: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        if not cameras:
            raise custom_error("no_cameras", "at least one camera is required")
        enabled = sum(c.enabled for c in cameras.values())
        if enabled > MAX_CAMERAS:
            raise custom_error(
                "too_many_cameras",
                f"{enabled} enabled cameras; edged serves at most MAX_CAMERAS = {MAX_CAMERAS} "
                "per daemon (each is a capture thread, a publish queue share and, when "
                "synthetic, 15 to 35 MB of scene; see docs/benchmarks.md, \"Scale: many "
                "cameras\"): disable some (enabled: false) or run a second edged")
        return cameras


@functools.cache
def _field_of(cls: type[Config], model: type[Section]) -> str | None:
    for name, field in cls.model_fields.items():
        if model in (field.annotation, *typing.get_args(field.annotation)):
            return name
    return None


def config_class(sections: Mapping[str, type[Section]]) -> type[Config]:
    """`Config` with an optional field per output section (`name: Model | None = None`,
    None: the output is off), so that one validation covers the whole file. `sections`
    comes from the composition root (`edged.app.SECTIONS`); ValueError for a name that
    cannot be a section or a model given twice."""
    core = set(CORE_SECTIONS) | set(Config.model_fields)
    for name, model in sections.items():
        if name in core or not name.isidentifier() or keyword.iskeyword(name) \
                or name.startswith("_"):
            raise ValueError(f"output section {name!r}: not a name an output section can "
                             f"have (a core section, or not an identifier)")
        if not (isinstance(model, type) and issubclass(model, Section)):
            raise ValueError(f"output section {name!r}: {model!r} is not a Section model")
        # `section(model)` finds a section by its model: one section per model
        if list(sections.values()).count(model) > 1 or _field_of(Config, model) is not None:
            raise ValueError(f"output section {name!r}: {model.__name__} is another "
                             "section's model too; each section needs a model of its own")
    return _with_sections(tuple(sections.items()))


@functools.cache
def _with_sections(sections: tuple[tuple[str, type[Section]], ...]) -> type[Config]:
    if not sections:
        return Config
    fields: dict[str, Any] = {name: (model | None, None) for name, model in sections}
    cls: type[Config] = pydantic.create_model(
        "Config", __base__=Config, __module__=__name__, **fields)
    return cls


def file_sections(cls: type[Config]) -> tuple[str, ...]:
    """The sections a file may have for a config of this class: the core ones, then the
    outputs' (for an unknown section's did-you-mean)."""
    return (*CORE_SECTIONS, *(n for n in cls.model_fields if n not in Config.model_fields))
