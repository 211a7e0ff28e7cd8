"""The recorder: a sink writing MCAP, all the time or as a flight recorder.

`trigger: always` writes every result into files rotated at `rotate_mb`. `trigger:
on_miss` keeps the last `before_s` seconds in memory (at most `buffer_mb`) and writes
them, and the `after_s` seconds after, into one file per event when a camera misses its
budget (a late result, or a `FrameDropped` event: stale, or late under on_late drop), a
frame fails (`FrameDropped` error; a replaced worker counts its frame as one), or a
camera stalls or reconnects (`StateChanged` to reconnecting, which a stall leads to). A
new event while one is being written extends it. Files are named
`<camera>-<UTC time>-<cause>.mcap`.

Nothing here can stop a camera: a write error (a full disk, a directory gone read-only)
is logged and counted, the file in progress is deleted, and recording resumes after
`RETRY_S`. `max_mb` bounds edged's files in the directory (oldest deleted first).
Runs on the recorder's sink thread only.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from foxglove.messages import CompressedImage, ImageAnnotations, RawImage

from edged.outputs.base import foxglove_schema as messages
from edged.outputs.base.draw import Overlay
from edged.outputs.base.foxglove_schema import STATS_TOPIC
from edged.outputs.base.sink import Outcome, Sink
from edged.outputs.record import (
    WIRE_ENCODING,
    WIRE_SCHEMA,
    WIRE_SCHEMA_NAME,
    RecordError,
    encode_wire,
)
from edged.outputs.record.files import MB, McapFile, Schema, enforce_limit
from edged.outputs.record.settings import RecordConfig
from edged.telemetry import (
    CameraState,
    ControlEvent,
    FrameDropped,
    StateChanged,
    StatsReport,
    StreamEnded,
)
from edged.wire.telemetry import encode_event

log = logging.getLogger("edged.record")

RETRY_S = 5.0  # after a write error, how long before a new file is tried
MAX_EVENT_S = 120.0  # an event extended again and again is cut into files this long
CONTROL_TOPIC = "/edged/control"


def _schema(kind: Any) -> Schema:
    s = kind.get_schema()
    return Schema(s.name, s.encoding, bytes(s.data))


IMAGE = _schema(CompressedImage)
MASK = _schema(RawImage)
ANNOTATIONS = _schema(ImageAnnotations)
WIRE = Schema(WIRE_SCHEMA_NAME, "protobuf", WIRE_SCHEMA)


def _stats_schema(cameras: list[str]) -> Schema:
    # as Foxglove live names and builds it (a file's first stats message fixes it)
    return Schema(messages.STATS_SCHEMA_NAME, "jsonschema",
                  json.dumps(messages.stats_schema(cameras)).encode())


@dataclass(frozen=True, slots=True)
class _Rec:
    topic: str
    encoding: str
    schema: Schema | None
    log_time: int
    data: bytes


def check_dir(config: RecordConfig) -> Path:
    """The recording directory, created if missing; RecordError if it cannot be
    written (`edged check` asks the same)."""
    d = config.dir.expanduser().absolute()
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / ".edged-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RecordError(f"record.dir {d}: cannot write there ({e.strerror or e})") from None
    return d


def _utc(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"


class RecorderSink(Sink):
    name = "record"

    def __init__(self, config: RecordConfig) -> None:
        self.config = config
        self.dir = check_dir(config)
        self._file: McapFile | None = None
        self._event_end_ns = 0
        self._event_start_ns = 0
        self._ring: deque[_Rec] = deque()
        self._ring_bytes = 0
        self._paused_until = 0.0
        self._overlay = Overlay()  # the view's colours, for the colour mask
        # since start: files finished, messages written, write errors, files deleted
        self.files: list[Path] = []
        self.written = 0
        self.errors = 0
        self.deleted = 0
        self.events: list[tuple[str, str]] = []  # (camera, cause)

    # ------------------------------------------------------------------ sink interface

    def open(self) -> None:
        log.info("recording %s into %s (max %g MB, files of %g MB)",
                 "everything" if self.config.trigger == "always" else
                 f"{self.config.before_s:g} s before and {self.config.after_s:g} s after "
                 "each missed budget, stall, reconnect or failed frame", self.dir,
                 self.config.max_mb, self.config.rotate_mb)

    def deliver(self, outcome: Outcome) -> None:
        r, frame = outcome.result, outcome.frame
        t = r.t_capture_wall_ns
        cam = r.camera
        recs = []
        if self.config.frames and frame is not None:
            recs.append(_Rec(f"/{cam}/image", "protobuf", IMAGE, t,
                             messages.image(frame, self.config.quality).encode()))
        mask, png = outcome.mask.camera(), outcome.mask.png()
        if mask is not None and png is not None:
            recs.append(_Rec(f"/{cam}/mask", "protobuf", MASK, t,
                             messages.class_mask(r, mask).encode()))
            recs.append(_Rec(f"/{cam}/mask_color", "protobuf", IMAGE, t,
                             messages.colour_mask(r, png, self._overlay).encode()))
        recs.append(_Rec(f"/{cam}/annotations", "protobuf", ANNOTATIONS, t,
                         messages.image_annotations(r).encode()))
        recs.append(_Rec(f"/{cam}/edged", WIRE_ENCODING, WIRE, t, encode_wire(outcome.wire)))
        for rec in recs:
            self._add(rec)
        if outcome.late:
            self._trigger(cam, "late")

    def control(self, event: ControlEvent) -> None:
        frames = encode_event(event)  # the message as the ZeroMQ output publishes it
        if frames is not None:
            self._add(_Rec(CONTROL_TOPIC, WIRE_ENCODING, WIRE, event.t_ns,
                           encode_wire(frames)))
        match event:
            case StatsReport():
                self._add(_Rec(STATS_TOPIC, "json",
                               _stats_schema(list(event.snapshot.cameras)), event.t_ns,
                               json.dumps(messages.stats_message(event)).encode()))
            case StateChanged(camera=camera, state=CameraState.RECONNECTING):
                self._trigger(camera, "reconnect")
            case FrameDropped(camera=camera, cause=cause):
                self._trigger(camera, cause.value)

    def end_of_stream(self, eos: StreamEnded) -> None:
        self._add(_Rec(f"/{eos.camera}/edged", WIRE_ENCODING, WIRE, eos.t_ns,
                       encode_wire(encode_event(eos))))

    def close(self) -> None:
        self._finish()
        log.info("recorder: %d file(s) written, %d message(s), %d write error(s), %d old "
                 "file(s) deleted%s", len(self.files), self.written, self.errors,
                 self.deleted, "".join(f"; event {c} {k}" for c, k in self.events[-5:]))

    # ------------------------------------------------------------------ mechanics

    def _add(self, rec: _Rec) -> None:
        if self.config.trigger == "always":
            self._write(rec)
            return
        now = time.time_ns()
        if self._file is not None:
            if now > self._event_end_ns or now - self._event_start_ns > MAX_EVENT_S * 1e9:
                self._finish()
            else:
                self._write(rec)
                return
        self._ring.append(rec)
        self._ring_bytes += len(rec.data)
        horizon = now - int(self.config.before_s * 1e9)
        limit = self.config.buffer_mb * MB
        while self._ring and (self._ring[0].log_time < horizon or self._ring_bytes > limit):
            self._ring_bytes -= len(self._ring.popleft().data)

    def _trigger(self, camera: str, cause: str) -> None:
        if self.config.trigger == "always":
            return
        now = time.time_ns()
        if self._file is not None:  # during an event: it goes on
            self._event_end_ns = now + int(self.config.after_s * 1e9)
            return
        if time.monotonic() < self._paused_until:
            return
        self.events.append((camera, cause))
        log.warning("recorder: %s %s: writing the last %g s and the next %g s", camera, cause,
                    self.config.before_s, self.config.after_s)
        if not self._open(f"{camera}-{_utc(now)}-{cause}.mcap"):
            return
        self._event_start_ns = now
        self._event_end_ns = now + int(self.config.after_s * 1e9)
        ring, self._ring, self._ring_bytes = self._ring, deque(), 0
        for rec in ring:
            if self._file is None:
                break
            self._write(rec)

    def _open(self, name: str) -> bool:
        # room for one more file under max_mb before it is begun
        self.deleted += len(enforce_limit(self.dir, (self.config.max_mb - self.config.rotate_mb)
                                          * MB, set()))
        try:
            self._file = McapFile(self.dir / name)
        except OSError as e:
            self._failed(e, self.dir / name)
            return False
        return True

    def _write(self, rec: _Rec) -> None:
        if self._file is None:
            if self.config.trigger != "always" or time.monotonic() < self._paused_until:
                return
            if not self._open(f"edged-{_utc(rec.log_time)}.mcap"):
                return
        f = self._file
        assert f is not None
        try:
            f.write(rec.topic, rec.encoding, rec.schema, rec.log_time, rec.data)
            self.written += 1
            if f.size >= self.config.rotate_mb * MB:
                self._finish()
        except OSError as e:
            self._failed(e, f.part)

    def _finish(self) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        try:
            self.files.append(f.close())
        except OSError as e:
            f.abandon()
            self._failed(e, f.part)
            return
        self.deleted += len(enforce_limit(self.dir, self.config.max_mb * MB, set()))

    def _failed(self, e: OSError, path: Path) -> None:
        self.errors += 1
        if self._file is not None:
            self._file.abandon()
            self._file = None
        self._paused_until = time.monotonic() + RETRY_S
        if self.errors == 1 or self.errors % 100 == 0:
            log.error("recorder: cannot write %s: %s (%d error(s) so far); the file is "
                      "dropped, recording resumes in %g s, the cameras go on", path,
                      e.strerror or e, self.errors, RETRY_S)
