"""The floors hold: `python -m edged.tools.layers` finds no import running up one, and no
module or class past its size outside the OVERSIZE list."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edged.tools import layers

ROOT = Path(layers.__file__).resolve().parents[1]


def test_no_import_runs_up_a_floor() -> None:
    assert layers.check(ROOT) == []


def test_command_exits_zero() -> None:
    r = subprocess.run([sys.executable, "-m", "edged.tools.layers"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_upward_edge_is_caught(tmp_path: Path) -> None:
    pkg = tmp_path / "edged"
    (pkg / "wire").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "wire" / "__init__.py").write_text("")
    # a function-level import counts as much as one at the top
    (pkg / "wire" / "x.py").write_text("def f():\n    from edged.daemon import pipeline\n")
    (pkg / "daemon").mkdir()
    (pkg / "daemon" / "__init__.py").write_text("")
    (pkg / "daemon" / "pipeline.py").write_text("")
    out = pkg / "outputs"
    (out / "ros2").mkdir(parents=True)
    (out / "__init__.py").write_text("")
    (out / "ros2" / "__init__.py").write_text("")
    (out / "view").mkdir()
    (out / "view" / "__init__.py").write_text("from edged.outputs.ros2 import sink\n")
    (out / "ros2" / "sink.py").write_text("")
    (pkg / "daemon" / "run.py").write_text("import edged.outputs.view\n")
    found = {(a, b) for a, b, _ in layers.violations(pkg)}
    assert ("edged.wire.x", "edged.daemon.pipeline") in found
    assert ("edged.outputs.view", "edged.outputs.ros2.sink") in found  # two outputs
    assert ("edged.daemon.run", "edged.outputs.view") in found  # the daemon names an output
    (pkg / "newthing.py").write_text("")
    assert ("edged.newthing", "") in {(a, b) for a, b, _ in layers.violations(pkg)}


def test_an_output_and_its_section_are_placed_by_their_folder(tmp_path: Path) -> None:
    pkg = tmp_path / "edged"
    for folder in ("config", "daemon", "outputs", "outputs/base", "outputs/lidar"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    # a new output: its package and settings, placed without a line in FLOORS
    (pkg / "outputs" / "lidar" / "settings.py").write_text("from edged.config import fields\n")
    (pkg / "outputs" / "lidar" / "__init__.py").write_text(
        "from edged.outputs.lidar.settings import LidarConfig\n"
        "from edged.outputs.base import sink\n")
    (pkg / "outputs" / "base" / "sink.py").write_text("")
    (pkg / "config" / "fields.py").write_text("")
    # the config names no output's section (it is handed them), nor does the daemon
    (pkg / "config" / "loader.py").write_text("from edged.outputs.lidar import settings\n")
    (pkg / "daemon" / "run.py").write_text("import edged.outputs.lidar.settings\n")
    assert layers.place("edged.outputs.lidar") == layers.place("edged.outputs.lidar.sink")
    assert layers.place("edged.outputs.lidar.settings").name == "output settings"
    assert layers.place("edged.outputs.base.sink").room == "base"
    found = {(a, b): why for a, b, why in layers.violations(pkg)}
    assert found == {
        ("edged.config.loader", "edged.outputs.lidar.settings"):
            "config imports output settings, a floor up",
        ("edged.daemon.run", "edged.outputs.lidar.settings"):
            "daemon names an output (settings); only outputs and top may"}


def test_an_oversize_module_or_class_is_caught(tmp_path: Path) -> None:
    pkg = tmp_path / "edged"
    (pkg / "wire").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "wire" / "__init__.py").write_text("")
    body = "    x = 1\n"
    # a class of exactly the limit passes, one line more does not; nested ones count too
    (pkg / "wire" / "ok.py").write_text(
        "class Fits:\n" + body * (layers.MAX_CLASS_LINES - 1))
    (pkg / "wire" / "big.py").write_text(
        "class Big:\n" + body * layers.MAX_CLASS_LINES
        + "def f():\n    class Inner:\n" + "        x = 1\n" * layers.MAX_CLASS_LINES)
    (pkg / "wire" / "long.py").write_text("x = 1\n" * (layers.MAX_MODULE_LINES + 1))
    (pkg / "wire" / "fits.py").write_text("x = 1\n" * layers.MAX_MODULE_LINES)
    big = layers.oversize(pkg)
    assert set(big) == {"edged.wire.big.Big", "edged.wire.big.f.Inner", "edged.wire.long"}
    assert big["edged.wire.big.Big"] == (
        f"edged/wire/big.py:1: class of {layers.MAX_CLASS_LINES + 1} lines, over "
        f"{layers.MAX_CLASS_LINES}")
    assert big["edged.wire.long"] == (
        f"edged/wire/long.py: module of {layers.MAX_MODULE_LINES + 1} lines, over "
        f"{layers.MAX_MODULE_LINES}")
    errors = layers.check(pkg, allowed=set(), oversize_allowed={"edged.wire.long", "edged.gone"})
    assert sorted(errors) == [
        "edged.gone: in OVERSIZE but within its limit (or gone); remove the entry",
        f"edged.wire.big.Big: {big['edged.wire.big.Big']}: split it by job",
        f"edged.wire.big.f.Inner: {big['edged.wire.big.f.Inner']}: split it by job",
    ]

