"""CPU class detection for int8, and the warning for an int8 model validated on another
class (it must name both classes and the remedy, in `check` and at start)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_daemon import run_cli

from edged.inference.cpu import (
    cpuid_features,
    detect,
    hwcap_features,
    int8_mismatch,
    int8_numerics,
    parse,
)

REPO = Path(__file__).resolve().parents[2]
AVX2_ONLY = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c avx2 fma bmi2
"""
VNNI = AVX2_ONLY.replace("avx2 fma", "avx2 fma avx512f avx512bw avx512_vnni")
AVX_VNNI = AVX2_ONLY.replace("avx2 fma", "avx2 fma avx_vnni")  # e.g. Alder Lake
AMX = VNNI.replace("avx512_vnni", "avx512_vnni amx_tile amx_int8")
ARM = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp
CPU implementer\t: 0x41
"""


def test_the_int8_class_of_each_cpu_kind():
    assert parse(AVX2_ONLY, "x86_64").int8_class == "x86-avx2"
    assert parse(VNNI, "x86_64").int8_class == "x86-vnni"
    assert parse(AVX_VNNI, "x86_64").int8_class == "x86-vnni"
    assert parse(AMX, "x86_64").int8_class == "x86-amx"
    assert parse(VNNI.replace(" avx512_vnni", ""), "x86_64").int8_class == "x86-avx512"
    assert parse(ARM, "aarch64").int8_class == "arm-dotprod"
    assert parse(ARM.replace("asimddp", "asimddp i8mm"), "aarch64").int8_class == "arm-i8mm"
    c = parse(AVX2_ONLY, "x86_64")
    assert c.model == "AMD EPYC 7B12" and c.features == ("avx2",)
    assert c.describe() == "AMD EPYC 7B12 (x86_64): avx2; int8 class x86-avx2"


def test_detect_reads_this_machine():
    c = detect()
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.lower().startswith(("flags", "features")):
            flags = set(line.split(":", 1)[1].split())
            break
    assert set(c.features) <= flags and all(f in flags for f in c.features)
    if c.machine == "x86_64":
        # a feature counts where /proc/cpuinfo and CPUID agree (under tools/cpuidmask,
        # or an emulator, CPUID reports less than the host's flags)
        asked = cpuid_features()
        said = flags if asked is None else flags & asked
        assert ("avx512_vnni" in said or "avx_vnni" in said) == \
            (c.int8_class in ("x86-vnni", "x86-amx"))


def test_an_int8_model_validated_elsewhere_is_warned_about(tmp_path):
    here = detect()
    # a class whose kernels compute other integers than this machine's
    other = "x86-avx2" if int8_numerics(here.int8_class) != "saturating" else "x86-vnni"
    q = {"validated_on": {"int8_class": other}}
    msg = int8_mismatch(q, here, "m-int8")
    assert msg is not None and f"validated on a CPU of int8 class {other};" in msg
    assert f"this one is {here.int8_class}" in msg and "edged quantize" in msg
    assert int8_mismatch({"validated_on": {"int8_class": here.int8_class}}, here, "m") is None
    assert int8_mismatch({}, here, "m") is None  # fp32, or a record from before the field
    # end to end: a copy of the shipped int8 model whose record names the other class
    model = tmp_path / "demo-int8.onnx"
    shutil.copy(REPO / "models" / "yoeo-demo-int8.onnx", model)
    manifest = json.loads((REPO / "models" / "yoeo-demo-int8.json").read_text())
    manifest["quantization"]["validated_on"]["int8_class"] = other
    (tmp_path / "demo-int8.json").write_text(json.dumps(manifest))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model:\n  path: {model}\n  threads: 1\n  warmup_runs: 1\ncameras:\n"
                   f"  a:\n    source: synthetic\npublish:\n  endpoints: [ipc://{tmp_path}/p]\n")
    p = run_cli("check", "-c", str(cfg))
    assert p.returncode == 0, p.stderr  # a warning, not a failure
    assert "cpu: " in p.stdout and f"int8 class {here.int8_class}" in p.stdout
    assert re.search(rf"warning: model yoeo-demo-int8 was quantized and validated on a CPU "
                     rf"of int8 class {other}; this one is {here.int8_class}", p.stdout), \
        p.stdout
    r = run_cli("run", "-c", str(cfg), "--frames", "2")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count(f"validated on a CPU of int8 class {other}") == 1, r.stderr
    # the shipped model, on the class it was validated on, says nothing
    p = run_cli("check")
    assert "warning" not in p.stdout, p.stdout


def test_classes_with_the_same_integers_share_a_validation():
    vnni, amx = parse(VNNI, "x86_64"), parse(AMX, "x86_64")
    avx2, avx512 = parse(AVX2_ONLY, "x86_64"), parse(VNNI.replace(" avx512_vnni", ""), "x86_64")
    on = {"validated_on": {"int8_class": "x86-vnni"}}
    assert int8_mismatch(on, amx, "m") is None  # AMX accumulates exactly, as VNNI does
    for cpu in (avx2, avx512):
        msg = int8_mismatch(on, cpu, "m")
        assert msg is not None and "int8 products saturate" in msg, msg
    saturating = {"validated_on": {"int8_class": "x86-avx2"}}
    assert int8_mismatch(saturating, avx512, "m") is None
    assert int8_mismatch(saturating, vnni, "m") is not None
    assert int8_mismatch({"validated_on": {"int8_class": "riscv"}}, vnni, "m") is not None


def test_cpuid_agrees_with_the_kernel_here():
    probed = cpuid_features()
    if probed is None:
        pytest.skip("CPUID cannot be asked here (not x86-64)")
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.lower().startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    # the kernel lists only what the OS enabled, so it may say less, never more
    assert {f for f in detect().features} == {f for f in probed if f in flags}
    assert "avx2" in probed or "avx2" not in flags


QEMU = shutil.which("qemu-x86_64")
# qemu's guest is a whole CPU of its own: a host preload (tools/cpuidmask, when the suite
# runs under it) would be loaded into the guest, where CPUID cannot fault
QEMU_ENV = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "CPUIDMASK")}


needs_qemu = pytest.mark.skipif(
    platform.machine() != "x86_64"
    or (QEMU is None and not os.environ.get("EDGED_REQUIRE_QEMU")),
    reason="x86 only, with qemu-user (qemu-x86_64; CI installs it)")


@needs_qemu
def test_an_emulated_avx2_cpu_is_classed_by_what_cpuid_says():
    # qemu-user passes the host's /proc/cpuinfo through, but emulates CPUID: the class
    # follows CPUID, as onnxruntime's kernel dispatch does
    code = ("from edged.inference.cpu import detect; c = detect(); "
            "print(c.int8_class, ' '.join(c.features))")
    p = subprocess.run([QEMU, "-cpu", "Haswell", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=120, cwd=REPO, env=QEMU_ENV)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["x86-avx2", "avx2"], p.stdout


EMULATED_MASKS = """
import sys
import numpy as np
from edged import synth
from edged.inference.runner import ModelOptions, ModelRunner
from edged.results import Frame
out = {}
for name in sys.argv[2:]:
    r = ModelRunner(ModelOptions(path=__import__("pathlib").Path(name), threads=1,
                                 warmup_runs=0))
    out[name] = np.stack([r.infer(Frame("c", i, synth.render(1_000_000 + i, 0, 320, 240)
                                        .image, 0, 0)).mask for i in range(4)])
