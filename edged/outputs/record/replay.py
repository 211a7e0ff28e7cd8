"""`edged replay FILE.mcap`: publish a recording's edged messages on ZeroMQ again, in
log-time order and with the original spacing (scaled by `speed`), so a subscriber can
be debugged against a recorded session. Messages go out exactly as they were published
(their own stamps included).

A file cut short (the `.part` a SIGKILL or a power loss leaves, which has no summary or
index) is read record by record from the start instead, up to the first damaged byte:
what it holds is replayed and the log says how many messages that was and where the
file stopped being readable."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mcap.exceptions import InvalidMagic
from mcap.reader import make_reader
from mcap.records import Channel, Schema
from mcap.records import Message as McapMessage
from mcap.stream_reader import StreamReader

from edged.outputs.record import RecordError, is_wire_channel, wire_frames
from edged.wire.publisher import Publisher

log = logging.getLogger("edged.record")


# a recorded wire message: log time, the channel's message encoding and schema name, the
# payload (`wire_frames` turns it into the ZeroMQ frames)
Recorded = tuple[int, str, str, bytes]


@dataclass(frozen=True, slots=True)
class Recovery:
    """What was read from a file without a usable summary (cut short or damaged)."""

    messages: int  # edged messages recovered
    good_bytes: int  # the file is readable up to this offset
    size: int  # bytes in the file
    reason: str  # why reading stopped there

    def describe(self) -> str:
        return (f"recovered {self.messages} message(s); the file stops being readable at "
                f"byte {self.good_bytes} of {self.size} ({self.reason})")


class _Counting:
    """A file's read() that counts the bytes handed out: the offset of the last record
    read in full (mcap's stream reader keeps its count to itself)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.count += len(data)
        return data


def _why(e: BaseException) -> str:
    text = str(e).strip()
    name = type(e).__name__
    # EndOfFile from mcap's reader, struct.error from its fixed-size fields
    if name == "EndOfFile" or (name == "error" and "unpack requires" in text):
        return "the file ends inside a record: cut short"
    return f"{name}: {text}" if text else name


def recover(fh: IO[bytes], path: Path) -> tuple[list[Recorded], Recovery]:
    """The edged messages of a file read sequentially up to its first damage, in
    log-time order. RecordError when not even the start is MCAP."""
    size = os.fstat(fh.fileno()).st_size
    if size == 0:
        raise RecordError(f"{path}: the file is empty, not an MCAP recording")
    fh.seek(0)
    counting = _Counting(fh)
    # a record cannot be longer than the file: a damaged length must not allocate GBs
    reader = StreamReader(counting, record_size_limit=size)  # type: ignore[arg-type]
    schemas: dict[int, str] = {}
    wire: dict[int, tuple[str, str]] = {}  # channel id -> (message encoding, schema name)
    found: list[Recorded] = []
    good = 0
    reason = "the file ends without its summary: cut short"
    try:
        for record in reader.records:
            if isinstance(record, Schema):
                schemas[record.id] = record.name
            elif isinstance(record, Channel):
                kind = (record.message_encoding, schemas.get(record.schema_id, ""))
                if is_wire_channel(*kind):
                    wire[record.id] = kind
            elif isinstance(record, McapMessage) and record.channel_id in wire:
                found.append((record.log_time, *wire[record.channel_id], record.data))
            good = counting.count
    except InvalidMagic:
        raise RecordError(f"{path}: not an MCAP recording (it does not start with the MCAP "
                          "magic bytes)") from None
    except Exception as e:  # noqa: BLE001 - damaged bytes fail in any of mcap's decoders
        # (a length past the end, zstd, a CRC, struct, UTF-8): the damage starts here
        if good == 0 and not found:
            if counting.count <= 8 + 9:  # the magic, and not one record's opcode + length
                raise RecordError(f"{path}: not an MCAP recording (too short to be one: "
                                  f"{size} byte(s))") from None
            raise RecordError(f"{path}: not a readable MCAP recording ({_why(e)})") from None
        if type(e).__name__ == "EndOfFile" and good == size:
            reason = "the file ends after a complete record, without its summary: cut short"
        else:
            reason = _why(e)
    else:
        reason = "complete, read without its summary"
    found.sort(key=lambda m: m[0])  # chunks are written in order, messages nearly so
    return found, Recovery(len(found), good, size, reason)


def _indexed(fh: IO[bytes]) -> Iterator[Recorded] | None:
    """The edged messages in log-time order through the file's index, or None when the
    file has no usable summary (cut short: see `recover`)."""
    try:
        reader = make_reader(fh)
        if reader.get_summary() is None:
            return None
    except Exception:  # noqa: BLE001 - any failure to read the end means: not finished
        return None
    return ((m.log_time, ch.message_encoding, sc.name if sc else "", m.data)
            for sc, ch, m in reader.iter_messages(log_time_order=True)
            if is_wire_channel(ch.message_encoding, sc.name if sc else ""))


def replay(path: Path, endpoint: str, *, speed: float = 1.0, wait_s: float = 0.5,
           stop: threading.Event | None = None) -> int:
    """Publish the recording on `endpoint`; returns the number of messages sent."""
    if not speed > 0 or speed == float("inf"):
        raise RecordError(f"replay speed must be a finite number above 0 (got {speed:g})")
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise RecordError(f"{path}: {e.strerror or e}") from None
    sent = 0
    with fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # /dev/zero would never end
            raise RecordError(f"{path}: not a regular file (a recording is an .mcap file)")
        messages = _indexed(fh)
        if messages is None:
            found, recovery = recover(fh, path)
            log.warning("%s has no summary (a recording cut short?): %s", path,
                        recovery.describe())
            messages = iter(found)
        with Publisher([endpoint]) as pub:
            time.sleep(wait_s)  # subscribers that connect at once get the first message too
            first: int | None = None
            t0 = time.monotonic()
            undecodable = 0
            for log_time, encoding, schema_name, data in _guarded(messages, path):
                try:
                    frames = wire_frames(encoding, schema_name, data)
                except Exception:  # noqa: BLE001 - msgpack's and protobuf's several errors
                    frames = None
                if frames is None:
                    undecodable += 1
                    continue
                if first is None:
                    first, t0 = log_time, time.monotonic()
                delay = t0 + (log_time - first) / 1e9 / speed - time.monotonic()
                if delay > 0:
                    if stop is None:
                        time.sleep(delay)
                    elif stop.wait(delay):
                        break
                pub.send(frames)
                sent += 1
    if undecodable:
        log.warning("%s: %d message(s) skipped: not decodable as edged's wire messages", path,
                    undecodable)
    log.info("replayed %d message(s) from %s on %s", sent, path, endpoint)
    return sent


def _guarded(messages: Iterator[Recorded], path: Path) -> Iterator[Recorded]:
    """`messages`, with a failure to read the file (a damaged chunk inside a finished
    file) as a RecordError saying how far the replay got."""
    read = 0
    while True:
        try:
            item = next(messages)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - damaged bytes fail in any of mcap's decoders
            raise RecordError(f"{path}: damaged after {read} message(s) replayed "
                              f"({_why(e)})") from None
        read += 1
        yield item
