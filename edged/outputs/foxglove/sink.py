"""Foxglove live: a Foxglove WebSocket server in the daemon, and the sink that logs each
camera's result to it.

Channels per camera (`/<camera>/...`): `image` (foxglove.CompressedImage, JPEG),
`mask` (foxglove.RawImage mono8, class ids at camera resolution, for machines),
`mask_color` (CompressedImage PNG in the view's colours, for people), `annotations`
(foxglove.ImageAnnotations: boxes and labels where the view draws them); and
`/edged/stats` (JSON, schema `edged.Stats`, the `_stats` figures). Every message is
stamped with the frame's capture time. A channel's message is built and encoded only
while something is subscribed to it (`Channel.has_sinks`), so an idle Foxglove server
costs a dict lookup per result. The recorder writes the same channels.

The server is foxglove-sdk's, on an internal loopback port, behind `relay.Relay` on
`foxglove.listen`, which lets clients offering either subprotocol name in (see there).
The SDK runs on its own threads; `Channel.log` is thread-safe, and this sink calls it
from its sink thread only. Each daemon has its own `foxglove.Context`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import foxglove
from foxglove.channels import CompressedImageChannel, ImageAnnotationsChannel, RawImageChannel

from edged.outputs.base import foxglove_schema as messages
from edged.outputs.base.draw import Overlay
from edged.outputs.base.foxglove_schema import STATS_TOPIC
from edged.outputs.base.sink import Outcome, Sink
from edged.outputs.foxglove import FoxgloveError
from edged.outputs.foxglove.relay import Relay
from edged.outputs.foxglove.settings import FoxgloveConfig
from edged.telemetry import ControlEvent, StatsReport

log = logging.getLogger("edged.foxglove")


# What foxglove-sdk logs (its Rust log records arrive in Python logging under these
# names) about a connection ending: every connection it sees is the relay's, so a
# client closing a tab, or being cut off, showed up as an ERROR from 127.0.0.1 ("Error
# receiving from client 127.0.0.1:...: Connection reset without closing handshake").
# The relay logs each client's coming and going itself, with its real address.
_SDK_CONNECTION_LOGGERS = ("foxglove.websocket.connected_client.poller",
                           "foxglove.websocket.connected_client", "foxglove.websocket.server",
                           "foxglove.websocket")
_CONNECTION_END = ("Connection reset", "without closing handshake", "Broken pipe",
                   "Connection closed", "connection closed", "os error 32", "os error 104")


# What a client got wrong (garbage, a bad JSON op, an unmasked or oversized frame): the SDK
# logs it as an ERROR per message; the client is dropped or the message ignored, edged is fine
_CLIENT_FAULT = ("Invalid message from", "Error receiving from client")


class _ConnectionEnd(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if any(p in msg for p in _CONNECTION_END):
            return False
        if record.levelno > logging.WARNING and any(p in msg for p in _CLIENT_FAULT):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_quieted = False


def quiet_sdk_logging() -> None:
    """The SDK's per-connection INFO lines name the relay's loopback address, not the
    client's: WARNING and above only, and no line for a connection's end. Set before the
    first server starts (the SDK's log bridge caches levels)."""
    global _quieted
    if _quieted:
        return
    _quieted = True
    logging.getLogger("foxglove.websocket").setLevel(logging.WARNING)
    logging.getLogger("tungstenite").setLevel(logging.WARNING)
    for name in _SDK_CONNECTION_LOGGERS:
        logging.getLogger(name).addFilter(_ConnectionEnd())


class FoxgloveServer:
    """foxglove-sdk's server on 127.0.0.1 (an ephemeral port) and the relay on
    `foxglove.listen` (TLS there when configured)."""

    def __init__(self, config: FoxgloveConfig, context: foxglove.Context) -> None:
        from edged.outputs.base.listen import ListenError, bind_tcp, server_context

        quiet_sdk_logging()
        try:  # the configured address first: a port in use fails before the SDK starts
            tls = server_context(config.tls, "foxglove.tls") if config.tls else None
            sock = bind_tcp(config.listen, "foxglove.listen")
        except ListenError as e:
            raise FoxgloveError(str(e)) from None
        try:
            self.sdk = foxglove.start_server(name="edged", host="127.0.0.1", port=0,
                                             context=context,
                                             message_backlog_size=config.client_backlog)
        except RuntimeError as e:
            sock.close()
            raise FoxgloveError(f"foxglove: the internal server cannot start ({e})") from None
        self.relay = Relay(sock, self.sdk.port, ssl_context=tls, backlog=config.client_backlog)

    def stop(self) -> None:
        self.relay.stop()
        self.sdk.stop()


def start_server(config: FoxgloveConfig, context: foxglove.Context) -> FoxgloveServer:
    """Listen now (before READY); FoxgloveError naming the key when it cannot."""
    return FoxgloveServer(config, context)


@dataclass(slots=True)
class _Camera:
    image: CompressedImageChannel
    mask: RawImageChannel
    mask_color: CompressedImageChannel
    annotations: ImageAnnotationsChannel


class FoxgloveSink(Sink):
    name = "foxglove"

    def __init__(self, config: FoxgloveConfig, cameras: list[str]) -> None:
        self.config = config
        self.context = foxglove.Context()
        self.server = start_server(config, self.context)
        self._cameras: dict[str, _Camera] = {}
        for c in cameras:  # advertised from the start, so a client can subscribe at once
            self._camera(c)
        schema = foxglove.Schema(name=messages.STATS_SCHEMA_NAME, encoding="jsonschema",
                                 data=json.dumps(messages.stats_schema(cameras)).encode())
        self._stats = foxglove.Channel(STATS_TOPIC, schema=schema, message_encoding="json",
                                       context=self.context)
        self._overlay = Overlay()
        # messages built and logged, by channel kind (logged at close)
        self.encoded = dict.fromkeys(("image", "mask", "mask_color", "annotations", "stats"), 0)

    def _camera(self, name: str) -> _Camera:
        cam = self._cameras.get(name)
        if cam is None:
            ctx = self.context
            cam = self._cameras[name] = _Camera(
                CompressedImageChannel(f"/{name}/image", context=ctx),
                RawImageChannel(f"/{name}/mask", context=ctx),
                CompressedImageChannel(f"/{name}/mask_color", context=ctx),
                ImageAnnotationsChannel(f"/{name}/annotations", context=ctx))
        return cam

    def open(self) -> None:
        log.info("Foxglove WebSocket server on %s://%s (open it in Foxglove or Lichtblick: "
                 "Open connection -> Foxglove WebSocket; subprotocols foxglove.sdk.v1 and "
                 "foxglove.websocket.v1; %d messages queued per client at most)",
                 "wss" if self.config.tls else "ws", self.config.listen,
                 self.config.client_backlog)

    def deliver(self, outcome: Outcome) -> None:
        result, frame = outcome.result, outcome.frame
        cam = self._camera(result.camera)
        t = result.t_capture_wall_ns
        if frame is not None and cam.image.has_sinks():
            cam.image.log(messages.image(frame, self.config.quality), log_time=t)
            self.encoded["image"] += 1
        want_mask, want_colour = cam.mask.has_sinks(), cam.mask_color.has_sinks()
        mask = outcome.mask.camera() if want_mask or want_colour else None
        if mask is not None and want_mask:
            cam.mask.log(messages.class_mask(result, mask), log_time=t)
            self.encoded["mask"] += 1
        png = outcome.mask.png() if mask is not None and want_colour else None
        if png is not None:
            cam.mask_color.log(messages.colour_mask(result, png, self._overlay), log_time=t)
            self.encoded["mask_color"] += 1
        if cam.annotations.has_sinks():
            cam.annotations.log(messages.image_annotations(result), log_time=t)
            self.encoded["annotations"] += 1

    def control(self, event: ControlEvent) -> None:
        if isinstance(event, StatsReport) and self._stats.has_sinks():
            self._stats.log(messages.stats_message(event), log_time=event.t_ns)
            self.encoded["stats"] += 1

    def close(self) -> None:
        self.server.stop()
        c = self.server.relay.counts
        log.info("foxglove: encoded for subscribers: %s",
                 ", ".join(f"{k} {n}" for k, n in self.encoded.items()))
        log.info("foxglove: clients: %d (%d with foxglove.websocket.v1), %d stalled, "
                 "%.1f MB relayed", c.clients, c.legacy, c.stalled, c.bytes_out / 1e6)
