"""`main` alone turns a command's errors into lines on stderr and an exit code."""

from __future__ import annotations

import pytest

from edged.cli import main
from edged.cli.report import report_error
from edged.errors import UsageError, UserError


def test_echo_with_one_curve_key_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str],
                                                        tmp_path) -> None:
    code = main(["echo", "--connect", "tcp://127.0.0.1:5599", "--server-key",
                 str(tmp_path / "server.key"), "--timeout", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == ("edged echo: CURVE needs both --server-key (the daemon's NAME.key) and "
                   "--key (this subscriber's NAME.key_secret)\n")


def test_a_bad_connect_endpoint_names_the_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["echo", "--connect", "tcp://127.0.0.1:0", "--timeout", "1"]) == 1
    assert capsys.readouterr().err == (
        "edged echo: --connect 'tcp://127.0.0.1:0': give an explicit port (1-65535); an "
        "OS-chosen port cannot be known by the other side\n")


def test_several_errors_give_one_line_each_and_the_highest_exit_code(
        capsys: pytest.CaptureFixture[str]) -> None:
    group = ExceptionGroup("x", [UserError("the model is gone"), UsageError("--a needs --b"),
                                 UserError("the model is gone")])
    assert report_error("check", group) == 2
    assert capsys.readouterr().err == ("edged check: the model is gone\n"
                                       "edged check: --a needs --b\n")
    assert report_error("check", RuntimeError("boom")) == 1
    assert "edged check: internal error: RuntimeError: boom" in capsys.readouterr().err


def test_check_reports_the_model_and_a_busy_port_together(
        capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(f"model:\n  path: nope.onnx\ncameras:\n  a:\n    source: synthetic\n"
                       f"publish:\n  endpoints: [tcp://127.0.0.1:{port}]\n")
        code = main(["check", "-c", str(cfg)])
    lines = capsys.readouterr().err.splitlines()
    assert code == 1
    assert len(lines) == 2, lines
    assert lines[0] == f"edged check: model file not found: {tmp_path / 'nope.onnx'}"
    assert lines[1].startswith("edged check: ") and f"127.0.0.1:{port}" in lines[1]
