"""`edged keygen`: a CURVE key pair."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    k = sub.add_parser("keygen", help="write a CURVE key pair (NAME.key, NAME.key_secret)")
    k.add_argument("name")
    k.add_argument("--dir", default=".", help="where to write them (created 0700)")
    k.set_defaults(func=cmd_keygen)


def cmd_keygen(args: argparse.Namespace) -> int:
    from edged.wire.curve import keygen

    public, secret = keygen(args.name, Path(args.dir))
    print(f"wrote {public} (public: give it to the other side) and {secret} (secret, mode "
          f"600: keep it here)")
    return 0
