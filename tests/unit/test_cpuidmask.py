"""tools/cpuidmask: a program run under it sees an x86 CPU without AVX-512/VNNI/AMX, so
onnxruntime runs the AVX2 kernels natively (the benchmarks of the x86-avx2 class use it).

What must hold for its figures to mean anything: edged's own CPUID probe sees the masked
class; onnxruntime's kernels really change (the 8-bit demo variant, whose products clip
in 16 bits without VNNI, computes different masks; the 7-bit one the same); the daemon
picks the variant for the masked class; and faults that are not a CPUID still reach the
program's own handler. The integers equal those of `qemu-x86_64 -cpu Haswell` (the
test that compares them runs qemu, which CI installs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_cpu import EMULATED_MASKS, QEMU_ENV

from edged.inference.cpu import detect, int8_numerics

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "tools" / "cpuidmask" / "cpuidmask.c"
CPUINFO = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
FAULTING = " cpuid_fault" in CPUINFO and shutil.which("gcc") is not None

pytestmark = pytest.mark.skipif(
    not FAULTING, reason="no CPUID faulting on this CPU/kernel (cpuid_fault) or no gcc")

CLASS = ("from edged.inference.cpu import detect; c = detect(); "
         "print(c.int8_class, ' '.join(c.features))")


@pytest.fixture(scope="module")
def preload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lib = tmp_path_factory.mktemp("cpuidmask") / "cpuidmask.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-o",
                    str(lib), str(SOURCE), "-ldl"], check=True, timeout=120)
    return lib


def masked(preload: Path, mode: str, *args: str, timeout: float = 300
           ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CPUIDMASK": mode, "LD_PRELOAD": str(preload)}
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)


def test_the_masked_cpu_is_classed_by_what_cpuid_then_says(preload: Path) -> None:
    here = detect()
    if "avx2" not in here.features:
        pytest.skip("this CPU has no AVX2")
    p = masked(preload, "avx2", sys.executable, "-c", CLASS)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["x86-avx2", "avx2"], p.stdout
    if "avx512bw" in here.features:
        p = masked(preload, "avx512", sys.executable, "-c", CLASS)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == ["x86-avx512", "avx2", "avx512f", "avx512bw"], p.stdout


def test_an_unknown_mode_is_refused_by_name(preload: Path) -> None:
    p = masked(preload, "avx9", sys.executable, "-c", "print('ran')")
    assert p.returncode == 2 and "ran" not in p.stdout
    assert "CPUIDMASK=avx9: expected avx2 or avx512" in p.stderr


def test_onnxruntime_runs_the_avx2_kernels_under_the_mask(preload: Path, tmp_path: Path
                                                          ) -> None:
    """The 8-bit variant's products clip in 16 bits on AVX2 kernels, so its masks change
    under the mask; the 7-bit variant's cannot clip, so its masks stay bit-identical."""
    import numpy as np

    from edged.config import builtin_variant

    if int8_numerics(detect().int8_class) == "saturating":
        pytest.skip("this CPU runs the saturating kernels already")
    seven, eight = builtin_variant("yoeo-demo", "x86-avx2"), builtin_variant("yoeo-demo",
                                                                            "x86-vnni")
    assert (seven.name, eight.name) == ("yoeo-demo-int8-avx2.onnx", "yoeo-demo-int8.onnx")
    script = tmp_path / "masks.py"
    script.write_text(EMULATED_MASKS)  # masks of 4 scenes per model file
    native, avx2 = tmp_path / "native.npz", tmp_path / "avx2.npz"
    p = subprocess.run([sys.executable, str(script), str(native), str(seven), str(eight)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr
    p = masked(preload, "avx2", sys.executable, str(script), str(avx2), str(seven), str(eight))
    assert p.returncode == 0, p.stderr
    a, b = np.load(native), np.load(avx2)
    assert a["0"].shape == b["0"].shape == (4, 312, 416)  # model cells, padding cropped
    assert float((a["0"] == b["0"]).mean()) == 1.0
    changed = float((a["1"] != b["1"]).mean())
    assert changed > 1e-4, changed  # measured: 0.16% of pixels
    if "avx512bw" not in detect().features:
        return
    # AVX-512 without VNNI (x86-avx512) shares the AVX2 validation: its kernels add the
    # same pairs of products in 16 bits, so both variants give the AVX2 masks exactly
    avx512 = tmp_path / "avx512.npz"
    p = masked(preload, "avx512", sys.executable, str(script), str(avx512), str(seven),
               str(eight))
    assert p.returncode == 0, p.stderr
    c = np.load(avx512)
    assert bool((c["0"] == a["0"]).all()) and bool((c["1"] == b["1"]).all())


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None
                    and not os.environ.get("EDGED_REQUIRE_QEMU"),
                    reason="qemu-user (qemu-x86_64) is not installed (CI installs it)")
def test_the_mask_computes_the_integers_of_an_emulated_haswell(preload: Path,
                                                               tmp_path: Path) -> None:
    """What makes the mask's accuracy figures those of an AVX2 CPU: the saturating 8-bit
    variant gives exactly the masks qemu's Haswell gives (instructions and CPUID both
    emulated there)."""
    import numpy as np

    from edged.config import builtin_variant

    eight = builtin_variant("yoeo-demo", "x86-vnni")
    script = tmp_path / "masks.py"
    script.write_text(EMULATED_MASKS)  # masks of 4 scenes per model file
    emulated, avx2 = tmp_path / "emulated.npz", tmp_path / "avx2.npz"
    p = subprocess.run([shutil.which("qemu-x86_64") or "qemu-x86_64", "-cpu", "Haswell",
                        sys.executable, str(script), str(emulated), str(eight)],
                       capture_output=True, text=True, timeout=600, cwd=REPO, env=QEMU_ENV)
    assert p.returncode == 0, p.stderr[-2000:]
    p = masked(preload, "avx2", sys.executable, str(script), str(avx2), str(eight))
    assert p.returncode == 0, p.stderr
    a, b = np.load(emulated), np.load(avx2)
    assert a["0"].shape == b["0"].shape
    assert bool((a["0"] == b["0"]).all())


def test_edged_check_under_the_mask_picks_the_avx2_variant(preload: Path) -> None:
    if "avx2" not in detect().features:
        pytest.skip("this CPU has no AVX2")
    p = masked(preload, "avx2", sys.executable, "-m", "edged", "check")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "int8 class x86-avx2" in p.stdout
    assert "models/yoeo-demo-int8-avx2.onnx: OK" in p.stdout


def test_other_faults_still_reach_the_programs_own_handler(preload: Path) -> None:
    """Python's faulthandler installs its SIGSEGV handler after the library's: it is kept
    aside and called for a fault that is not a CPUID, which then ends the process."""
    p = masked(preload, "avx2", sys.executable, "-X", "faulthandler", "-c",
               "import ctypes; print('before', flush=True); ctypes.string_at(0)")
    assert p.stdout == "before\n"
    assert p.returncode == -11, (p.returncode, p.stderr)
    assert "Fatal Python error: Segmentation fault" in p.stderr
    assert "string_at" in p.stderr  # the traceback faulthandler wrote


def test_edged_quantize_on_an_avx2_cpu_searches_the_7_bit_candidates_itself(
        preload: Path, tmp_path: Path) -> None:
    """No --for-class: on the masked CPU `edged quantize` finds x86-avx2 itself, adds the
    7-bit (U8S7) and unsigned-weight (U8U8) twins of each U8S8 candidate, and records
    the class it validated on in the manifest."""
    import json

    if "avx2" not in detect().features:
        pytest.skip("this CPU has no AVX2")
    out = tmp_path / "q.onnx"
    p = masked(preload, "avx2", sys.executable, "-m", "edged", "quantize",
               str(REPO / "models" / "yoeo-demo-fp32.onnx"), "-o", str(out), "--search",
               "quick", "--count", "8", "--holdout", "4", "--runs", "2", "--min-agreement",
               "0", "--max-miou-drop", "1", "--min-det-agreement", "0", timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = [line.split() for line in p.stdout.splitlines() if line.startswith("int8 #")]
    pairs = {r[3] if r[2] == "*" else r[2] for r in rows}
    assert {"U8S8", "S8S8", "U8S7", "U8U8"} <= pairs, p.stdout
    q = json.loads(out.with_suffix(".json").read_text())["quantization"]
    assert q["validated_on"]["int8_class"] == "x86-avx2"
    assert q["validated_on"]["features"] == ["avx2"]
