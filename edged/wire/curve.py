"""CURVE on the publish socket: encryption and authentication of subscribers.

ZeroMQ's CURVE (libsodium, bundled with pyzmq) encrypts every connection and lets the
server check each client's public key during the handshake. The daemon holds a key pair
(`publish.curve.secret_key_file`) and admits the clients whose public keys are files in
`publish.curve.clients_dir`, through pyzmq's own ZAP authenticator (`zmq.auth`): an
unknown key gets no connection, hence not a single message.

Key files are ZeroMQ's certificate format (`zmq.auth.create_certificates`):
`NAME.key` holds the public key, `NAME.key_secret` both; `edged keygen NAME` writes them
with safe modes (directory 0700, secret 0600, public 0644).

ZAP runs at the handshake only: a connection that is already up stays up when its key
leaves `clients_dir`. So a reload (SIGHUP) that removes a key rebinds the endpoints,
which drops every connection; the remaining subscribers reconnect on their own (ZeroMQ
does it) and are checked again, the removed one is refused.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from edged.errors import UserError

log = logging.getLogger("edged.wire.curve")


class CurveError(UserError, ValueError):
    """A key file or the clients directory cannot be used; the message says which."""

    prefix = "publish.curve: "


@dataclass(frozen=True, slots=True)
class ServerKeys:
    public: bytes  # Z85, 40 characters
    secret: bytes
    clients_dir: Path


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """What a subscriber needs: the daemon's public key and its own key pair."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_files(cls, server_key_file: str | Path, secret_key_file: str | Path
                   ) -> ClientKeys:
        server, _ = _load(Path(server_key_file), need_secret=False)
        public, secret = _load(Path(secret_key_file), need_secret=True)
        assert secret is not None
        return cls(server, public, secret)

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def _load(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise CurveError(f"CURVE key file {path} does not exist")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise CurveError(f"{path} is not a ZeroMQ certificate ({e}); make one with "
                         f"`edged keygen NAME`") from None
    if need_secret and not secret:
        raise CurveError(f"{path} holds no secret key (a NAME.key file is the public half; "
                         f"the secret one is NAME.key_secret)")
    if need_secret and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("CURVE secret key %s is readable by group or others (mode %o); "
                    "chmod 600 it", path, stat.S_IMODE(path.stat().st_mode))
    return public, secret


def server_keys(secret_key_file: Path, clients_dir: Path) -> ServerKeys:
    public, secret = _load(secret_key_file, need_secret=True)
    assert secret is not None
    if not clients_dir.is_dir():
        raise CurveError(f"publish.curve.clients_dir {clients_dir} is not a directory")
    return ServerKeys(public, secret, clients_dir)


def client_key_files(clients_dir: Path) -> list[Path]:
    """The public keys the daemon admits (what zmq.auth reads: *.key files)."""
    return sorted(p for p in clients_dir.glob("*.key") if p.is_file())


class AddressBans:
    """The ZAP handler of one ZeroMQ context: admits every address but those denied
    (a NULL-mechanism socket must set `zap_domain` before it binds to be asked)."""

    def __init__(self, ctx: zmq.Context) -> None:
        self._auth = ThreadAuthenticator(ctx, log=logging.getLogger("edged.wire.zap"))
        self._auth.start()  # zmq.ZMQError when the context has a ZAP handler already

    def deny(self, address: str) -> None:
        """Refuse every connection from `address` (an IP) until `lift`."""
        self._auth.deny(address)

    def lift(self) -> list[str]:
        """Admit the denied addresses again (SIGHUP); the ones that were denied."""
        # pyzmq has deny() but no undo: its denied set is the one the handler thread reads
        # (a set discard is atomic under the GIL)
        denied = getattr(self._auth, "_denied", None)
        if not isinstance(denied, set):
            raise RuntimeError("this pyzmq's ZAP handler keeps no denied set to clear")
        lifted = sorted(denied)
        for address in lifted:
            denied.discard(address)
        return lifted

    def stop(self) -> None:
        self._auth.stop()


class CurveAuth(AddressBans):
    """The ZAP handler, also admitting only the CURVE keys in `clients_dir`."""

    def __init__(self, ctx: zmq.Context, keys: ServerKeys) -> None:
        super().__init__(ctx)
        self.keys = keys
        self.admitted = self._configure()

    def _configure(self) -> frozenset[bytes]:
        files = client_key_files(self.keys.clients_dir)
        admitted = set()
        for f in files:
            try:
                admitted.add(_load(f, need_secret=False)[0])
            except CurveError as e:
                log.warning("CURVE: %s; that client is not admitted", e)
        self._auth.configure_curve(domain="*", location=str(self.keys.clients_dir))
        if not admitted:
            log.warning("CURVE: no client keys in %s: no subscriber can connect",
                        self.keys.clients_dir)
        return frozenset(admitted)

    def reload(self) -> tuple[int, int]:
        """Re-read `clients_dir`; (keys admitted now, keys no longer admitted)."""
        before = self.admitted
        self.admitted = self._configure()
        return len(self.admitted), len(before - self.admitted)


def keygen(name: str, directory: Path) -> tuple[Path, Path]:
    """Write NAME.key (public, 0644) and NAME.key_secret (0600) into `directory`
    (created 0700 if missing); refuses to overwrite an existing pair."""
    if not name or "/" in name or name.startswith("."):
        raise CurveError(f"key name {name!r}: use letters, digits, '-' or '_'")
    public_file, secret_file = directory / f"{name}.key", directory / f"{name}.key_secret"
    for f in (public_file, secret_file):
        if f.exists():
            raise CurveError(f"{f} exists; remove it first or choose another name")
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
    old = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        pub, sec = zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old)
    os.chmod(sec, 0o600)
    os.chmod(pub, 0o644)
    return Path(pub), Path(sec)
