"""The capture thread: runs one source, paces, stamps, checks and hands over its frames,
and reopens it with back-off after a stall, a disconnect or a crash."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from edged.capture.base import CorruptFrame, RestartPolicy, Source, SourceError
from edged.capture.handoff import Handoff
from edged.results import Frame
from edged.telemetry import CameraState

log = logging.getLogger("edged.capture.supervisor")


class _Session:
    """One open-read-close cycle of a source, run in its own reader thread."""

    def __init__(self, source: Source, number: int) -> None:
        self.source = source
        self.number = number
        self.busy_since: float | None = None  # monotonic start of the open/read under way
        self.busy_in = ""  # "open" or "read"
        self.frames = 0  # good frames delivered
        self.abandoned = False  # set by the supervisor under CaptureThread._lock
        self.abandoned_at = 0.0
        # ("eos" | "stop" | "error" | "crash", detail), set when the reader ends
        self.outcome: tuple[str, str] = ("stop", "")
        self.done = threading.Event()
        self.thread: threading.Thread | None = None


class CaptureThread:
    """Runs one source: paces, stamps, checks and hands over frames; restarts on failure.

    Design: a supervisor thread (`capture-NAME`) starts one reader thread per session
    (open, read until something goes wrong, close) and watches it. The reader does all
    the blocking calls; the supervisor never blocks on the source, so it can see a stall
    (a live source's open or read that does not return within `stall_timeout_s`) even
    while the reader sits inside OpenCV. On a stall the reader is abandoned, not closed:
    releasing a cv2.VideoCapture from another thread while its read() runs is a
    use-after-free in the FFmpeg/V4L2 backends (a crash of the whole daemon), and a
    thread blocked in C cannot be killed. A fresh reader (`source.fresh()`) takes over;
    the abandoned one finds itself abandoned when its call returns (FFmpeg's own
    timeouts are set to make sure it does), closes its own capture and exits without
    touching state or hand-off. At most `max_abandoned` may be outstanding per camera.
    A source that cannot block (`can_stall = False`: the synthetic renderer) needs no
    watching: the supervisor thread reads it itself, one thread per camera, not two.

    Failures, all logged once per state change:
    - SourceError on open or read of a live source, a stall, or `max_corrupt_frames`
      undecodable/malformed frames in a row: `reconnecting`, reopened with exponential
      backoff (capped), forever unless `max_reconnects` (in a row, without a frame) is
      set. Files that cannot be opened: `failed`.
    - an unexpected exception inside the source (a bug): restarted with the same
      backoff, at most `crash_budget` times within `crash_window_s`, then `failed`.
    - a corrupt frame from a file or folder is skipped and counted (`corrupt`).
    """

    def __init__(self, camera: str, source: Source, handoff: Handoff, *, fps: float | None,
                 pace: bool, backoff: tuple[float, float] = (0.5, 30.0),
                 on_state: Callable[[str, CameraState, str], None] | None = None,
                 policy: RestartPolicy | None = None) -> None:
        self.camera, self.source, self.handoff = camera, source, handoff
        self.fps, self.pace = fps, pace
        self.backoff = backoff
        self.on_state = on_state  # (camera, state, detail), called from the capture thread
        self.policy = policy or RestartPolicy()
        self.seq = 0
        self.state = CameraState.STARTING
        self.detail = ""  # what the last state change said (e.g. why a file ended)
        self.error: str | None = None
        # counters, read by the stats snapshot
        self.corrupt = 0  # frames that could not be decoded or were malformed, skipped
        self.reconnects = 0  # sessions ended by a failure and reopened
        self.stalls = 0  # of which: no frame within stall_timeout_s
        self.crashes = 0  # unexpected exceptions inside the source
        self.abandoned_readers = 0  # reader threads left stuck in the source, ever
        self._stop = threading.Event()
        self._lock = threading.Lock()  # state changes vs. abandoning a reader
        self._abandoned: list[_Session] = []
        self._sessions = 0
        self._waiting_for_stuck = False
        self._thread = threading.Thread(target=self._run, name=f"capture-{camera}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def stuck_readers(self) -> int:
        """Abandoned reader threads that have not returned yet."""
        return sum(1 for s in self._abandoned if not s.done.is_set())

    def _set_state(self, state: CameraState, detail: str = "",
                   session: _Session | None = None) -> None:
        with self._lock:
            if session is not None and session.abandoned:
                return  # an abandoned reader has no say any more
            if state != self.state:
                self.state = state
                self.detail = detail
                msg = f"camera {self.camera}: {state}" + (f" ({detail})" if detail else "")
                bad = state in (CameraState.RECONNECTING, CameraState.FAILED)
                (log.warning if bad else log.info)(msg)
                if self.on_state is not None:
                    self.on_state(self.camera, state, detail)

    # ------------------------------------------------------------ supervisor

    def _run(self) -> None:
        delay = self.backoff[0]
        failures_in_row = 0  # reconnects without a good frame in between
        crash_times: deque[float] = deque()
        session: _Session | None = None
        try:
            while not self._stop.is_set():
                if not self._room_for_reader():
                    continue
                self._sessions += 1
                session = _Session(self.source, self._sessions)
                if getattr(self.source, "can_stall", True):
                    session.thread = threading.Thread(
                        target=self._reader, args=(session,), daemon=True,
                        name=f"capture-{self.camera}-{session.number}")
                    session.thread.start()
                    kind, detail = self._watch(session)
                else:  # nothing to watch for: read here, one thread per camera
                    self._reader(session)
                    kind, detail = session.outcome
                if kind == "stop":
                    return
                if kind == "eos":
                    self._set_state(CameraState.STOPPED, detail or "end of stream")
                    return
                self.error = detail
                if session.frames:
                    failures_in_row = 0
                    delay = self.backoff[0]
                failures_in_row += 1
                if kind == "crash":
                    self.crashes += 1
                    now = time.monotonic()
                    crash_times.append(now)
                    while crash_times and now - crash_times[0] > self.policy.crash_window_s:
                        crash_times.popleft()
                    if len(crash_times) > self.policy.crash_budget:
                        self.error = (f"camera {self.camera}: capture crashed {len(crash_times)}"
                                      f" times within {self.policy.crash_window_s:.0f} s, "
                                      f"giving up; last error: {detail}")
                        self._set_state(CameraState.FAILED, self.error)
                        return
                    detail = (f"{detail}; restart {len(crash_times)} of "
                              f"{self.policy.crash_budget} within "
                              f"{self.policy.crash_window_s:.0f} s")
                elif not self.source.live:  # a file that cannot be opened or read
                    self._set_state(CameraState.FAILED, detail)
                    return
                elif self.policy.max_reconnects is not None and \
                        failures_in_row > self.policy.max_reconnects:
                    self.error = (f"camera {self.camera}: gave up after "
                                  f"{self.policy.max_reconnects} reconnects without a frame; "
                                  f"last error: {detail}")
                    self._set_state(CameraState.FAILED, self.error)
                    return
                self.reconnects += 1
                self._set_state(CameraState.RECONNECTING, f"{detail}; retrying every <= "
                                f"{self.backoff[1]:g} s")
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, self.backoff[1])
        except Exception as e:  # a bug here must not take the daemon down
            log.exception("camera %s: capture supervisor crashed", self.camera)
            self.error = f"capture crashed: {e}"
            self._set_state(CameraState.FAILED, self.error)
        finally:
            self._stop.set()  # the reader stops after its current call
            if session is not None and session.thread is not None and not session.abandoned:
                session.thread.join(1.0)  # give the device back before a restart reopens it
            self.handoff.close()
            if self.state not in (CameraState.FAILED, CameraState.STOPPED):
                self._set_state(CameraState.STOPPED)

    def _room_for_reader(self) -> bool:
        """False (after waiting a little) while too many abandoned readers are stuck."""
        self._abandoned = [s for s in self._abandoned if not s.done.is_set()]
        if len(self._abandoned) < self.policy.max_abandoned:
            self._waiting_for_stuck = False
            return True
        if not self._waiting_for_stuck:  # once per episode, not once a second
            self._waiting_for_stuck = True
            log.error("camera %s: %d reader threads still stuck in the source; waiting for "
                      "one to return before reopening it", self.camera, len(self._abandoned))
        self._set_state(CameraState.RECONNECTING, f"{len(self._abandoned)} reader threads stuck")
        self._stop.wait(1.0)
        return False

    def _watch(self, session: _Session) -> tuple[str, str]:
        """Wait for the reader to end, or abandon it on a stall; its outcome."""
        live = self.source.live
        limit = {"open": self.policy.open_timeout_s + 5.0,  # FFmpeg's own open timeout first
                 "read": self.policy.stall_timeout_s}
        poll = min(0.25, self.policy.stall_timeout_s / 4)
        while not session.done.wait(poll):
            if self._stop.is_set():
                return "stop", ""
            since = session.busy_since
            if not live or since is None:
                continue
            waited = time.monotonic() - since
            if waited < limit[session.busy_in]:
                continue
            with self._lock:
                if session.done.is_set():
                    break
                session.abandoned = True
                session.abandoned_at = time.monotonic()
            self._abandoned.append(session)
            self.abandoned_readers += 1
            self.stalls += 1
            log.warning("camera %s: reader thread %s abandoned, blocked in %s for %.1f s "
                        "(%d stuck now, %d abandoned since start)", self.camera,
                        session.thread.name if session.thread else "?", session.busy_in,
                        waited, self.stuck_readers(), self.abandoned_readers)
            self.source = self.source.fresh()  # the stuck reader keeps the old one
            if session.busy_in == "open":
                return "error", f"opening {self.source.description} did not return in " \
                                f"{waited:.0f} s"
            return "error", f"no frame for {self.policy.stall_timeout_s:g} s"
        return session.outcome

    # ------------------------------------------------------------ reader

    def _reader(self, session: _Session) -> None:
        src = session.source
        try:
            session.busy_in, session.busy_since = "open", time.monotonic()
            src.open()
            session.busy_since = None
            self._set_state(CameraState.RUNNING, src.description, session)
            session.outcome = self._capture(session)
        except SourceError as e:
            session.outcome = ("error", str(e))
        except Exception as e:  # a bug in one source must not take the daemon down
            if not session.abandoned:
                log.exception("camera %s: capture crashed", self.camera)
            session.outcome = ("crash", f"capture crashed: {type(e).__name__}: {e}")
        finally:
            session.busy_since = None
            try:
                src.close()
            except Exception:
                log.exception("camera %s: closing the source failed", self.camera)
            session.done.set()
            if session.abandoned:
                log.info("camera %s: abandoned reader %s returned after %.1f s and closed "
                         "its source", self.camera, threading.current_thread().name,
                         time.monotonic() - session.abandoned_at)

    def _check(self, img: object, shape: tuple[int, ...] | None) -> str:
        """Why a frame is malformed, or "" if it is fine."""
        if not isinstance(img, np.ndarray):
            return f"frame is {type(img).__name__}, not an image"
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
            return f"malformed frame {img.dtype} {img.shape}, expected HxWx3 uint8"
        if img.shape[0] * img.shape[1] > self.policy.max_pixels:
            return (f"frame {img.shape[1]}x{img.shape[0]} is above max_pixels "
                    f"{self.policy.max_pixels}")
        if shape is not None and img.shape != shape:
            return f"frame size changed from {shape[1]}x{shape[0]} to {img.shape[1]}x{img.shape[0]}"
        return ""

    def _capture(self, session: _Session) -> tuple[str, str]:
        """Read until stopped ("stop"), end of stream ("eos") or too many corrupt frames
        in a row from a live source ("error"). SourceError and crashes propagate."""
        src = session.source
        fps = self.fps or src.default_fps()
        period = 1.0 / fps if (self.pace and fps) else 0.0
        next_t = time.monotonic()
        bad_run = 0
        shape: tuple[int, ...] | None = None  # a live source's frame size, from its first frame
        while not self._stop.is_set():
            if period:
                wait = next_t - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return "stop", ""
                # never try to catch up on a backlog: fall back onto the schedule
                next_t = max(next_t + period, time.monotonic() - period)
            # replay: decode the next frame only once it can be queued at once
            if not self.handoff.wait_room(lambda: self._stop.is_set() or session.abandoned):
                return "stop", ""
            session.busy_in, session.busy_since = "read", time.monotonic()
            try:
                img = src.read()
                problem = "" if img is None else self._check(img, shape)
            except CorruptFrame as e:
                problem = str(e)
            finally:
                session.busy_since = None
            if session.abandoned:
                return "stop", ""
            if problem:
                self.corrupt += 1
                bad_run += 1
                if bad_run == 1 or bad_run == self.policy.max_corrupt_frames:
                    log.warning("camera %s: %s (%d corrupt frames so far)", self.camera,
                                problem, self.corrupt)
                if src.live and bad_run >= self.policy.max_corrupt_frames:
                    return "error", f"{bad_run} bad frames in a row, last: {problem}"
                continue
            if img is None:
                return "eos", getattr(src, "end_detail", "") or "end of stream"
            if bad_run > 1:
                log.info("camera %s: good frames again after %d bad ones", self.camera, bad_run)
            bad_run = 0
            if src.live and shape is None:
                shape = img.shape
            with self._lock:  # a reader abandoned just now must not take a sequence number
                if session.abandoned:
                    return "stop", ""
                seq = self.seq
                self.seq += 1
            session.frames += 1
            frame = Frame(self.camera, seq, img, time.time_ns(), time.monotonic_ns())
            if not self.handoff.put(frame):  # never waits: this thread made the room
                return "stop", ""
        return "stop", ""
