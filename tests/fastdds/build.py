"""Build the Fast DDS subscriber (tests/fastdds/subscriber.cpp + fastddsgen's C++ of the
ROS 2 IDL in tests/fastdds/idl) once per source hash, in a cache directory, so reruns
are fast. Used by tests/e2e/test_fastdds.py and tools/fastdds_bench.py.

    python tests/fastdds/build.py   # prints the binary's path
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IDL = HERE / "idl"
# the messages the subscriber reads; fastddsgen writes the types they use beside them
TOP_LEVEL = ("sensor_msgs/msg/Image_.idl", "sensor_msgs/msg/CompressedImage_.idl",
             "vision_msgs/msg/Detection2DArray_.idl", "vision_msgs/msg/LabelInfo_.idl",
             "diagnostic_msgs/msg/DiagnosticArray_.idl")


class BuildError(RuntimeError):
    pass


def missing_tools() -> str | None:
    """Why the subscriber cannot be built here, or None."""
    for tool in ("fastddsgen", "cmake", "c++"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install libfastrtps-dev fastddsgen cmake g++)"
    if not Path("/usr/include/fastdds/dds/domain/DomainParticipant.hpp").exists() and \
            not list(Path("/usr").glob("*/include/fastdds/dds/domain/DomainParticipant.hpp")):
        return "Fast DDS headers not found (apt-get install libfastrtps-dev)"
    return None


def source_hash() -> str:
    h = hashlib.sha256()
    for p in sorted([*IDL.rglob("*.idl"), HERE / "subscriber.cpp", HERE / "CMakeLists.txt",
                     Path(__file__)]):
        h.update(str(p.relative_to(HERE)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _run(cmd: list[str], cwd: Path) -> None:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n"
                         f"{p.stderr[-3000:]}")


def build(cache: Path | None = None) -> Path:
    """The subscriber binary, built into `cache` (default: $EDGED_FASTDDS_BUILD or
    <tmp>/edged-fastdds) under the source hash unless already there."""
    root = cache or Path(os.environ.get("EDGED_FASTDDS_BUILD")
                         or Path(tempfile.gettempdir()) / "edged-fastdds")
    out = root / source_hash()
    binary = out / "build" / "fastdds_sub"
    if binary.exists():
        return binary
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="building-", dir=root))
    gen = work / "gen"
    gen.mkdir()
    for idl in TOP_LEVEL:
        _run(["fastddsgen", "-replace", "-d", str(gen), "-I", str(IDL), idl], IDL)
    # the generated headers include each other as <pkg>/msg/<Type>.h
    for idl in IDL.rglob("*.idl"):
        header = gen / (idl.stem + ".h")
        if header.exists():
            d = gen / idl.parent.relative_to(IDL)
            d.mkdir(parents=True, exist_ok=True)
            (d / header.name).symlink_to(os.path.relpath(header, d))
    bdir = work / "build"
    jobs = str(max(1, min(2, os.cpu_count() or 1)))
    _run(["cmake", "-S", str(HERE), "-B", str(bdir), f"-DGEN_DIR={gen}",
          "-DCMAKE_BUILD_TYPE=Release"], work)
    _run(["cmake", "--build", str(bdir), "-j", jobs], work)
    try:
        work.rename(out)  # atomic: a concurrent build of the same sources loses the race
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
    return binary


if __name__ == "__main__":
    why = missing_tools()
    if why:
        sys.exit(why)
    print(build())
