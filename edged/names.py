"""Names and addresses, defined once: camera names, ZeroMQ bind endpoints, host:port.

The config (`edged.config`) validates with these functions and the runtime (codec,
publisher, metrics endpoint) uses the very same ones, so a value the config accepts is
one the daemon can use. Standard library only: the config imports this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["CAMERA_NAME_RE", "ENDPOINT_SCHEMES", "IPC_PATH_MAX", "Endpoint", "HostPort",
           "camera_name_problem", "parse_endpoint", "parse_host_port"]

# docs/protocol.md: ASCII, no "/", 1-64 characters; a leading "_" is reserved for
# daemon-wide topics such as "_stats", so no camera may start with it.
CAMERA_NAME_RE: Final = re.compile(r"^[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}$")

ENDPOINT_SCHEMES: Final = ("tcp", "ipc", "inproc")
# sun_path of a Unix socket holds 108 bytes on Linux, the terminating NUL included
IPC_PATH_MAX: Final = 107
PORT_MIN: Final = 1
PORT_MAX: Final = 65535

_HOSTNAME_RE: Final = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")
_IPV6_RE: Final = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$")


def camera_name_problem(name: object) -> str | None:
    """Why `name` cannot be a camera name (it becomes the ZeroMQ topic), or None."""
    if not isinstance(name, str) or CAMERA_NAME_RE.fullmatch(name) is None:
        return ("invalid camera name: use 1-64 letters, digits, '_', '.' or '-', not "
                "starting with '_' (the name becomes the ZeroMQ topic)")
    return None


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str  # without the brackets of an IPv6 address; "*" for every interface
    port: int


def _port(text: str) -> int:
    if not text:
        raise ValueError("the port is missing: write HOST:PORT, e.g. 127.0.0.1:5555")
    if text == "*" or text == "0":
        # subscribers / scrapers could not know a port the OS chose
        raise ValueError("give an explicit port (1-65535); an OS-chosen port "
                         "cannot be known by the other side")
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"the port {text!r} is not a number")
    port = int(text)
    if not PORT_MIN <= port <= PORT_MAX:
        raise ValueError(f"the port {port} is out of range ({PORT_MIN}-{PORT_MAX})")
    return port


def parse_host_port(address: str, *, wildcard: bool = False) -> HostPort:
    """HOST:PORT (IPv6 as [ADDR]:PORT) -> HostPort; ValueError saying what is wrong.

    `wildcard`: HOST may be "*" (ZeroMQ's every interface)."""
    if not isinstance(address, str) or not address:
        raise ValueError("the address is empty: write HOST:PORT, e.g. 127.0.0.1:9464")
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep or not _IPV6_RE.fullmatch(host) or ":" not in host:
            raise ValueError("an IPv6 address is written [ADDRESS]:PORT, e.g. [::1]:9464")
        if not rest.startswith(":"):
            raise ValueError("the port is missing: write [ADDRESS]:PORT, e.g. [::1]:9464")
        return HostPort(host, _port(rest[1:]))
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError("the port is missing: write HOST:PORT, e.g. 127.0.0.1:9464")
    if ":" in host:
        raise ValueError("write an IPv6 address in brackets: [ADDRESS]:PORT")
    if not host:
        raise ValueError("the host is missing: write HOST:PORT, e.g. 127.0.0.1:9464")
    if not (wildcard and host == "*") and not _HOSTNAME_RE.fullmatch(host):
        raise ValueError(f"the host {host!r} is not an IP address, host or interface name")
    return HostPort(host, _port(port))


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str  # "tcp", "ipc" or "inproc"
    address: str  # what follows "://"
    tcp: HostPort | None = None  # tcp only


def parse_endpoint(endpoint: str) -> Endpoint:
    """A ZeroMQ endpoint the publisher can bind -> Endpoint; ValueError saying why not.

    tcp://HOST:PORT (HOST an address, interface name or "*"; PORT 1-65535, never
    OS-chosen), ipc://PATH (at most 107 bytes; @NAME for the abstract namespace) or
    inproc://NAME.
    """
    if not isinstance(endpoint, str):
        raise ValueError("an endpoint must be a string such as tcp://127.0.0.1:5555")
    scheme, sep, address = endpoint.partition("://")
    if not sep or scheme not in ENDPOINT_SCHEMES:
        raise ValueError("a ZeroMQ endpoint must start with tcp://, ipc:// or inproc://")
    if not address:
        raise ValueError(f"the {scheme}:// endpoint has no address")
    if any(ch.isspace() for ch in address):
        raise ValueError(f"the {scheme}:// address contains white space")
    if scheme == "tcp":
        return Endpoint(scheme, address, parse_host_port(address, wildcard=True))
    if scheme == "ipc" and len(address.encode()) > IPC_PATH_MAX:
        raise ValueError(f"the ipc path is {len(address.encode())} bytes long; a Unix "
                         f"socket path has at most {IPC_PATH_MAX}")
    return Endpoint(scheme, address)
