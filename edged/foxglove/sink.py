"""Foxglove live: a Foxglove WebSocket server (foxglove-sdk) in the daemon, and the sink
that logs each camera's result to it.

Channels per camera (`/<camera>/...`): `image` (foxglove.CompressedImage, JPEG),
`mask` (foxglove.RawImage mono8, class ids at camera resolution), `mask_color`
(RawImage rgb8, the view's colours), `annotations` (foxglove.ImageAnnotations: boxes
and labels); and `/edged/stats` (JSON, the `_stats` figures). Every message is stamped
with the frame's capture time. A channel's message is built and encoded only while
something is subscribed to it (`Channel.has_sinks`), so an idle Foxglove server costs
a dict lookup per result.

The server runs on foxglove-sdk's own threads; `Channel.log` is thread-safe, and this
sink calls it from its sink thread only. Each daemon has its own `foxglove.Context`
(no process-wide state).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import foxglove
from foxglove.channels import CompressedImageChannel, ImageAnnotationsChannel, RawImageChannel

from edged.config import FoxgloveConfig
from edged.daemon.sinks import Outcome, Sink
from edged.foxglove import FoxgloveError, messages
from edged.names import parse_host_port
from edged.view.overlay import Overlay
from edged.wire.codec import TOPIC_STATS
from edged.wire.telemetry import decode_stats

log = logging.getLogger("edged.foxglove")

STATS_TOPIC = "/edged/stats"
STATS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"interval_s": {"type": "number"}, "cameras": {"type": "object"}},
}


def start_server(config: FoxgloveConfig, context: foxglove.Context) -> foxglove.WebSocketServer:
    """Listen now (before READY); FoxgloveError naming the key when it cannot."""
    hp = parse_host_port(config.listen)
    cert = key = None
    if config.tls is not None:
        from edged.daemon.listen import ListenError, read_tls

        try:
            cert, key = read_tls(config.tls, "foxglove.tls")
        except ListenError as e:
            raise FoxgloveError(str(e)) from None
    try:
        return foxglove.start_server(name="edged", host=hp.host, port=hp.port,
                                     context=context, tls_cert=cert, tls_key=key)
    except RuntimeError as e:
        why = str(e).split("Failed to bind port: ", 1)[-1]
        raise FoxgloveError(f"cannot listen on foxglove.listen {config.listen}: {why}") from None


@dataclass(slots=True)
class _Camera:
    image: CompressedImageChannel
    mask: RawImageChannel
    mask_color: RawImageChannel
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
        self._stats = foxglove.Channel(STATS_TOPIC, schema=STATS_SCHEMA,
                                       message_encoding="json", context=self.context)
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
                RawImageChannel(f"/{name}/mask_color", context=ctx),
                ImageAnnotationsChannel(f"/{name}/annotations", context=ctx))
        return cam

    def open(self) -> None:
        log.info("Foxglove WebSocket server on %s://%s (open it in Foxglove: Open "
                 "connection -> Foxglove WebSocket)", "wss" if self.config.tls else "ws",
                 self.config.listen)

    def deliver(self, outcome: Outcome) -> None:
        result, frame = outcome.result, outcome.frame
        cam = self._camera(result.camera)
        t = result.t_capture_wall_ns
        if frame is not None and cam.image.has_sinks():
            cam.image.log(messages.image(frame, self.config.quality), log_time=t)
            self.encoded["image"] += 1
        want_mask, want_colour = cam.mask.has_sinks(), cam.mask_color.has_sinks()
        mask = result.mask_camera() if want_mask or want_colour else None
        if mask is not None and want_mask:
            cam.mask.log(messages.class_mask(result, mask), log_time=t)
            self.encoded["mask"] += 1
        if mask is not None and want_colour:
            cam.mask_color.log(messages.colour_mask(result, mask, self._overlay), log_time=t)
            self.encoded["mask_color"] += 1
        if cam.annotations.has_sinks():
            cam.annotations.log(messages.image_annotations(result), log_time=t)
            self.encoded["annotations"] += 1

    def control(self, frames: list[bytes]) -> None:
        if frames and bytes(frames[0]) == TOPIC_STATS.encode() and self._stats.has_sinks():
            st = decode_stats(frames)
            self._stats.log({"interval_s": st.interval_s, "cameras": st.cameras},
                            log_time=st.t_ns)
            self.encoded["stats"] += 1

    def close(self) -> None:
        self.server.stop()
        log.info("foxglove: encoded for subscribers: %s",
                 ", ".join(f"{k} {n}" for k, n in self.encoded.items()))
