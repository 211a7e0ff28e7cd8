"""What an output declares, once, in its own package (`OUTPUT`): its config section, its
extra, what `edged check` tries for it, its queue and how its sink is built.

`edged.app.OUTPUTS` lists the declarations; the daemon, `edged check` and the reload go
through that list, so adding an output is its package plus one line there. What the
daemon asks of a publishing output beyond a sink (the ZeroMQ one) is
`edged.outputs.base.sink.Publishing`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edged.config import Config
from edged.outputs.base.sink import Sink


class Held(Protocol):
    """What a check keeps open until every output is tried: a socket, a publisher."""

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Output:
    """One output.

    `name`: its config section (`Config.<name>`, None when not configured). `require`:
    raises the output's error naming its extra when that is missing. `check`: what
    `edged check` tries (bind its port, open its directory), holding any socket or
    publisher in `held` until every output is tried (so that two clashing show), and the
    lines to print. `build`: the sink for the enabled cameras, bound and opened (it is
    started on its own thread later). `queue_size`: results its sink may have waiting.
    """

    name: str
    queue_size: int
    require: Callable[[Config], None]
    check: Callable[[Config, list[Held]], str]
    build: Callable[[Config, list[str]], Sink]

    def configured(self, config: Config) -> bool:
        return getattr(config, self.name) is not None


def frame_ids(config: Config, cameras: list[str]) -> dict[str, str]:
    """Camera name -> its `frame_id` (the name when it sets none)."""
    return {n: config.cameras[n].frame_id or n for n in cameras}


def enabled(config: Config) -> list[str]:
    return [n for n, c in config.cameras.items() if c.enabled]
