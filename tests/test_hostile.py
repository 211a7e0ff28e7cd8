"""Issue 29, "Nothing silent, nothing lost": what a hostile or unlucky user broke, one
test per numbered case (named for it), each through the real command or daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def edged(*args: str, timeout: float = 120, cwd: Path | None = None
          ) -> subprocess.CompletedProcess[str]:
    """`edged ARGS` as a user runs it: its exit code, stdout and stderr."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("EDGED_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


def one_user_error(res: subprocess.CompletedProcess[str], command: str, *needles: str) -> str:
    """The command failed (non-zero) with one line on stderr naming the problem, neither
    'internal error' nor a traceback nor OpenCV's own assertion text."""
    err = res.stderr
    assert res.returncode != 0, (res.returncode, res.stdout, err)
    assert "internal error" not in err and "Traceback" not in err, err
    assert "OpenCV" not in err and "Assertion" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    # argparse adds its usage lines before the one error line
    errors = [ln for ln in lines if ln.startswith(f"edged {command}")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], (needle, err)
    return errors[0]


# --------------------------------------------------------------------------- case 7


@pytest.mark.parametrize(("args", "needles"), [
    (("echo", "--connect", "bogus://x", "--timeout", "1"), ("--connect", "bogus://x")),
    (("echo", "--camera", "a/b", "--timeout", "1"), ("--camera", "a/b")),
    (("echo", "--count", "0"), ("--count",)),
    (("echo", "--timeout", "-1"), ("--timeout",)),
    (("replay", "--speed", "nan", "x.mcap"), ("--speed", "nan")),
    (("replay", "--speed", "0", "x.mcap"), ("--speed",)),
    (("record", "--duration", "-1"), ("--duration", "-1")),
    (("record", "--frames", "0"), ("--frames",)),
    (("run", "--duration", "inf"), ("--duration", "inf")),
    (("synth-video", "/proc/edged-test/x.avi", "--frames", "2"), ("/proc/edged-test/x.avi",)),
    (("synth-video", "out.mp4", "--frames", "2"), ("out.mp4", ".avi")),
    (("synth-video", "out.avi", "--width", "100000"), ("--width",)),
    (("eval", "--model", "m.onnx", "--conf", "nan"), ("--conf",)),
])
def test_case7_commands_validate_their_arguments(tmp_path, args, needles):
    res = edged(*args, timeout=60, cwd=tmp_path)
    one_user_error(res, args[0], *needles)
    assert not (tmp_path / "out.mp4").exists()
