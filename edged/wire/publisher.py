"""ZeroMQ PUB side of the wire protocol: non-blocking sends of encoded frames.

Frames come from `edged.wire.codec.encode_result` / `encode_eos`. A ZeroMQ socket is not
thread-safe: all calls on one `Publisher` must come from one thread (the daemon's
publish thread).

Back-pressure: each subscriber connection has its own queue of at most `sndhwm`
messages inside ZeroMQ. When a subscriber is slow or dead its queue fills and ZeroMQ
drops further messages *for that subscriber only*, silently: a PUB socket never
blocks and never reports it, so `send` still returns True. Subscribers see these drops
as gaps in `seq`. Memory is bounded by about `sndhwm` x message size per subscriber.
`dropped` counts only sends that ZeroMQ refused outright (socket closed, context
terminated, ...).

ZeroMQ learns what a subscriber's connection has consumed in batches of about
sndhwm/2 messages, so a burst larger than roughly sndhwm/2 can be dropped even for a
fast subscriber: choose `sndhwm` at least twice the largest burst (e.g. one result
per camera arriving together). The daemon's own largest burst is the stop: every
camera's last result, its `stopped` state and its end-of-stream at once (with the
default sndhwm of 8, 89 of 100 end-of-stream messages were dropped).
`Publisher(..., cameras=N)` raises the queue to `burst_hwm(N)` when sndhwm is lower.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import stat
import time
from collections.abc import Sequence
from types import TracebackType

import zmq

from edged import heap
from edged.errors import UserError
from edged.names import parse_endpoint
from edged.wire.curve import AddressBans, CurveAuth, ServerKeys

log = logging.getLogger(__name__)

# Dead peers (unplugged cable, crashed host) would otherwise hold a connection and its
# queue until the OS gives up (hours with default TCP keepalive): ZMTP heartbeats and
# short keepalive timers find them in seconds.
# the longest message a peer may send the PUB socket: a subscription (a topic prefix,
# camera name + "/result") or a handshake command (CURVE's INITIATE is ~250 bytes with
# metadata), so 1 KiB, not the 16 MiB one hostile subscription was
MAX_SUBSCRIPTION_BYTES = 1024
# distinct subscription bytes one peer address may hold. libzmq keeps every subscription
# in a character trie at ~50 bytes per character (one 16 MiB subscription cost 738 MB),
# before the application sees it, and XPUB_MANUAL keeps them too: what bounds the memory
# is refusing the address that sends too many. A real subscriber holds a few short
# prefixes ("front/", "_stats"); 16 KiB of them is under 1 MB in the trie
MAX_PEER_SUBSCRIPTION_BYTES = 16 * 1024
MAX_TRACKED_PEERS = 4096
# inbound messages libzmq queues per connection (RCVHWM). libzmq files a connection's
# queue into its trie in one loop that goes on while its I/O thread refills the queue, so
# with a deeper queue one call could file a whole flood before the guard read any of it.
# With 2 the I/O thread is asked to refill after every message read, and the loop ends
# whenever that refill comes later than one insertion (tools/sub_flood.py, 20 floods:
# worst peak +383 MB at 16, +11 MB at 2). 1 would be tighter still, but with a ZAP
# handler libzmq 4.3.5 then passes no subscription up at all.
SUBSCRIPTION_QUEUE = 2
# subscription messages one `_read_subscriptions` call reads: a subscriber sends a few
READS_PER_CALL = 256
REAP_CEILING_MS = 2000  # a refused socket's destruction, normally milliseconds
_HEARTBEAT_IVL_MS = 5000
_HEARTBEAT_TIMEOUT_MS = 15000
_KEEPALIVE_IDLE_S = 30
_KEEPALIVE_INTVL_S = 10
_KEEPALIVE_CNT = 3


class PublishError(UserError, RuntimeError):
    """The publisher could not be set up (e.g. an endpoint cannot be bound)."""

    prefix = "publish.endpoints: "


def _ipc_path(endpoint: str) -> str | None:
    """Filesystem path of an ipc:// endpoint, None for the abstract namespace (ipc://@x)."""
    path = endpoint[len("ipc://"):]
    return None if path.startswith("@") else path


