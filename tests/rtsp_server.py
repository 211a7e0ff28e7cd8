"""A real RTSP server on loopback for the tests: GStreamer's gst-rtsp-server (Debian's
packages), serving a clip of painted frames as H.264 at paths shaped like real cameras'.

GStreamer's Python bindings (python3-gi) are Debian's system packages, not the project
venv's, so the server runs as its own process under /usr/bin/python3: this file is both
the test-side helper (imported from the venv: no `gi` import at module level) and the
server script (`/usr/bin/python3 tests/rtsp_server.py ...`).

The server talks over its stdin/stdout in lines: the test sends `stall` (every session
stays open but no more RTP packets leave: a camera that hangs) and `resume`; the server
prints `ready PORT`, and `setup PATH TRANSPORT` for each SETUP request it answers, so a
test can see which transport a client really used.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
# .ci/run installs these and sets EDGED_REQUIRE_RTSP=1: then a missing piece fails the
# tests instead of skipping them
APT_PACKAGES = ("python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
                "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly ffmpeg")
ELEMENTS = ("multifilesrc", "jpegdec", "videoconvert", "x264enc", "valve", "rtph264pay")

# Paths in the shapes real cameras use (the README lists them); each is served here.
CAMERA_PATHS = {
    "hikvision": "/Streaming/Channels/101",
    "dahua": "/cam/realmonitor?channel=1&subtype=0",  # Amcrest and Lorex too
    "axis": "/axis-media/media.amp?videocodec=h264",
    "reolink": "/h264Preview_01_main",
    "tapo": "/stream1",  # TP-Link Tapo and many ONVIF cameras
}
TCP_ONLY, UDP_ONLY = "/tcp-only", "/udp-only"  # mounts that refuse the other transport


def missing() -> str:
    """Why the RTSP server cannot run here ("" when it can)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"no {SYSTEM_PYTHON}"
    probe = ("import gi; gi.require_version('Gst', '1.0'); "
             "gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             f"print(' '.join(e for e in {ELEMENTS!r} if Gst.ElementFactory.find(e) is None))")
    try:
        out = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True,
                             timeout=60, env=_clean_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{SYSTEM_PYTHON} cannot probe GStreamer: {e}"
    if out.returncode != 0:
        return (f"no GStreamer RTSP server for {SYSTEM_PYTHON} (python3-gi, "
                "gir1.2-gst-rtsp-server-1.0)")
    if out.stdout.strip():
        return f"GStreamer elements missing: {out.stdout.strip()}"
    return ""


def require_or_skip(what: str) -> None:
    """Skip the calling test when `what` ("" = present) is missing, unless
    EDGED_REQUIRE_RTSP=1 (CI), where a missing server is a failure."""
    import pytest

    if not what:
        return
    reason = f"{what}; apt-get install {APT_PACKAGES} (.ci/run does, with EDGED_REQUIRE_RTSP=1)"
    if os.environ.get("EDGED_REQUIRE_RTSP") == "1":
        pytest.fail(f"EDGED_REQUIRE_RTSP=1 but {reason}")
    pytest.skip(reason)


def missing_ffmpeg() -> str:
    return "" if shutil.which("ffmpeg") else "no ffmpeg command"


def _clean_env() -> dict[str, str]:
    # the venv's variables must not leak into the system python
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME",
                                                            "VIRTUAL_ENV")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_clip(folder: Path, frames: int = 30, size: tuple[int, int] = (320, 240)) -> Path:
    """JPEG frames of the painted test scene, each shifted a little (the clip served)."""
    import cv2
    import numpy as np
    from modelgen import painted_frame

    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    img, _ = painted_frame(w, h)
    for i in range(frames):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), np.roll(img, (i * 8) % w, axis=1))
    return folder


