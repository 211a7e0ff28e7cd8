"""What an output declares, once, in its own package (`OUTPUT`): its config section (its
name and model), its extra, what `edged check` tries for it, its queue and how its sink
is built.

`edged.app.OUTPUTS` lists the declarations and `edged.app.SECTIONS` (`output_sections`)
hands their sections to the config loader; the daemon, `edged check` and the reload go
through that list, so adding an output is its package plus one line there. What the
daemon asks of a publishing output beyond a sink (the ZeroMQ one) is
`edged.outputs.base.sink.Publishing`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from edged.config import Config, Section
from edged.outputs.base.sink import Sink

S = TypeVar("S", bound=Section)


class Held(Protocol):
    """What a check keeps open until every output is tried: a socket, a publisher."""

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Output(Generic[S]):
    """One output.

    `name`: its config section, validated as `settings` (the output's
    `settings.py`; the ZeroMQ output's is the core `publish`); the output is on when
    the file has the section. Each callable gets the whole config and that section,
    typed. `require`: raises the output's error naming its extra when that is missing.
    `check`: what `edged check` tries (bind its port, open its directory), holding any
    socket or publisher in `held` until every output is tried (so that two clashing
    show), and the lines to print. `build`: the sink for the enabled cameras, bound and
    opened (it is started on its own thread later). `queue_size`: results its sink may
    have waiting.
    """

    name: str
    settings: type[S]
    queue_size: int
    require: Callable[[Config, S], None]
    check: Callable[[Config, S, list[Held]], str]
    build: Callable[[Config, S, list[str]], Sink]

    def section(self, config: Config) -> S | None:
        """Its section in `config`; None: the output is off."""
        return config.section(self.settings)


def output_sections(outputs: Iterable[Output[Any]]) -> Mapping[str, type[Section]]:
    """The sections `outputs` add to a config file, for `load_config(sections=...)`: each
    output's but those the core has already (`publish`, which the publish stage reads too)."""
    return {o.name: o.settings for o in outputs if o.name not in Config.model_fields}


def frame_ids(config: Config, cameras: list[str]) -> dict[str, str]:
    """Camera name -> its `frame_id` (the name when it sets none)."""
    return {n: config.cameras[n].frame_id or n for n in cameras}


def enabled(config: Config) -> list[str]:
    return [n for n, c in config.cameras.items() if c.enabled]
