"""A Foxglove WebSocket protocol client for tests, written from the protocol spec
(foxglove/ws-protocol): advertise -> subscribe -> binary message data, each payload
decoded with the protobuf schema the server advertised (FileDescriptorSet)."""

from __future__ import annotations

import base64
import json
import struct
import time
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


def _message_class(schema_name: str, schema_b64: str) -> Any:
    fds = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(schema_b64))
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema_name))


async def collect(url: str, topics: set[str], seconds: float, *, want: int | None = None,
                  ssl: Any = True, protocols: tuple[str, ...] = SUBPROTOCOLS,
                  chosen: list[str] | None = None,
                  ) -> tuple[dict[str, dict[str, Any]], list[Received]]:
    """Subscribe to `topics` (as advertised) for `seconds` (or until `want` messages);
    returns the advertised channels by topic and the decoded messages. `protocols`: the
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
        while (left := end - time.monotonic()) > 0 and (want is None or len(out) < want):
            try:
                msg = await ws.receive(timeout=left)
            except TimeoutError:
                break
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
                out.append(Received(ch["topic"], ch.get("schemaName", ""), t_ns, m))
            else:
                break
    return channels, out