np.savez(sys.argv[1], **{str(i): out[n] for i, n in enumerate(sys.argv[2:])})
"""


@needs_qemu
def test_the_avx2_variant_computes_the_same_masks_on_avx2_kernels(tmp_path):
    """The packaged variant for x86 without VNNI (7-bit weights) gives the same masks on
    onnxruntime's AVX2 kernels (run under `qemu-x86_64 -cpu Haswell`) as on this CPU: no
    pair of products saturates. The VNNI variant (8-bit weights) does not: its products
    clip there, which is why it is not chosen on such CPUs."""
    import numpy as np

    from edged.config import builtin_variant

    avx2 = builtin_variant("yoeo-demo", "x86-avx2")
    vnni = builtin_variant("yoeo-demo", "x86-vnni")
    assert avx2.name == "yoeo-demo-int8-avx2.onnx" and vnni.name == "yoeo-demo-int8.onnx"
    code = tmp_path / "masks.py"
    code.write_text(EMULATED_MASKS)
    native, emulated = tmp_path / "native.npz", tmp_path / "emulated.npz"
    args = [str(code), "", str(avx2), str(vnni)]
    p = subprocess.run([sys.executable, *args[:1], str(native), *args[2:]],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([QEMU or "qemu-x86_64", "-cpu", "Haswell", sys.executable, *args[:1],
                        str(emulated), *args[2:]],
                       capture_output=True, text=True, timeout=600, cwd=REPO, env=QEMU_ENV)
    assert p.returncode == 0, p.stderr[-2000:]
    a, b = np.load(native), np.load(emulated)
    same_avx2 = float((a["0"] == b["0"]).mean())
    same_vnni = float((a["1"] == b["1"]).mean())
    assert same_avx2 >= 0.9995, same_avx2
    if int8_numerics(detect().int8_class) == "saturating":
        # this CPU clips as the emulated one does: the 8-bit variant agrees too
        assert same_vnni >= 0.9995, same_vnni
    else:
        assert same_vnni < same_avx2, (same_vnni, same_avx2)


# --- arm64: boards' /proc/cpuinfo texts (tests/data/cpuinfo, see its README) ---------

CPUINFO = REPO / "tests" / "data" / "cpuinfo"
BOARDS = {  # file: (device tree model or "", the model edged reports, int8 class)
    "raspberry-pi-4": ("", "Raspberry Pi 4 Model B Rev 1.1 (Cortex-A72)", "arm"),
    "raspberry-pi-5": ("Raspberry Pi 5 Model B Rev 1.0",
                       "Raspberry Pi 5 Model B Rev 1.0 (Cortex-A76)", "arm-dotprod"),
    "jetson-agx-orin": ("NVIDIA Jetson AGX Orin Developer Kit",
                        "NVIDIA Jetson AGX Orin Developer Kit (Cortex-A78AE)", "arm-dotprod"),
    "jetson-agx-xavier": ("Jetson-AGX", "Jetson-AGX (NVIDIA Carmel)", "arm"),
    "graviton2": ("", "Neoverse N1", "arm-dotprod"),
    "graviton3": ("", "Neoverse V1", "arm-i8mm"),
    "ampere-altra": ("", "Neoverse N1", "arm-dotprod"),
    "rk3588": ("Rockchip RK3588 EVB1 LP4 V10 Board",
               "Rockchip RK3588 EVB1 LP4 V10 Board (4x Cortex-A55 + 4x Cortex-A76)",
               "arm-dotprod"),
}


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_an_arm64_board_is_named_by_its_cores_and_board(board):
    dt_model, model, int8_class = BOARDS[board]
    c = parse((CPUINFO / f"{board}.txt").read_text(), "aarch64", dt_model)
    assert c.model == model
    assert c.int8_class == int8_class
    assert "unknown" not in c.describe()
    assert int8_numerics(c.int8_class) == "exact"  # dot products accumulate in int32


def test_arm64_features_and_parts():
    g3 = parse((CPUINFO / "graviton3.txt").read_text(), "aarch64")
    assert g3.features == ("asimd", "asimddp", "i8mm", "sve")
    pi4 = parse((CPUINFO / "raspberry-pi-4.txt").read_text(), "aarch64")
    assert pi4.features == ("asimd",)  # no dot product on a Cortex-A72
    # the Raspberry Pi kernel's `Hardware` line (the SoC family) does not name it
    assert "BCM2835" not in pi4.model
    # a part edged has no name for is shown by number, not as "unknown"
    odd = ARM.replace("CPU implementer\t: 0x41\n",
                      "CPU implementer\t: 0x41\nCPU part\t: 0xd99\n")
    assert parse(odd, "aarch64").model == "ARM part 0x41:0xd99"
    # qemu's `-cpu max`
    q = ARM.replace("CPU implementer\t: 0x41\n", "CPU implementer\t: 0x00\nCPU part\t: 0x051\n")
    assert parse(q, "aarch64").model == "QEMU max"
    # x86 texts are read as before
    assert parse(AVX2_ONLY, "x86_64").model == "AMD EPYC 7B12"


ON_ARM64 = pytest.mark.skipif(platform.machine() != "aarch64", reason="arm64 only")


@ON_ARM64
def test_on_arm64_the_hwcaps_decide_the_class():
    # what onnxruntime dispatches on; under qemu-user, what the emulated CPU has
    caps = hwcap_features()
    assert caps is not None and "asimd" in caps
    c = detect()
    assert set(c.features) == caps
    assert c.model and "unknown" not in c.describe()
    want = os.environ.get("EDGED_EXPECT_INT8_CLASS")  # tools/arm64/run.sh sets it per CPU
    if want:
        assert c.int8_class == want, c.describe()
