"""One port for every Foxglove client: a thin TCP relay in front of foxglove-sdk's server.

foxglove-sdk (0.30, the newest release) accepts only the WebSocket subprotocols
`foxglove.sdk.v1` and `foxglove.sdk.v1.1`; `@foxglove/ws-protocol` (npm), Lichtblick and
older Foxglove Studio offer `foxglove.websocket.v1` and get HTTP 400. The two names are the
same protocol (the SDK renamed it; its messages are unchanged), so the SDK's server runs on
an internal loopback port and this relay listens on `foxglove.listen`:

- it reads the client's HTTP upgrade request (at most `HEAD_LIMIT` bytes, within
  `HEAD_TIMEOUT_S`); a request offering `foxglove.websocket.v1` and no SDK name has its
  `Sec-WebSocket-Protocol` header rewritten to `foxglove.sdk.v1`, and the SDK's `101`
  answer has the name chosen rewritten back, so each client hears the name it offered
  (`Sec-WebSocket-Accept` depends on the key only, so both stay valid);
- after the handshake it copies bytes both ways unchanged: no WebSocket frame is parsed
  or rebuilt, so every client gets exactly what the SDK sent.

Bounded: the relay holds at most a read chunk and asyncio's write buffer per direction
and client (under 1 MB). It never reads from the SDK faster than the client takes, so a
client that stops reading stalls its own SDK connection, and the SDK's per-client queue
(`message_backlog_size` = `foxglove.client_backlog` messages) drops its oldest messages:
a stalled client costs at most that queue, the cameras and other clients go on. A stall
is logged once per client (WARNING), its recovery and each client's coming and going at
INFO, with the client's own address (the SDK only ever sees the relay's).

TLS (`foxglove.tls`) ends at the relay; the SDK's internal port is plain and on
127.0.0.1 only. Runs on its own thread and event loop; `stop()` ends every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("edged.foxglove")

SDK_PROTOCOLS = (b"foxglove.sdk.v1", b"foxglove.sdk.v1.1")  # what the SDK's server accepts
LEGACY_PROTOCOL = b"foxglove.websocket.v1"  # what ws-protocol and Lichtblick offer
PROTOCOL_HEADER = b"sec-websocket-protocol"
HEAD_LIMIT = 16 * 1024  # an upgrade request or answer is a few hundred bytes
HEAD_TIMEOUT_S = 10.0  # a client that sends no request in time is closed
CHUNK = 256 * 1024  # bytes read at once (a 720p mono8 mask is ~4 reads)
STALL_S = 5.0  # a client that takes nothing for this long is reported as stalled


def offered_protocols(head: bytes) -> list[bytes]:
    """The subprotocols an HTTP upgrade request offers, in order (every
    Sec-WebSocket-Protocol header, comma-separated values)."""
    out: list[bytes] = []
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == PROTOCOL_HEADER:
            out.extend(p.strip() for p in value.split(b",") if p.strip())
    return out


def rewrite_request(head: bytes) -> tuple[bytes, bool]:
    """`head` (an HTTP request head, ending in CRLF CRLF) as the SDK must see it, and
    whether it was rewritten: only a request offering the legacy name and no SDK name is
    (anything else goes through as sent, and the SDK answers it as it would)."""
    offered = offered_protocols(head)
    if LEGACY_PROTOCOL not in offered or any(p in SDK_PROTOCOLS for p in offered):
        return head, False
    lines = head[:-4].split(b"\r\n")
    kept = [ln for ln in lines[1:]
            if ln.partition(b":")[0].strip().lower() != PROTOCOL_HEADER]
    lines = [lines[0], b"Sec-WebSocket-Protocol: " + SDK_PROTOCOLS[0], *kept]
    return b"\r\n".join(lines) + b"\r\n\r\n", True


def rewrite_response(head: bytes) -> bytes:
    """The SDK's answer to a rewritten request, naming the legacy subprotocol again."""
    lines = head[:-4].split(b"\r\n")
    for i, ln in enumerate(lines[1:], 1):
        name, sep, value = ln.partition(b":")
        if sep and name.strip().lower() == PROTOCOL_HEADER \
                and value.strip() in SDK_PROTOCOLS:
            lines[i] = name + b": " + LEGACY_PROTOCOL
    return b"\r\n".join(lines) + b"\r\n\r\n"


@dataclass
class RelayCounts:
    """Since start (read by tests through the log, and by `close`'s summary)."""

    clients: int = 0  # connections that completed a handshake through the relay
    legacy: int = 0  # of those, with `foxglove.websocket.v1`
    stalled: int = 0  # clients reported as stalled (one WARNING each)
    refused: int = 0  # connections closed before a handshake (no request, too long, TLS)
    bytes_out: int = 0  # relayed to clients


