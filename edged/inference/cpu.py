"""What the CPU offers int8 inference, in one place.

ONNX Runtime's int8 kernels differ by instruction set, and so do an int8 model's speed
and accuracy: on x86 with VNNI (AVX-512 VNNI or AVX-VNNI) U8S8 products accumulate
exactly; on x86 without it they go through 16-bit saturating multiply-adds, which
distorts results unless the weights use a reduced (7-bit) range (onnxruntime's
quantization docs); ARM has dot-product (and i8mm) instructions. An int8 model is
validated on one of these classes, and edged warns when it runs on another.

The class is read from /proc/cpuinfo (`flags` on x86, `Features` on ARM).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the features that matter for int8 (as /proc/cpuinfo names them)
X86_FEATURES = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
                "amx_tile")
ARM_FEATURES = ("asimd", "asimddp", "i8mm", "sve", "sve2")

INT8_CLASSES = ("x86-amx", "x86-vnni", "x86-avx512", "x86-avx2", "x86", "arm-i8mm",
                "arm-dotprod", "arm", "other")


@dataclass(frozen=True, slots=True)
class CpuInfo:
    machine: str  # platform.machine(): x86_64, aarch64, ...
    model: str  # "AMD EPYC", ... ("" when unknown)
    features: tuple[str, ...]  # of X86_FEATURES / ARM_FEATURES, in that order

    @property
    def int8_class(self) -> str:
        """The class an int8 model's speed and accuracy depend on."""
        f = set(self.features)
        if self.machine in ("x86_64", "AMD64", "i686", "x86"):
            if "amx_int8" in f:
                return "x86-amx"
            if f & {"avx512_vnni", "avx_vnni"}:
                return "x86-vnni"
            if "avx512bw" in f:
                return "x86-avx512"
            return "x86-avx2" if "avx2" in f else "x86"
        if self.machine in ("aarch64", "arm64", "armv8l"):
            if "i8mm" in f:
                return "arm-i8mm"
            return "arm-dotprod" if "asimddp" in f else "arm"
        return "other"

    def describe(self) -> str:
        feats = " ".join(self.features) or "none of note"
        return (f"{self.model or 'unknown CPU'} ({self.machine}): {feats}; int8 class "
                f"{self.int8_class}")

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine, "model": self.model, "features": list(self.features),
                "int8_class": self.int8_class}


def parse(cpuinfo: str, machine: str) -> CpuInfo:
    """CpuInfo from the text of /proc/cpuinfo (the first processor's entries)."""
    flags: set[str] = set()
    model = ""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
    wanted = ARM_FEATURES if machine in ("aarch64", "arm64", "armv8l") else X86_FEATURES
    return CpuInfo(machine, model, tuple(f for f in wanted if f in flags))


def detect() -> CpuInfo:
    """This machine's CPU (features empty where /proc/cpuinfo cannot be read)."""
    machine = platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    return parse(text, machine)


def int8_mismatch(quantization: dict[str, Any], cpu: CpuInfo, model_id: str) -> str | None:
    """The warning for an int8 model validated on another CPU class, or None.

    `quantization` is the manifest's record (`edged quantize` writes `validated_on`)."""
    validated = quantization.get("validated_on") if quantization else None
    if not isinstance(validated, dict):
        return None
    theirs = validated.get("int8_class")
    if not isinstance(theirs, str) or theirs == cpu.int8_class:
        return None
    why = (" (without VNNI, int8 products saturate: expect lower accuracy and less "
           "speed-up)" if cpu.int8_class in ("x86-avx2", "x86", "x86-avx512") else "")
    return (f"model {model_id} was quantized and validated on a CPU of int8 class {theirs}; "
            f"this one is "
            f"{cpu.int8_class}{why}. Run `edged quantize` on this machine for an int8 model "
            "validated here, or use the fp32 model")
