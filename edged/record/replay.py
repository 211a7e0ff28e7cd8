"""`edged replay FILE.mcap`: publish a recording's edged messages on ZeroMQ again, in
log-time order and with the original spacing (scaled by `speed`), so a subscriber can
be debugged against a recorded session. Messages go out exactly as they were published
(their own stamps included)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from mcap.reader import make_reader

from edged.record import RecordError, wire_frames
from edged.wire.publisher import Publisher

log = logging.getLogger("edged.record")


def replay(path: Path, endpoint: str, *, speed: float = 1.0, wait_s: float = 0.5,
           stop: threading.Event | None = None) -> int:
    """Publish the recording on `endpoint`; returns the number of messages sent."""
    if speed <= 0:
        raise RecordError(f"replay speed must be above 0 (got {speed:g})")
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise RecordError(f"{path}: {e.strerror or e}") from None
    sent = 0
    with fh, Publisher([endpoint]) as pub:
        time.sleep(wait_s)  # subscribers that connect at once get the first message too
        try:
            reader = make_reader(fh)
            first: int | None = None
            t0 = time.monotonic()
            for schema, channel, message in reader.iter_messages(log_time_order=True):
                frames = wire_frames(channel.message_encoding, schema.name if schema else "",
                                     message.data)
                if frames is None:
                    continue
                if first is None:
                    first, t0 = message.log_time, time.monotonic()
                delay = t0 + (message.log_time - first) / 1e9 / speed - time.monotonic()
                if delay > 0:
                    if stop is None:
                        time.sleep(delay)
                    elif stop.wait(delay):
                        break
                pub.send(frames)
                sent += 1
        except (ValueError, EOFError, KeyError) as e:  # mcap's errors on a damaged file
            raise RecordError(f"{path}: not a readable MCAP recording ({e})") from None
    log.info("replayed %d message(s) from %s on %s", sent, path, endpoint)
    return sent
