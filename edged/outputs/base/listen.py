"""Listening TCP sockets for the daemon's HTTP endpoints (`log.metrics`, `view.listen`).

Bound synchronously, before READY, so that a port in use ends the start (and fails
`edged check`) with the config key in the message; the endpoint serves on the socket
later.
"""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING

from edged.errors import UserError
from edged.names import parse_host_port

if TYPE_CHECKING:
    from edged.config import TlsConfig


class ListenError(UserError, RuntimeError):
    """An endpoint cannot listen (bad address, port in use, no permission)."""


def bind_tcp(address: str, key: str) -> socket.socket:
    """A listening, non-blocking TCP socket on `address` ("HOST:PORT"), bound now.
    `key` names the config entry in errors (e.g. "log.metrics"). Raises ListenError."""
    try:
        hp = parse_host_port(address)  # the rule the config validated the address with
    except ValueError as e:
        raise ListenError(f"{key} {address!r}: {e}") from None
    try:
        infos = socket.getaddrinfo(hp.host, hp.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ListenError(f"cannot listen on {key} {address}: cannot resolve "
                          f"{hp.host!r} ({e.strerror})") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # as asyncio.start_server does; a port another socket listens on still fails
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(100)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ListenError(f"cannot listen on {key} {address}: {e.strerror or e}") from None
    return sock


def _load_tls(tls: TlsConfig, key: str, ctx: ssl.SSLContext) -> tuple[bytes, bytes]:
    """The PEM certificate and private key of `tls`, loaded into `ctx` (which checks that
    they belong together); ListenError naming `key` ("view.tls") and the file."""
    try:
        cert, key_pem = tls.cert_file.read_bytes(), tls.key_file.read_bytes()
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        return cert, key_pem
    except ssl.SSLError as e:
        raise ListenError(f"{key}: {tls.cert_file} and {tls.key_file} are not a PEM "
                          f"certificate and its private key ({e.reason or e})") from None
    except OSError as e:  # after SSLError, which is one
        where = e.filename or f"{tls.cert_file} / {tls.key_file}"
        raise ListenError(f"{key}: cannot read {where}: {e.strerror or e}") from None


def read_tls(tls: TlsConfig, key: str) -> tuple[bytes, bytes]:
    """The PEM certificate and key of `tls`, checked to belong together, for a server
    that takes them as bytes (foxglove-sdk); ListenError as _load_tls."""
    return _load_tls(tls, key, ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))


def server_context(tls: TlsConfig, key: str) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2 or newer) for `tls`; ListenError as _load_tls."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_tls(tls, key, ctx)
    return ctx