class RtspServer:
    """The server process, seen from the test. `port` stays the same across restarts."""

    def __init__(self, clip: Path, *, fps: int = 15, port: int = 0,
                 user: str = "", password: str = "") -> None:
        self.clip, self.fps = clip, fps
        self.user, self.password = user, password
        self.port = port or _free_port()
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def url(self, path: str, *, user: str | None = None, password: str | None = None) -> str:
        user = self.user if user is None else user
        password = self.password if password is None else password
        cred = f"{user}:{password}@" if user else ""
        return f"rtsp://{cred}127.0.0.1:{self.port}{path}"

    def start(self, timeout: float = 30.0) -> None:
        args = [SYSTEM_PYTHON, __file__, "--port", str(self.port), "--clip", str(self.clip),
                "--fps", str(self.fps)]
        if self.user:
            args += ["--user", self.user, "--password", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=_clean_env())
        proc = self.proc
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()
        self.wait_for(lambda ls: f"ready {self.port}" in ls, timeout, since=0, proc=proc)

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def wait_for(self, cond: Callable[[list[str]], bool], timeout: float = 30.0,
                 since: int = 0, proc: subprocess.Popen[str] | None = None) -> list[str]:
        """Wait until `cond(lines printed after line number `since`)` holds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            lines = self.output()[since:]
            if cond(lines):
                return lines
            p = proc or self.proc
            if p is not None and p.poll() is not None:
                raise AssertionError(f"the RTSP server exited {p.returncode}:\n"
                                     + "\n".join(self.output()))
            time.sleep(0.05)
        raise AssertionError(f"RTSP server: condition not met within {timeout} s:\n"
                             + "\n".join(self.output()))

    def setups(self) -> list[tuple[str, str]]:
        """(path, transport) of every SETUP answered so far."""
        return [(p[1], p[2]) for p in (line.split(" ", 2) for line in self.output())
                if p[0] == "setup" and len(p) == 3]

    def command(self, text: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        n = len(self.output())
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        self.wait_for(lambda ls: f"ok {text}" in ls, 10, since=n)

    def stop(self) -> None:
        """Kill it, as a camera that reboots or loses power goes."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- the server process


def serve(argv: list[str]) -> None:  # pragma: no cover (runs under /usr/bin/python3)
    import argparse

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--clip", required=True)
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--user", default="")
    ap.add_argument("--password", default="")
    args = ap.parse_args(argv)

    Gst.init(None)
    loop = GLib.MainLoop()
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    state = {"stalled": False}
    valves: list[Gst.Element] = []

    # a real camera's stream: H.264, a key frame every second, no B-frames
    launch = (f"( multifilesrc location={args.clip}/%03d.jpg loop=true "
              f"caps=image/jpeg,framerate={args.fps}/1 ! jpegdec ! videoconvert ! "
              f"video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
              f"key-int-max={args.fps} bframes=0 threads=1 ! valve name=gate ! "
              "rtph264pay name=pay0 pt=96 config-interval=1 )")

    def configured(_factory: object, media: GstRtspServer.RTSPMedia) -> None:
        gate = media.get_element().get_by_name("gate")
        gate.set_property("drop", state["stalled"])
        valves.append(gate)

    mounts = server.get_mount_points()
    paths = {p.split("?")[0] for p in CAMERA_PATHS.values()} | {"/clip"}
    protocols = {TCP_ONLY: GstRtsp.RTSPLowerTrans.TCP, UDP_ONLY: GstRtsp.RTSPLowerTrans.UDP}
    permissions = None
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        auth.add_digest(args.user, args.password, token)
        # digest, as Hikvision and Dahua ask for by default
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("viewer", "media.factory.access", True)
        permissions.add_permission_for_role("viewer", "media.factory.construct", True)
    for path in sorted(paths | set(protocols)):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.connect("media-configure", configured)
        if path in protocols:
            factory.set_protocols(protocols[path])
        if permissions is not None:
            factory.set_permissions(permissions)
        mounts.add_factory(path, factory)

    def on_setup(_client: object, ctx: GstRtspServer.RTSPContext) -> None:
        ok, transport = ctx.request.get_header(GstRtsp.RTSPHeaderField.TRANSPORT, 0)
        kind = "tcp" if "TCP" in (transport or "") else "udp"
        print(f"setup {ctx.uri.abspath} {kind}", flush=True)

    def on_client(_server: object, client: GstRtspServer.RTSPClient) -> None:
        client.connect("pre-setup-request", lambda c, ctx: on_setup(c, ctx) or
                       GstRtsp.RTSPStatusCode.OK)

    server.connect("client-connected", on_client)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", flush=True)
        sys.exit(1)

    def on_stdin(channel: GLib.IOChannel, _cond: object) -> bool:
        line = channel.readline()
        if not line:  # the test went away
            loop.quit()
            return False
        cmd = line.strip()
        if cmd in ("stall", "resume"):
            state["stalled"] = cmd == "stall"
            for gate in valves:
                gate.set_property("drop", state["stalled"])
        print(f"ok {cmd}", flush=True)
        return True

    GLib.io_add_watch(GLib.IOChannel.unix_new(sys.stdin.fileno()), GLib.IO_IN | GLib.IO_HUP,
                      on_stdin)
    print(f"ready {args.port}", flush=True)
    loop.run()


if __name__ == "__main__":
    serve(sys.argv[1:])