def _remove_stale_ipc(endpoint: str, retry_s: float = 0.0) -> None:
    """Remove a socket file left behind by a dead process; refuse to steal a live one
    (one that is still listening after `retry_s`)."""
    deadline = time.monotonic() + retry_s
    while True:
        try:
            _remove_stale_ipc_once(endpoint)
            return
        except PublishError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _remove_stale_ipc_once(endpoint: str) -> None:
    path = _ipc_path(endpoint)
    if not path or not os.path.lexists(path):
        return
    try:
        mode = os.lstat(path).st_mode
    except OSError as e:
        raise PublishError(f"cannot bind {endpoint}: {e.strerror}") from e
    if not stat.S_ISSOCK(mode):
        raise PublishError(f"cannot bind {endpoint}: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # nobody listening: stale
    except OSError as e:
        raise PublishError(f"cannot bind {endpoint}: probing {path}: {e.strerror or e}") from e
    else:
        raise PublishError(f"cannot bind {endpoint}: another process is listening on {path}")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    log.info("removed stale ipc socket file %s", path)


def _group_id(name: str) -> int:
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise PublishError(f"publish.ipc_group: no group named {name!r}") from None


def release_ipc(endpoint: str) -> None:
    """Remove the socket file of a closed ipc:// endpoint if no process listens on it
    (libzmq 4.3 leaves it behind on close; `edged check` cleans up after its bind test)."""
    if endpoint.startswith("ipc://"):
        with contextlib.suppress(PublishError):
            _remove_stale_ipc(endpoint)


class SubscriptionGuard:
    """Distinct subscriptions per peer address (tcp peers: an IP; ipc peers are let be,
    the socket file's mode decides who connects): `add` says when one passes
    `limit` bytes. Reconnects repeat the same prefixes, so they do not count twice."""

    def __init__(self, limit: int = MAX_PEER_SUBSCRIPTION_BYTES,
                 peers: int = MAX_TRACKED_PEERS) -> None:
        self.limit, self.peers = limit, peers
        self._held: dict[str, set[bytes]] = {}
        self._bytes: dict[str, int] = {}

    def add(self, peer: str, message: bytes) -> bool:
        """One subscribe (b"\\x01" + prefix) or unsubscribe (b"\\x00" + prefix) message
        from `peer`; True once that peer holds more than `limit` bytes of subscriptions."""
        held = self._held.get(peer)
        if held is None:
            if len(self._held) >= self.peers:  # forget the oldest quiet one
                oldest = next(iter(self._held))
                del self._held[oldest], self._bytes[oldest]
            held = self._held[peer] = set()
            self._bytes[peer] = 0
        prefix = message[1:]
        if message[:1] == b"\x01" and prefix not in held:
            held.add(prefix)
            self._bytes[peer] += len(prefix) + 1
        elif message[:1] == b"\x00" and prefix in held:
            held.discard(prefix)
            self._bytes[peer] -= len(prefix) + 1
        return self._bytes[peer] > self.limit

    def held(self, peer: str) -> int:
        return self._bytes.get(peer, 0)

    def forget(self, peer: str) -> None:
        self._held.pop(peer, None)
        self._bytes.pop(peer, None)


def _ip(peer: object) -> str | None:
    """The IP of a tcp peer's "Peer-Address", None for ipc peers (not an address)."""
    try:
        return str(ipaddress.ip_address(peer if isinstance(peer, str) else ""))
    except ValueError:
        return None


def _check_endpoint(endpoint: str) -> None:
    # the rules the config validated publish.endpoints with (edged.names.parse_endpoint)
    try:
        parse_endpoint(endpoint)
    except ValueError as e:
        raise PublishError(f"cannot bind {endpoint!r}: {e}") from None


# messages one camera may put on the socket at the same moment: at a stop its last
# result, its `stopped` state and its end-of-stream
MESSAGES_PER_CAMERA = 3


def burst_hwm(cameras: int) -> int:
    """The smallest sndhwm under which a fast subscriber loses none of the burst that
    `cameras` cameras send together (plus the stats message): twice the burst."""
    return 2 * (MESSAGES_PER_CAMERA * max(cameras, 0) + 1)


def _discard(sock: zmq.Socket, bound: Sequence[str]) -> None:
    """Close a socket with linger 0 (its connections end without what they queued being
    read) and, once ZeroMQ's reaper has destroyed it, hand what libzmq had filed into its
    trie (for a flood, 1-380 MB: tools/sub_flood.py) back to the OS, which glibc would
    keep resident. Milliseconds; the ceiling only bounds a stuck reaper."""
    reaped = sock.get_monitor_socket(zmq.EVENT_MONITOR_STOPPED)
    try:
        for ep in bound:
            with contextlib.suppress(zmq.ZMQError):
                sock.unbind(ep)
        sock.close(linger=0)
        if reaped.poll(REAP_CEILING_MS, zmq.POLLIN):
            reaped.recv_multipart()
            heap.give_back()
        else:
            log.warning("publish: a replaced socket was not destroyed within %d ms; the "
                        "memory its peers cost stays resident", REAP_CEILING_MS)
    finally:
        reaped.close(linger=0)


class Publisher:
    """A publishing (XPUB) socket bound to every endpoint in `endpoints`.

    `cameras`: how many cameras publish on it; `sndhwm` is raised to `burst_hwm(cameras)`
    if lower, so their simultaneous messages (above all the end-of-stream of each at a
    stop) are not dropped for subscribers that keep up."""

    def __init__(self, endpoints: Sequence[str], *, sndhwm: int = 8,
                 context: zmq.Context | None = None, linger_ms: int = 500,
                 cameras: int = 0, curve: ServerKeys | None = None,
                 ipc_mode: int = 0o600, ipc_group: str | None = None) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise PublishError("no endpoints to bind")
        if sndhwm < 1:
            raise ValueError("sndhwm must be >= 1 (0 would mean an unbounded queue)")
        self.endpoints: tuple[str, ...] = tuple(endpoints)
        self.ipc_mode = ipc_mode
        self._ipc_gid = _group_id(ipc_group) if ipc_group is not None else None
        if burst_hwm(cameras) > sndhwm:
            log.info("publish.sndhwm %d raised to %d: %d cameras may send %d messages at "
                     "once (at a stop, the end-of-stream of each)", sndhwm,
                     burst_hwm(cameras), cameras, MESSAGES_PER_CAMERA * cameras + 1)
            sndhwm = burst_hwm(cameras)
        self.sndhwm = sndhwm
        self.sent = 0
        self.dropped = 0
        # a context of its own unless given one: closing then waits (up to linger_ms) until
        # queued messages have left, so an end-of-stream sent last is not lost when the
        # process exits right after
        self._own_ctx = context is None
        self._ctx = context if context is not None else zmq.Context()
        self.linger_ms = linger_ms
        self.subscriptions = 0  # subscribe messages received (a subscriber sends 1 or more)
        self.guard = SubscriptionGuard()
        self.refusals = 0  # sockets replaced to cut a peer off (SubscriptionGuard)
        self._server_keys = curve
        self.curve: CurveAuth | None = None
        self._zap: AddressBans | None = None  # the context's ZAP handler (CURVE's, if on)
        try:
            if curve is not None:
                # the ZAP handler first: a connection that arrives before it would be
                # admitted unchecked
                self.curve = self._zap = CurveAuth(self._ctx, curve)
            elif any(ep.startswith("tcp://") for ep in self.endpoints):
                # a ZAP handler from the start, so that an address refused later
                # (SubscriptionGuard) is refused from its very next connection
                try:
                    self._zap = AddressBans(self._ctx)
                except zmq.ZMQError as e:  # a context shared with another ZAP handler
                    log.debug("publish: no ZAP handler of its own (%s)", e)
            for ep in self.endpoints:
                _check_endpoint(ep)
            self._sock = self._open()
        except BaseException:
            if self._zap is not None:
                self._zap.stop()
            if self._own_ctx:
                self._ctx.term()
            raise
        self._closed = False

    def _open(self) -> zmq.Socket:
        """A new XPUB socket with every option set, bound to every endpoint (`_bound`: what
        each resolved to). Closed again if any bind fails."""
        # XPUB: a PUB that hands the subscriptions up, so that edged can count them
        # (publish.wait_for_subscribers); verbose, so that every subscriber's counts, not
        # only the first per topic. They are read on every send, so none pile up.
        sock: zmq.Socket = self._ctx.socket(zmq.XPUB)
        self._sock = sock  # _bind binds it
        try:
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)
            keys = self._server_keys
            if keys is not None:
                sock.curve_secretkey = keys.secret
                sock.curve_publickey = keys.public
                sock.curve_server = True
            if self._zap is not None and self.curve is None:
                # NULL connections ask the ZAP handler only with a domain set (CURVE ones
                # always do, under the default domain its keys are configured for)
                sock.zap_domain = b"edged"
            # inbound messages on a PUB socket are subscriptions: a few topic bytes. A
            # peer that sends more (one 16 MiB subscription cost ~800 MB) is cut off
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
            # libzmq files a subscriber's queued subscriptions into its trie in one go
            # whenever edged calls the socket: a two-message inbound queue keeps that
            # batch small (TCP pushes back on the rest), so the guard sees a flood early
            sock.setsockopt(zmq.RCVHWM, SUBSCRIPTION_QUEUE)
            sock.setsockopt(zmq.SNDHWM, self.sndhwm)
            sock.setsockopt(zmq.LINGER, self.linger_ms)
            sock.setsockopt(zmq.HEARTBEAT_IVL, _HEARTBEAT_IVL_MS)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _HEARTBEAT_TIMEOUT_MS)
            # socket-wide options; only tcp endpoints use them
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, _KEEPALIVE_IDLE_S)
            sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, _KEEPALIVE_INTVL_S)
            sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, _KEEPALIVE_CNT)
            # ZMQ_IMMEDIATE is not set: it only affects connecting sockets' queues, and
            # a bound PUB has no queue for a subscriber until it has connected anyway.
            # what each endpoint resolved to (unbind needs it for a wildcard host); a
            # replaced socket's endpoints are released in ZeroMQ's I/O thread a moment
            # after its close, hence the retry then
            retry_s = 2.0 if self.refusals else 0.0
            self._bound: list[str] = []
            for ep in self.endpoints:
                if ep.startswith("ipc://"):
                    _remove_stale_ipc(ep, retry_s)
                self._bound.append(self._bind(ep, retry_s))
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    def send(self, frames: list[bytes]) -> bool:
        """Queue one multipart message without blocking; False if it was refused.

        The frames must not be mutated afterwards: the last (mask) frame is sent
        zero-copy and ZeroMQ reads it from its I/O thread later.
        """
        if self._closed or not frames:
            self.dropped += 1
            return False
        sock = self._sock
        last = len(frames) - 1
        self._read_subscriptions()
        try:
            # Reading ZMQ_EVENTS makes libzmq process the I/O thread's pending "subscriber
            # has read up to here" notices, which zmq_send only does about once per ms.
            # Without it a quick burst sees a stale, full-looking queue and PUB drops
            # messages even for a subscriber that keeps up (seen with sndhwm=8).
            sock.getsockopt(zmq.EVENTS)
            # PUB sends are all-or-nothing per message: once the first part is
            # accepted the rest are too, so no half message can be left queued.
            for i, part in enumerate(frames):
                if i < last:
                    sock.send(part, zmq.NOBLOCK | zmq.SNDMORE)
                else:
                    # big masks go zero-copy; pyzmq copies below 64 KB anyway
                    sock.send(part, zmq.NOBLOCK, copy=i < 2)
        except zmq.Again:
            self.dropped += 1
            return False
        except zmq.ZMQError as e:
            self.dropped += 1
            log.debug("publish failed: %s", e)
            return False
        self.sent += 1
        return True

    def _read_subscriptions(self) -> None:
        """Count the subscription messages waiting (XPUB hands each one up), and cut off
        a peer address whose subscriptions pass MAX_PEER_SUBSCRIPTION_BYTES."""
        # each recv lets libzmq file the next queued subscriptions into its trie: a call
        # reads a bounded number, and none after a refusal (that socket is gone)
        for _ in range(READS_PER_CALL):
            try:
                frame = self._sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            msg = frame.bytes
            if msg[:1] == b"\x01":
                self.subscriptions += 1
            try:
                peer = _ip(frame.get("Peer-Address"))
            except zmq.ZMQError:
                peer = None
            if peer is None:
                continue  # ipc: the socket file's mode decides who connects
            if self.guard.add(peer, msg):
                self._refuse(peer)
                return

    def _refuse(self, peer: str) -> None:
        """Deny `peer` at the ZAP handler and replace the socket, which drops its
        connection (libzmq cannot drop one connection of a bound socket; the others
        reconnect).

        Replaced, not rebound: a rebind keeps the socket, and until ZeroMQ's I/O thread
        has torn the connection down every send or recv on it lets libzmq file another
        batch of that peer's queued subscriptions into its trie (~50 bytes a character;
        under CPU load that was tens of MB). A socket closed with linger 0 terminates its
        connections without reading what they queued, and its trie goes with it."""
        held = self.guard.held(peer)
        # an address that comes back anyway (no ZAP handler) is counted afresh, cut again
        self.guard.forget(peer)
        zap = self._zap
        if zap is not None:
            zap.deny(peer)  # before the new socket binds: its next connection is refused
        log.error("publish: %s holds more than %d bytes of subscriptions (%d; a subscriber "
                  "needs a few dozen): %s, socket replaced (every other subscriber "
                  "reconnects)", peer, MAX_PEER_SUBSCRIPTION_BYTES, held,
                  "refused until SIGHUP or restart" if zap is not None else
                  "disconnected (no ZAP handler here to refuse it)")
        _discard(self._sock, self._bound)
        self.refusals += 1
        self._sock = self._open()

    def wait_for_subscriptions(self, n: int, timeout_s: float) -> int:
        """Block (on the socket's thread) until `n` subscriptions have arrived since the
        start, or `timeout_s`; the count. A subscriber to every camera sends one, a
        subscriber to K cameras K (its subscriptions are in place once counted, so
        nothing sent afterwards is lost to ZeroMQ's slow-joiner gap)."""
        deadline = time.monotonic() + timeout_s
        self._read_subscriptions()
        while self.subscriptions < n and not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._sock.poll(int(min(left, 0.2) * 1000), zmq.POLLIN):
                self._read_subscriptions()
        return self.subscriptions

    def _bind(self, ep: str, retry_s: float = 0.0) -> str:
        deadline = time.monotonic() + retry_s
        path = _ipc_path(ep) if ep.startswith("ipc://") else None
        while True:
            # an ipc socket file is created by bind with the process umask: tightened for
            # that call, so that the file is never, not even briefly, open to others
            old = os.umask(0o177) if path else None
            try:
                self._sock.bind(ep)
                break
            except zmq.ZMQError as e:
                if e.errno != zmq.EADDRINUSE or time.monotonic() >= deadline:
                    raise PublishError(f"cannot bind {ep}: {e.strerror}") from e
                time.sleep(0.02)
            finally:
                if old is not None:
                    os.umask(old)
        if path:
            try:
                if self._ipc_gid is not None:
                    os.chown(path, -1, self._ipc_gid)
                os.chmod(path, self.ipc_mode)
            except OSError as e:
                raise PublishError(f"cannot set the mode/group of {path}: {e.strerror}") from e
        last = self._sock.getsockopt(zmq.LAST_ENDPOINT)
        return last.decode() if isinstance(last, bytes) else ep

    def reload(self) -> list[str]:
        """SIGHUP, on the socket's thread: admit the addresses SubscriptionGuard refused
        again, and re-read the CURVE clients directory. A key that left it rebinds every
        endpoint, so that its connection, admitted at its handshake, is dropped (the
        others reconnect by themselves). What happened, one line each."""
        said = []
        if self._zap is not None and not self._closed:
            lifted = self._zap.lift()
            if lifted:
                said.append(f"subscribers from {', '.join(lifted)} admitted again (refused "
                            f"for their subscriptions)")
        if self.curve is None or self._closed:
            return said
        admitted, removed = self.curve.reload()
        if removed:
            self._rebind()
            said.append(f"{admitted} CURVE client key(s) admitted, {removed} removed: "
                        f"endpoints rebound, every subscriber reconnects and is checked again")
        else:
            said.append(f"{admitted} CURVE client key(s) admitted")
        return said

    def _rebind(self) -> None:
        """Unbind and bind every endpoint again: every connection is dropped, and checked
        by the ZAP handler (if any) when it comes back."""
        for ep, bound in zip(self.endpoints, list(self._bound), strict=True):
            with contextlib.suppress(zmq.ZMQError):
                self._sock.unbind(bound)
            if ep.startswith("ipc://"):
                _remove_stale_ipc(ep)
        # unbind takes effect in ZeroMQ's I/O thread, a moment later: retry the bind
        self._bound = [self._bind(ep, retry_s=2.0) for ep in self.endpoints]

    def close(self) -> None:
        """Close the socket (queued messages get up to `linger_ms` to leave). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._sock.close()
        if self._zap is not None:
            self._zap.stop()
        if self._own_ctx:
            self._ctx.term()  # returns once queued messages are sent or linger_ms passed
        # libzmq 4.3 leaves ipc socket files behind: removed here (and a stale one by the
        # next bind, after a crash)
        for ep in self.endpoints:
            release_ipc(ep)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
