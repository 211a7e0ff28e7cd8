"""Listening TCP sockets for the daemon's HTTP endpoints (`log.metrics`, `view.listen`).

Bound synchronously, before READY, so that a port in use ends the start (and fails
`edged check`) with the config key in the message; the endpoint serves on the socket
later.
"""

from __future__ import annotations

import socket

from edged.names import parse_host_port


class ListenError(RuntimeError):
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
