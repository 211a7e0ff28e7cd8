"""The shipped systemd units, rated by systemd's own `systemd-analyze security` (offline:
no running systemd needed) and checked for what the daemon needs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"

if shutil.which("systemd-analyze") is None and os.environ.get("EDGED_REQUIRE_SYSTEMD") != "1":
    pytest.skip("systemd-analyze not installed", allow_module_level=True)


def exposure(unit: Path) -> float:
    p = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout + p.stderr)
    assert m, p.stdout + p.stderr
    return float(m.group(1))


@pytest.mark.parametrize("name", ["edged.service", "edged@.service"])
def test_units_are_rated_at_most_2_5(name: str) -> None:
    assert exposure(UNITS / name) <= 2.5


def settings(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


@pytest.mark.parametrize("name", ["edged.service", "edged@.service"])
def test_units_keep_what_the_daemon_needs(name: str) -> None:
    s = settings(UNITS / name)
    assert s["CapabilityBoundingSet"] == [""] and s["UMask"] == ["0027"]
    families = s["RestrictAddressFamilies"][0].split()
    # tcp and ipc endpoints, sd_notify, interface enumeration (ZeroMQ, Cyclone DDS)
    assert {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"} <= set(families)
    assert s["SystemCallFilter"] == ["@system-service", "~@privileged"]
    assert s["SystemCallErrorNumber"] == ["EPERM"]  # a refused call is an error, not a kill
    # cameras and GPUs stay reachable: no PrivateDevices / PrivateUsers, the groups kept
    assert "PrivateDevices" not in s and "PrivateUsers" not in s
    assert s["SupplementaryGroups"] == ["video render"]
    assert "char-video4linux rw" in s["DeviceAllow"]
    # CUDA's and OpenVINO's JIT need writable-executable memory
    assert "MemoryDenyWriteExecute" not in s
    assert s["ProtectProc"] == ["invisible"] and "ProcSubset" not in s  # /proc/cpuinfo
