"""The metrics endpoint binds before it serves; errors become one message, never a traceback."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

import pytest

from edged import cli
from edged.daemon import metrics
from edged.outputs.base.listen import ListenError


def test_bind_reports_a_port_in_use() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(ListenError, match=f"log.metrics 127.0.0.1:{port}: Address already"):
            metrics.bind(f"127.0.0.1:{port}")


@pytest.mark.parametrize(("address", "why"), [("127.0.0.1:0", "explicit port"),
                                              ("127.0.0.1:70000", "out of range")])
def test_bind_uses_the_config_rule(address: str, why: str) -> None:
    with pytest.raises(ListenError, match=why):
        metrics.bind(address)


def test_serve_serves_on_the_socket_bound_before() -> None:
    from edged.telemetry import DaemonSnapshot, InferenceCounters

    sock = metrics.bind(f"127.0.0.1:{_free_port()}")
    host, port = sock.getsockname()[:2]
    address = f"{host}:{port}"
    empty = DaemonSnapshot(uptime_s=1.0, interval_s=1.0, final=False, cameras={},
                           inference=InferenceCounters(0, 0, 0, 0))

    async def scrape() -> str:
        task = asyncio.create_task(metrics.serve(address, lambda: empty, sock=sock))
        # no wait for the server to start: the socket listens already, so the
        # connection waits in its backlog until serve() accepts it
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://{address}/metrics", timeout=60).read())
        task.cancel()
        return body.decode()

    assert "# TYPE edged_processed_fps gauge" in asyncio.run(scrape())
    assert sock.fileno() == -1  # closed with the server
    metrics.bind(address).close()  # free again


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_report_error_unwraps_task_groups(capsys: pytest.CaptureFixture[str]) -> None:
    group = ExceptionGroup("unhandled errors in a TaskGroup",
                           [ListenError("cannot listen on log.metrics 127.0.0.1:1: denied")])
    assert cli.report_error("check", group) == 1
    err = capsys.readouterr().err
    assert err == "edged check: cannot listen on log.metrics 127.0.0.1:1: denied\n"


def test_report_error_names_a_bug_without_a_traceback(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGED_TRACEBACK", raising=False)
    try:
        raise KeyError("x")
    except KeyError as e:
        assert cli.report_error("run", e) == 1
    err = capsys.readouterr().err
    assert "internal error: KeyError: 'x'" in err and "Traceback" not in err


def test_metrics_off_loopback_is_allowed_and_named_exposed() -> None:
    from edged.config import LogConfig

    assert LogConfig(metrics="0.0.0.0:9464").metrics_exposed()
    assert LogConfig(metrics="[::]:9464").metrics_exposed()
    assert not LogConfig(metrics="127.0.0.1:9464").metrics_exposed()
    assert not LogConfig(metrics="[::1]:9464").metrics_exposed()
    assert not LogConfig().metrics_exposed()
