"""The value types the sections share: numbers that refuse true/false, paths relative to
the config's folder, camera names, and the frozen base of every section."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo

from edged.config.errors import custom_error
from edged.names import camera_name_problem

if TYPE_CHECKING:
    from edged.config.root import Config


def _not_bool(value: object) -> object:
    # pydantic's lax mode reads true as 1; in a config file that is always a slip.
    if isinstance(value, bool):
        raise custom_error("bool_not_number", "expected a number, not true/false")
    return value


# Lax otherwise, on purpose: a ${VAR} substitution always yields a string, so "15" must be
# accepted where a number is expected.
Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]


def _check_camera_name(name: str) -> str:
    # the codec's rule (edged.names): the name becomes the ZeroMQ topic
    problem = camera_name_problem(name)
    if problem is not None:
        raise custom_error("camera_name", problem)
    return name


CameraName = Annotated[str, AfterValidator(_check_camera_name)]

class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Section(Frozen):
    """The base of an output's config section (`publish`, and each output's
    `edged/outputs/<name>/settings.py`); `Config.section(<its class>)` finds it."""

    def check_with(self, config: Config) -> None:
        """Raise a `custom_error` when this section and the rest of the file disagree
        (run once the whole file is validated)."""


def config_path(value: str | Path, info: ValidationInfo) -> Path:
    """A path as written in the config -> absolute, relative ones from the config's folder."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path((info.context or {}).get("base_dir") or Path.cwd()) / path
    # normpath, not resolve(): keep symlinks as the user wrote them, only drop "..".
    return Path(os.path.normpath(path.absolute()))


def _path_in_config(value: Any, info: ValidationInfo) -> Any:
    return config_path(value, info) if isinstance(value, str | Path) else value


# a file or folder named in the config: relative ones from the config's folder
ConfigPath = Annotated[Path, BeforeValidator(_path_in_config)]
