"""Loading a config file, in three steps, each kept separate so that every mistake can be
traced back to the line of the file that caused it:

1. ``Reader`` (edged.config.reader) turns the YAML into plain data and the line of every
   key path, substituting ``${VAR}``.
2. ``merge_cameras`` applies ``camera_defaults`` and the global ``budget`` to each camera,
   remembering for every merged key which path of the document it came from.
3. pydantic validates the merged data (as `Config` with the output sections the caller
   gives, `config_class`); each of its errors is mapped back through those two
   tables to ``file:line: key.path: message (got value)``.

All problems found are collected and raised together as one ``ConfigError``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import stat
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Union

from pydantic import BaseModel, ValidationError

from edged.config.errors import NO_VALUE, ConfigError, ConfigIssue, Loc, did_you_mean, format_loc
from edged.config.fields import Section
from edged.config.reader import Reader, forget_below
from edged.config.root import Config, config_class, file_sections

MAX_YAML_DEPTH: Final = 64
# The config file is read up to this many bytes; a real one is a few KB, and reading
# without a bound lets `-c /dev/zero` (or a wrong file) take all the memory.
MAX_CONFIG_BYTES: Final = 1 << 20


# --------------------------------------------------------------------------- merging

def _overlay(
    dst: dict[str, Any], dst_loc: Loc, src: Mapping[str, Any], src_loc: Loc,
    origin: dict[Loc, Loc],
) -> None:
    """Merge src over dst key by key (nested mappings too), recording where values came from."""
    for key, value in src.items():
        here = (*dst_loc, key)
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _overlay(dst[key], here, value, (*src_loc, key), origin)
        else:
            forget_below(origin, here)
            dst[key] = copy.deepcopy(value)
            origin[here] = (*src_loc, key)


def merge_cameras(
    data: dict[str, Any], origin: dict[Loc, Loc], issue: Callable[[Loc, object, str], None]
) -> None:
    """Apply camera_defaults and the global budget and tracking to every camera, in place."""
    defaults = data.pop("camera_defaults", None)
    if defaults is None:
        defaults = {}
    elif not isinstance(defaults, dict):
        issue(("camera_defaults",), defaults, "camera_defaults must be a mapping of camera keys")
        defaults = {}
    elif "source" in defaults:
        issue(("camera_defaults", "source"), defaults["source"],
              "source cannot have a default; give each camera its own")
        defaults = {k: v for k, v in defaults.items() if k != "source"}

    cameras = data.get("cameras")
    if not isinstance(cameras, dict):
        return  # pydantic reports the wrong type
    shared = {k: data[k] for k in ("budget", "tracking") if isinstance(data.get(k), dict)}
    merged_cameras: dict[str, Any] = {}
    for name, camera in cameras.items():
        loc: Loc = ("cameras", name)
        origin[loc] = loc
        if camera is None:
            camera = {}  # `front:` alone: pydantic then reports the missing source
        if not isinstance(camera, dict):
            merged_cameras[name] = camera
            continue
        merged: dict[str, Any] = {}
        _overlay(merged, loc, shared, (), origin)
        _overlay(merged, loc, defaults, ("camera_defaults",), origin)
        _overlay(merged, loc, camera, loc, origin)
        merged_cameras[name] = merged
    data["cameras"] = merged_cameras


def _origin_of(loc: Loc, origin: Mapping[Loc, Loc]) -> Loc:
    for n in range(len(loc), 0, -1):
        source = origin.get(loc[:n])
        if source is not None:
            return source + loc[n:]
    return loc


def _line_of(loc: Loc, lines: Mapping[Loc, int]) -> int | None:
    for n in range(len(loc), 0, -1):
        line = lines.get(loc[:n])
        if line is not None:
            return line
    return None


# --------------------------------------------------------------------------- error mapping

def _strip_type(tp: Any) -> Any:
    """X from Annotated[X, ...] and from X | None."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _keys_at(loc: Loc, root: type[Config]) -> list[str]:
    """The keys allowed in the mapping at `loc` (validated data path), for suggestions."""
    if not loc:
        return list(file_sections(root))
    tp: Any = root
    for part in loc:
        tp = _strip_type(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return []
    tp = _strip_type(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _message(err: Mapping[str, Any], loc: Loc, root: type[Config]) -> str:
    kind = err["type"]
    message = str(err["msg"])
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return f"unknown key; {did_you_mean(str(loc[-1]), _keys_at(loc[:-1], root))}"
    if kind == "literal_error" and isinstance(err.get("input"), str):
        # "Input should be 'raw', 'zstd' or 'png'" + a suggestion when one is close.
        choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        close = difflib.get_close_matches(err["input"].lower(), choices, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {close[0]!r}?"
        return message
    return message.removeprefix("Value error, ")


# --------------------------------------------------------------------------- public API

def default_config_path() -> Path:
    """The default config packaged with edged: one synthetic camera and the demo model."""
    return Path(__file__).parents[1] / "configs" / "default.yaml"


# no output sections: a file of the core sections only
NO_SECTIONS: Final[Mapping[str, type[Section]]] = types.MappingProxyType({})


def parse_config(
    text: str, *, file: str = "<string>", base_dir: Path | None = None,
    env: Mapping[str, str] | None = None, int8_class: str | None = None,
    sections: Mapping[str, type[Section]] = NO_SECTIONS,
) -> Config:
    """Parse config text; relative model paths are resolved against base_dir (default: cwd);
    a builtin variant set picks its file for int8_class (default: this machine's).
    `sections`: the output sections the file may have, name -> model (`edged.app.SECTIONS`)."""
    return _parse(text, file=file, base_dir=base_dir, env=env, source_file=None,
                  int8_class=int8_class, sections=sections)


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
                int8_class: str | None = None,
                sections: Mapping[str, type[Section]] = NO_SECTIONS) -> Config:
    """Load a config file (default: the packaged default.yaml); env defaults to os.environ;
    a builtin variant set picks its file for int8_class (default: this machine's).
    `sections`: the output sections the file may have, name -> model (`edged.app.SECTIONS`)."""
    file_path = default_config_path() if path is None else Path(path)

    def refuse(message: str) -> ConfigError:
        return ConfigError([ConfigIssue(str(file_path), None, "", NO_VALUE, message)])

    try:
        # O_NONBLOCK: a named pipe with no writer opens at once (and reads as empty)
        # instead of blocking forever; reads block again below
        fd = os.open(file_path, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(fd, True)
        with open(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            # a regular file or a pipe (`-c <(generate)`); a device never ends (/dev/zero)
            # or waits for a person (/dev/tty)
            if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
                raise refuse("not a regular file (a config is a YAML text file)")
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise refuse(f"the config file is larger than {MAX_CONFIG_BYTES} bytes "
                         "(1 MiB; a real one is a few KB): is it the right file?")
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError([ConfigIssue(str(file_path), None, "", NO_VALUE,
                                       f"not a UTF-8 text file ({err.reason})")]) from None
    except OSError as err:
        raise ConfigError([ConfigIssue(str(file_path), None, "", NO_VALUE,
                                       f"cannot read the config file: {err.strerror or err}")]
                          ) from None
    absolute = file_path.expanduser().absolute()
    return _parse(text, file=str(file_path), base_dir=absolute.parent, env=env,
                  source_file=absolute, int8_class=int8_class, sections=sections)


def _parse(
    text: str, *, file: str, base_dir: Path | None, env: Mapping[str, str] | None,
    source_file: Path | None, int8_class: str | None,
    sections: Mapping[str, type[Section]],
) -> Config:
    root = config_class(sections)
    reader = Reader(file, os.environ if env is None else env)
    data = reader.read(text)
    issues = reader.issues

    def issue(loc: Loc, value: object, message: str) -> None:
        issues.append(ConfigIssue(file, _line_of(loc, reader.lines), format_loc(loc), value,
                                  message))

    for key in ("source_file", "secrets"):  # Config fields set by the loader, not the file
        if key in data:
            issue((key,), data.pop(key), f"unknown key; {did_you_mean(key, file_sections(root))}")
    origin: dict[Loc, Loc] = {}
    merge_cameras(data, origin, issue)
    data["source_file"] = source_file

    config: Config | None = None
    try:
        config = root.model_validate(data, context={"base_dir": base_dir,
                                                      "int8_class": int8_class})
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc: Loc = tuple(err["loc"])
            if loc[-1:] == ("[key]",):  # an invalid dict key: the error is about the key itself
                loc = loc[:-1]
            source = _origin_of(loc, origin)
            if source in reader.unsubstituted:
                continue
            value = NO_VALUE if err["type"] == "missing" else err.get("input", NO_VALUE)
            written = reader.substituted.get(source)
            if written is not None and value == written[1]:
                value = written[0]
            issue(source, value, _message(err, loc, root))

    secrets = tuple(sorted(reader.inserted))
    if issues:
        # A bad value in camera_defaults or the global budget fails once per camera; the
        # mapped issues are identical, so report each once, in file order.
        shown = [dataclasses.replace(i, secrets=secrets) for i in issues]
        unique = {str(i): i for i in shown}.values()
        raise ConfigError(sorted(unique, key=lambda i: (i.line or 0, i.column or 0, i.path)))
    assert config is not None
    return config.model_copy(update={"secrets": frozenset(secrets)})