def _peer(writer: asyncio.StreamWriter) -> str:
    p = writer.get_extra_info("peername")
    if isinstance(p, tuple) and len(p) >= 2:
        return f"[{p[0]}]:{p[1]}" if ":" in str(p[0]) else f"{p[0]}:{p[1]}"
    return str(p)


class Relay:
    """The listening socket `sock` (bound by the caller, so errors come before READY)
    relayed to the SDK's server on 127.0.0.1:`upstream_port`."""

    def __init__(self, sock: socket.socket, upstream_port: int, *,
                 ssl_context: ssl.SSLContext | None, backlog: int) -> None:
        self._sock = sock
        self._upstream_port = upstream_port
        self._ssl = ssl_context
        self._backlog = backlog
        self.counts = RelayCounts()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="foxglove-relay", daemon=True)
        self._thread.start()
        self._started.wait()  # set once serving, or on the error that prevented it
        if self._failed is not None:
            raise self._failed

    # ------------------------------------------------------------------ lifecycle

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # before serving: the constructor raises it
            self._failed = e
            self._started.set()
            if not isinstance(e, Exception):
                raise

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # a task of our own: asyncio reports a cancelled callback task as an error
            task = asyncio.ensure_future(self._client(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        server = await asyncio.start_server(
            accept, sock=self._sock, ssl=self._ssl,
            ssl_handshake_timeout=HEAD_TIMEOUT_S if self._ssl else None)
        self._started.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for t in list(tasks):
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended already
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(10.0)
        self._sock.close()

    # ------------------------------------------------------------------ one client

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        up_w: asyncio.StreamWriter | None = None
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                    ConnectionError, ssl.SSLError, OSError):
                self.counts.refused += 1
                return
            if len(head) > HEAD_LIMIT:
                self.counts.refused += 1
                return
            head, legacy = rewrite_request(head)
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self._upstream_port)
            up_w.write(head)
            try:
                answer = await asyncio.wait_for(up_r.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            upgraded = answer.startswith(b"HTTP/1.1 101")
            writer.write(rewrite_response(answer) if legacy and upgraded else answer)
            if upgraded:
                self.counts.clients += 1
                self.counts.legacy += legacy
                log.info("foxglove: client %s connected (%s)", peer,
                         (LEGACY_PROTOCOL if legacy else
                          b", ".join(offered_protocols(head))).decode(errors="replace"))
            t0 = time.monotonic()
            down = asyncio.ensure_future(self._to_client(up_r, writer, peer))
            up = asyncio.ensure_future(self._copy(reader, up_w))
            try:
                await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (down, up):
                    t.cancel()
                await asyncio.gather(down, up, return_exceptions=True)
            if upgraded:
                log.info("foxglove: client %s left after %.0f s", peer, time.monotonic() - t0)
        except (ConnectionError, OSError, ssl.SSLError):
            pass  # a client gone mid-way: nothing to report beyond 'left'
        finally:
            for w in (writer, up_w):
                if w is not None:
                    w.close()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(w.wait_closed(), 1.0)

    @staticmethod
    async def _copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Client -> SDK (subscriptions: small): copied as it comes."""
        with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
            while data := await src.read(CHUNK):
                dst.write(data)
                await dst.drain()

    async def _to_client(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                         peer: str) -> None:
        """SDK -> client, never faster than the client takes it (see the module's doc)."""
        warned = False
        with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
            while data := await src.read(CHUNK):
                dst.write(data)
                self.counts.bytes_out += len(data)
                drain = asyncio.ensure_future(dst.drain())
                try:
                    done, _ = await asyncio.wait({drain}, timeout=STALL_S)
                    if not done:
                        t_stall = time.monotonic() - STALL_S
                        if not warned:  # once per client; again at INFO
                            warned = True
                            self.counts.stalled += 1
                            log.warning("foxglove: client %s has taken nothing for %g s; it "
                                        "keeps its newest %d messages (foxglove.client_"
                                        "backlog) and loses older ones until it reads again",
                                        peer, STALL_S, self._backlog)
                        else:
                            log.info("foxglove: client %s stalled again", peer)
                        await drain
                        log.info("foxglove: client %s reads again after %.0f s", peer,
                                 time.monotonic() - t_stall)
                    drain.result()
                finally:  # cancelled, or the client gone: no drain left unretrieved
                    if not drain.done():
                        drain.cancel()
                    elif not drain.cancelled():
                        drain.exception()
