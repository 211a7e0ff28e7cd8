"""No secret in any output: the one function that every place rendering a source or a
config value goes through (logs, `edged check`, camera states and `_stats`, metrics,
the view, recordings, error messages).

What it hides, wherever it appears in a text:

- the userinfo of a URL of any scheme (`rtsp://`, `rtmp://`, `srt://`, `http://`, ...):
  `user:password@` becomes `user:***@`, a lone `token@` becomes `***@`;
- the value of every query or fragment parameter whose name looks like a secret (it
  contains pass, pwd, token, secret, auth, credential, session or apikey, or has key,
  sig or signature as a whole part): `?user=viewer&pwd=S3cret` keeps `user=viewer`;
- every value that came from a `${VAR}` substitution in the config (the environment is
  where deployments keep credentials), wherever it ended up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#@\s'\"]*)@")
_PARAM = re.compile(r"(?P<lead>[?&;#])(?P<name>[^=&;#\s'\"]+)=(?P<value>[^&;#\s'\"]*)")
# a name containing one of these, or with "key" / "sig" / "signature" as a whole part
# (api_key, X-Amz-Signature; not keyframe or design)
_SECRET_NAME = re.compile(
    r"pass|pwd|token|secret|auth|credential|session|apikey"
    r"|(?:^|[_.-])(?:key|sig|signature)(?:$|[_.-])", re.IGNORECASE)
# substituted values shorter than this are not hunted for in free text: "1" or "on"
# would turn every number and word into ***
MIN_SECRET_LEN = 4


def _userinfo(m: re.Match[str]) -> str:
    info = m.group("info")
    if not info:
        return m.group(0)
    user, sep, _ = info.partition(":")
    return f"{m.group('scheme')}{user}:{MASK}@" if sep else f"{m.group('scheme')}{MASK}@"


def _param(m: re.Match[str]) -> str:
    if _SECRET_NAME.search(m.group("name")) and m.group("value"):
        return f"{m.group('lead')}{m.group('name')}={MASK}"
    return m.group(0)


class Redactor:
    """Hides credentials in text; `secrets` are the values of ${VAR} substitutions."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # longest first, so a secret that contains another is hidden whole
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= MIN_SECRET_LEN},
                                    key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, MASK)
        text = _USERINFO.sub(_userinfo, text)
        return _PARAM.sub(_param, text)


def redact(text: str) -> str:
    """URL credentials and secret-looking parameters hidden (no ${VAR} values known)."""
    return Redactor()(text)
