"""Every output at once, each read by the client its users run: a real Chromium showing
the view, the npm `@foxglove/ws-protocol` client (Lichtblick's library, its default
subprotocol) on Foxglove, a Cyclone DDS reader on the ROS 2 topics with ROS 2's default
profile, and the ZeroMQ subscriber, all on one daemon at the same time. Each must get
its stream while the others read theirs, and the daemon must log no error for it.

Loopback only: DDS is pinned to 127.0.0.1 with multicast off (tests/e2e/test_ros2.py)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from browser import Browser, find_chromium
from configfile import daemon_config, synthetic
from conftest import ZmqCollector, free_port
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from test_ros2 import DEFAULT, domain  # noqa: F401 - `domain` is a fixture
from test_ws_protocol import HERE as WSPROTOCOL
from test_ws_protocol import _node

from edged.outputs.base.ros2msgs import msgs


def _config(tmp_path: Path, view_port: int, fox_port: int, domain_id: int, xml: Path) -> Path:
    return daemon_config(tmp_path, {"front": synthetic(38)}, name="all.yaml",
                         view={"listen": f"127.0.0.1:{view_port}"},
                         foxglove={"listen": f"127.0.0.1:{fox_port}"},
                         ros2={"namespace": "robot", "domain_id": domain_id,
                               "cyclonedds_config": str(xml), "mask_color": True})


def test_every_client_reads_its_output_while_the_others_read_theirs(tmp_path, start_daemon,
                                                                    domain):  # noqa: F811
    import pytest

    if find_chromium() is None:
        pytest.skip("no Chromium (apt-get install chromium)")
    node = _node()
    domain_id, xml, p = domain
    view_port, fox_port = free_port(), free_port()
    zmq = ZmqCollector(f"ipc://{tmp_path}/pub.sock")
    dets = DataReader(p, Topic(p, "rt/robot/front/detections", msgs.Detection2DArray),
                      qos=DEFAULT)
    masks = DataReader(p, Topic(p, "rt/robot/front/mask/compressed", msgs.CompressedImage),
                       qos=DEFAULT)
    d = start_daemon(_config(tmp_path, view_port, fox_port, domain_id, xml))
    d.wait_for("ready", timeout=120)
    browser = Browser(tmp_path / "chromium")
    fox = subprocess.Popen([node, str(WSPROTOCOL / "client.js"), f"ws://127.0.0.1:{fox_port}",
                            "120", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    got_dets: list[msgs.Detection2DArray] = []
    got_masks: list[msgs.CompressedImage] = []
    try:
        browser.navigate(f"http://127.0.0.1:{view_port}/#camera=front")
        browser.wait_until("Number(document.body.dataset.frames) >= 3", timeout=60)
        first_frames = int(browser.evaluate("Number(document.body.dataset.frames)"))
        # everything is read at once until each client has its share (generous ceiling
        # for a loaded machine; the npm client stops by itself at 10 per channel)
        end = time.monotonic() + 120
        while time.monotonic() < end and (fox.poll() is None or len(got_dets) < 10
                                          or len(got_masks) < 10):
            got_dets += dets.take(N=16)
            got_masks += masks.take(N=16)
            time.sleep(0.05)
        out, err = fox.communicate(timeout=60)
        frames = int(browser.evaluate("Number(document.body.dataset.frames)"))
    finally:
        if fox.poll() is None:
            fox.kill()
        browser.close()
    zmq.stop()
    assert d.terminate()[0] == 0
    import json

    summary = json.loads(out.strip().splitlines()[-1])
    assert fox.returncode == 0, (summary.get("errors"), err)
    assert summary["subprotocol"] == "foxglove.websocket.v1"
    for topic, t in summary["topics"].items():
        assert t["errors"] == 0, (topic, t)
    assert summary["topics"]["/front/annotations"]["messages"] >= 10
    # the view kept drawing while the other clients read
    assert frames > first_frames, (first_frames, frames)
    assert len(got_dets) >= 10 and len(got_masks) >= 10
    zmq_stamps = {m.t_capture_ns for m in zmq.msgs}
    dds_stamps = {h.header.stamp.sec * 1_000_000_000 + h.header.stamp.nanosec
                  for h in got_dets}
    # the same frames on DDS as on ZeroMQ (the ZeroMQ subscriber joined first)
    assert dds_stamps and dds_stamps <= zmq_stamps, sorted(dds_stamps - zmq_stamps)[:3]
    assert all(m.format.startswith("mono8; png") for m in got_masks)
    log = d.log()
    assert " ERROR " not in log and "Traceback" not in log, log
