"""A Foxglove WebSocket protocol client for tests, written from the protocol spec
(foxglove/ws-protocol): advertise -> subscribe -> binary message data, each payload
decoded with the protobuf schema the server advertised (FileDescriptorSet)."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SUBPROTOCOLS = ("foxglove.sdk.v1", "foxglove.websocket.v1")  # offered by default
LEGACY = ("foxglove.websocket.v1",)  # what @foxglove/ws-protocol and Lichtblick offer
SDK = ("foxglove.sdk.v1",)
OP_MESSAGE_DATA = 0x01


@dataclass(frozen=True)
class Received:
    topic: str
    schema: str
    log_time_ns: int
    message: Any  # a protobuf message, or the decoded JSON
    t_received_ns: int = 0  # wall clock when the client had the frame (before decoding)


def _message_class(schema_name: str, schema_b64: str) -> Any:
    fds = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(schema_b64))
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema_name))


async def collect(url: str, topics: set[str], seconds: float, *, want: int | None = None,
                  until: Callable[[list[Received]], bool] | None = None,
                  ssl: Any = True, protocols: tuple[str, ...] = SUBPROTOCOLS,
                  chosen: list[str] | None = None,
                  ) -> tuple[dict[str, dict[str, Any]], list[Received]]:
    """Subscribe to `topics` (as advertised) until `want` messages have arrived or
    `until(messages)` holds, `seconds` at most (the ceiling for a failure); returns the
    advertised channels by topic and the decoded messages. `protocols`: the
    subprotocols offered; the one the server chose is appended to `chosen`."""
    channels: dict[str, dict[str, Any]] = {}
    subs: dict[int, dict[str, Any]] = {}
    classes: dict[int, Any] = {}
    out: list[Received] = []
    async with aiohttp.ClientSession() as s, \
            s.ws_connect(url, protocols=protocols, max_msg_size=64 * 1024 * 1024,
                         ssl=ssl) as ws:
        if chosen is not None:
            chosen.append(ws.protocol or "")
        end = time.monotonic() + seconds
        next_id = 1
        while (left := end - time.monotonic()) > 0 and (want is None or len(out) < want) \
                and (until is None or not until(out)):
            try:
                msg = await ws.receive(timeout=left)
            except TimeoutError:
                break
            t_received = time.time_ns()
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                if data.get("op") == "advertise":
                    new = []
                    for ch in data["channels"]:
                        channels[ch["topic"]] = ch
                        if ch["topic"] in topics:
                            subs[next_id] = ch
                            if ch.get("schemaEncoding") == "protobuf":
                                classes[next_id] = _message_class(ch["schemaName"],
                                                                  ch["schema"])
                            new.append({"id": next_id, "channelId": ch["id"]})
                            next_id += 1
                    if new:
                        await ws.send_str(json.dumps({"op": "subscribe",
                                                      "subscriptions": new}))
            elif msg.type == aiohttp.WSMsgType.BINARY:
                b = msg.data
                if b[0] != OP_MESSAGE_DATA:
                    continue
                sub_id, t_ns = struct.unpack_from("<IQ", b, 1)
                payload = b[13:]
                ch = subs.get(sub_id)
                if ch is None:
                    continue
                if sub_id in classes:
                    m = classes[sub_id].FromString(payload)
                else:
                    m = json.loads(payload)
                out.append(Received(ch["topic"], ch.get("schemaName", ""), t_ns, m, t_received))
            else:
                break
    return channels, out


@dataclass
class Counted:
    bytes: int = 0
    messages: dict[str, int] | None = None
    log_times: dict[str, list[int]] | None = None


async def count(url: str, want_bytes: int, seconds: float, *,
                protocols: tuple[str, ...] = LEGACY) -> Counted:
    """Subscribe to every channel and count what arrives (nothing decoded, so the
    client keeps up on a loaded machine) until `want_bytes` payload bytes or `seconds`."""
    out = Counted(0, {}, {})
    assert out.messages is not None and out.log_times is not None
    topics: dict[int, str] = {}
    async with aiohttp.ClientSession() as s, \
            s.ws_connect(url, protocols=protocols, max_msg_size=64 * 1024 * 1024) as ws:
        end = time.monotonic() + seconds
        while out.bytes < want_bytes and (left := end - time.monotonic()) > 0:
            try:
                msg = await ws.receive(timeout=left)
            except TimeoutError:
                break
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                if data.get("op") == "advertise":
                    subs = []
                    for ch in data["channels"]:
                        sid = len(topics) + 1
                        topics[sid] = ch["topic"]
                        subs.append({"id": sid, "channelId": ch["id"]})
                    await ws.send_str(json.dumps({"op": "subscribe", "subscriptions": subs}))
            elif msg.type == aiohttp.WSMsgType.BINARY:
                b = msg.data
                if b[0] != OP_MESSAGE_DATA:
                    continue
                sub_id, t_ns = struct.unpack_from("<IQ", b, 1)
                topic = topics.get(sub_id, "?")
                out.bytes += len(b) - 13
                out.messages[topic] = out.messages.get(topic, 0) + 1
                out.log_times.setdefault(topic, []).append(t_ns)
            else:
                break
    return out


class StalledClient:
    """A Foxglove client that subscribes to every channel and then never reads again
    (a frozen laptop, a tab in the background of a slow link). Plain sockets and the
    protocol's handshake by hand: nothing reads on its behalf. Its receive buffer is
    small, so the kernel holds little for it; `close()` resets the connection (RST), as
    a client that vanishes does."""

    def __init__(self, host: str, port: int, *, protocol: str = LEGACY[0],
                 rcvbuf: int = 64 * 1024, timeout: float = 20.0) -> None:
        import base64 as b64
        import os
        import socket

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        key = b64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}"
                           "\r\n\r\n").encode())
        self._buf = b""
        while b"\r\n\r\n" not in self._buf:
            self._buf += self._recv()
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))
        self.channels: list[dict[str, Any]] = []
        while not self.channels:
            opcode, payload = self._frame()
            if opcode == 1:
                data = json.loads(payload)
                if data.get("op") == "advertise":
                    self.channels = data["channels"]
        self._send_text(json.dumps({"op": "subscribe", "subscriptions": [
            {"id": i + 1, "channelId": ch["id"]} for i, ch in enumerate(self.channels)]}))

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        return data

    def _exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._buf += self._recv()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _frame(self) -> tuple[int, bytes]:
        b0, b1 = self._exact(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._exact(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._exact(8))[0]
        return b0 & 0x0F, self._exact(n)

    def _send_text(self, text: str) -> None:
        import os

        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n))
        masked = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
        self.sock.sendall(head + mask + masked)

    def close(self) -> None:
        import socket

        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
