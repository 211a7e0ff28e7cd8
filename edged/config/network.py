"""Addresses in the config, validated once: the host:port of every listening endpoint
(`log.metrics`, `view.listen`, `foxglove.listen`), the publisher's ZeroMQ endpoints, and
whether an address reaches only this machine. The parsers are the runtime's own
(`edged.names`), so what passes here is what the daemon binds."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator

from edged.config.errors import custom_error
from edged.config.fields import ConfigPath, Frozen
from edged.names import parse_endpoint, parse_host_port


def _parsed_by(kind: str, parse: Callable[[str], object]) -> Callable[[str], str]:
    """A validator that accepts what the runtime's own parser (`edged.names`) accepts, so
    what passes here binds or connects there, and reports that parser's message."""
    def check(value: str) -> str:
        try:
            parse(value)
        except ValueError as e:
            raise custom_error(kind, str(e)) from None
        return value
    return check


# `address` if it is HOST:PORT (IPv6 as [ADDR]:PORT); the parser's message if not
check_host_port = _parsed_by("host_port", parse_host_port)

# a listening endpoint's "HOST:PORT"
HostPortAddress = Annotated[str, AfterValidator(check_host_port)]

Endpoint = Annotated[str, AfterValidator(_parsed_by("endpoint", parse_endpoint))]


def is_loopback_host(host: str) -> bool:
    """Whether a listen host reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve to any interface


def host_is_loopback(address: str) -> bool:
    """Whether a validated "HOST:PORT" reaches this machine only."""
    return is_loopback_host(parse_host_port(address).host)


class TlsConfig(Frozen):
    """`view.tls` / `foxglove.tls`: serve https / wss with this certificate, so that the
    view's token and every frame are encrypted off the robot (edged.outputs.base.listen)."""

    cert_file: ConfigPath  # PEM certificate (chain), the server's first
    key_file: ConfigPath  # PEM private key (PKCS#8, `openssl genpkey` writes it so)
