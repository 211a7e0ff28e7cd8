"""Issue 29, a fresh run of the same kinds of attack: what still broke, one test each
(named for it), through the real command where the user meets it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_daemon import write_config
from test_hostile import GOOD_MANIFEST, edged, one_user_error
from test_reload import cams


@pytest.fixture
def manifest_model(tmp_path: Path, test_model: Path) -> Path:
    model = tmp_path / "m.onnx"
    shutil.copyfile(test_model, model)
    return model


def test_config_with_100000_top_level_keys_is_refused_without_a_hang(tmp_path, test_model):
    """Each key used to scan every line recorded so far (to forget values merged in by
    '<<'): quadratic, so a 1 MB file of short keys ran for many minutes."""
    cfg = write_config(tmp_path / "cfg.yaml", test_model, ["tcp://127.0.0.1:1"], cams(a=10))
    with open(cfg, "a") as f:
        f.write("".join(f"k{i}: 1\n" for i in range(100_000)))
    assert cfg.stat().st_size < 1 << 20
    res = edged("check", "-c", str(cfg), timeout=90)
    assert res.returncode == 1, res
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    assert "more than 100000 values" in res.stderr, res.stderr[-2000:]


def test_config_named_pipe_without_a_writer_is_empty_not_a_hang(tmp_path):
    """open() on a FIFO blocks until a writer comes; `edged check -c fifo` waited forever."""
    fifo = tmp_path / "cfg.yaml"
    os.mkfifo(fifo)
    res = edged("check", "-c", str(fifo), timeout=60)
    assert res.returncode == 1, res
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    assert f"{fifo}: the config file is empty" in res.stderr, res.stderr


def test_config_from_a_pipe_with_a_writer_still_loads(tmp_path, test_model):
    """`-c <(generate)`: the pipe's writer is there, the whole document is read."""
    import subprocess
    import sys

    cfg = write_config(tmp_path / "cfg.yaml", test_model, ["tcp://127.0.0.1:1"], cams(a=10))
    code = ("import sys, time; from edged.config import load_config; "
            "c = load_config(sys.argv[1]); print(sorted(c.cameras))")
    with subprocess.Popen(["sh", "-c", f"sleep 1; cat {cfg}"], stdout=subprocess.PIPE) as p:
        assert p.stdout is not None
        fd = p.stdout.fileno()
        res = subprocess.run([sys.executable, "-c", code, f"/dev/fd/{fd}"], pass_fds=(fd,),
                             capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "['a']", res


@pytest.mark.parametrize("number", ["9" * 5000, "0x" + "f" * 5000])
def test_config_number_of_5000_digits_is_a_located_error(tmp_path, test_model, number):
    """Python refuses int<->str of over 4300 digits: the YAML int gave `internal error:
    ValueError` (decimal while reading, hex while showing the value)."""
    cfg = write_config(tmp_path / "cfg.yaml", test_model, ["tcp://127.0.0.1:1"],
                       f"  a:\n    source: synthetic\n    width: {number}\n")
    res = edged("check", "-c", str(cfg), timeout=120)
    assert res.returncode == 1, res
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    assert f"{cfg}:8: cameras.a.width:" in res.stderr, res.stderr


def test_manifest_number_of_5000_digits_is_a_manifest_error(tmp_path, manifest_model):
    mpath = manifest_model.with_suffix(".json")
    text = json.dumps(GOOD_MANIFEST | {"conf_threshold": 0.5})
    mpath.write_text(text.replace('"conf_threshold": 0.5', '"conf_threshold": ' + "9" * 5000))
    cfg = write_config(tmp_path / "cfg.yaml", manifest_model, ["tcp://127.0.0.1:1"], cams(a=10))
    res = edged("check", "-c", str(cfg), timeout=120)
    one_user_error(res, "check", str(mpath), "not valid JSON")


@pytest.mark.parametrize(("args", "needles"), [
    # ran for days (a hang to the user)
    (("inspect", "m.onnx", "--runs", "99999999999999999999"), ("--runs",)),
    (("bench", "--runs", "99999999999999999999"), ("--runs",)),
    (("quantize", "m.onnx", "-o", "q.onnx", "--runs", "10000000000"), ("--runs",)),
    # internal error: MemoryError
    (("eval", "--model", "m.onnx", "--scenes", "999999999999"), ("--scenes",)),
    # ~1 MB per calibration frame held at once: the machine's memory
    (("quantize", "m.onnx", "-o", "q.onnx", "--count", "99999999999"), ("--count",)),
    (("quantize", "m.onnx", "-o", "q.onnx", "--holdout", "99999999999"), ("--holdout",)),
])
def test_commands_bound_repeated_work_and_held_frames(tmp_path, args, needles):
    res = edged(*args, timeout=60, cwd=tmp_path, memory_gb=4)
    one_user_error(res, args[0], *needles)


def test_view_malformed_http_request_is_one_warning_line_not_an_error_traceback(
        tmp_path, test_model, tcp_endpoint, start_daemon):
    """aiohttp logged each malformed request (a 100 KB header, 1000 headers) as ERROR with
    a traceback: any local process could fill the journal with them."""
    import socket
    import time

    from conftest import free_port

    port = free_port()
    cfg = write_config(tmp_path / "cfg.yaml", test_model, [tcp_endpoint], cams(a=5),
                       extra=f"view:\n  listen: 127.0.0.1:{port}\n")
    d = start_daemon(cfg)
    d.wait_for("ready")
    for data in (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
                 b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 1000 + b"\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(data)
            assert s.recv(40).startswith(b"HTTP/1.0 400"), data[:40]
    end = time.monotonic() + 60
    while time.monotonic() < end and d.log().count("Error handling request") < 2:
        time.sleep(0.2)
    log = d.log()
    assert log.count("Error handling request") == 2, log
    assert "Traceback" not in log and "ERROR" not in log, log
    assert "400 Too many headers received" in log, log


@pytest.mark.parametrize("text", [
    "Invalid message from 127.0.0.1:39762: key must be a string at line 1 column 2",
    "Invalid message from 127.0.0.1:39772: Unknown binary opcode 146",
    "Error receiving from client 127.0.0.1:39806: Space limit exceeded: Message too long: "
    "4611686018427387904 > 16777216",
    "Error receiving from client 127.0.0.1:39810: WebSocket protocol error: Received an "
    "unmasked frame from client",
])
def test_foxglove_garbage_from_a_client_is_a_warning_not_an_error(text):
    """A Foxglove client sending garbage (seen live: text that is not JSON, an unknown
    opcode, a 2^62-byte length, an unmasked frame) gave an ERROR per message from the SDK."""
    import logging

    from edged.outputs.foxglove.sink import quiet_sdk_logging

    quiet_sdk_logging()
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    name = "foxglove.websocket.connected_client"
    logger = logging.getLogger(name)
    keep = Keep()
    logger.addHandler(keep)
    try:
        logger.error(text)
    finally:
        logger.removeHandler(keep)
    assert [(r.levelname, r.getMessage()) for r in seen] == [("WARNING", text)]
