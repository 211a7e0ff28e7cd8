"""A real headless Chromium for tests, driven over the DevTools protocol (CDP).

Loopback only: the browser's DevTools endpoint listens on 127.0.0.1, and every host
name resolves to nothing (`--host-resolver-rules`), so the browser cannot reach any
other machine (no update checks, no safe browsing, no fonts from the web).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium with one page; methods block (they run CDP calls on a loop
    of their own)."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900) -> None:
        exe = find_chromium()
        if exe is None:
            raise RuntimeError("no Chromium found (apt-get install chromium)")
        profile.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.new_event_loop()
        self._ids = itertools.count(1)
        args = [exe, "--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--disable-default-apps",
                "--disable-features=Translate,OptimizationHints,MediaRouter",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--mute-audio", f"--window-size={width},{height}",
                "--force-device-scale-factor=1", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to sandbox as root
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.close()
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._run(self._connect(port, width, height))

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    async def _connect(self, port: int, width: int, height: int) -> None:
        self._session = aiohttp.ClientSession()
        end = time.monotonic() + 30
        while True:
            try:
                async with self._session.get(f"http://127.0.0.1:{port}/json/list") as r:
                    targets = await r.json()
                page = next(t for t in targets if t.get("type") == "page")
                break
            except (aiohttp.ClientError, StopIteration):
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.2)
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"],
                                                  max_msg_size=256 * 1024 * 1024)
        await self._call("Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": height, "deviceScaleFactor": 1,
                          "mobile": False})

    async def _call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        assert self._ws is not None
        i = next(self._ids)
        await self._ws.send_str(json.dumps({"id": i, "method": method,
                                            "params": params or {}}))
        while True:
            msg = await asyncio.wait_for(self._ws.receive(), 60)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"DevTools connection ended: {msg.type}")
            data = json.loads(msg.data)
            if data.get("id") == i:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self._run(self._call(method, params))

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 30.0) -> Any:
        end = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None  # e.g. while the page is loading
            if value:
                return value
            if time.monotonic() > end:
                raise AssertionError(f"{expression!r} not true within {timeout} s")
            time.sleep(0.1)

    def screenshot(self) -> tuple[np.ndarray, bytes]:
        """The viewport as a BGR image, and the PNG bytes."""
        png = base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        return img, png

    def close(self) -> None:
        async def _close() -> None:
            if self._ws is not None:
                await self._ws.close()
            if self._session is not None:
                await self._session.close()
        if hasattr(self, "_session"):
            with contextlib.suppress(Exception):  # the browser may be gone already
                self._run(_close())
        self._loop.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
