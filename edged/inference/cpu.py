"""What the CPU offers int8 inference, in one place.

ONNX Runtime's int8 kernels differ by instruction set, and so do an int8 model's speed
and accuracy: on x86 with VNNI (AVX-512 VNNI or AVX-VNNI) U8S8 products accumulate
exactly; on x86 without it they go through 16-bit saturating multiply-adds, which
distorts results unless the weights use a reduced (7-bit) range (onnxruntime's
quantization docs); ARM has dot-product (and i8mm) instructions. An int8 model is
validated on one of these classes, and edged warns when it runs on another.

The class is read from /proc/cpuinfo (`flags` on x86, `Features` on ARM). On x86 it is
also asked of the CPUID instruction itself, which is what onnxruntime's kernel dispatch
reads: a feature counts only where both agree (under an emulator such as `qemu-x86_64
-cpu Haswell` /proc/cpuinfo shows the host, CPUID the emulated CPU; and the kernel clears a
flag the OS has not enabled).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
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


# x86-64 System V: cpuid(leaf=edi, subleaf=esi) -> eax, ebx, ecx, edx stored at [rdx]
_CPUID_CODE = bytes.fromhex(
    "53"  # push rbx (callee-saved; cpuid writes it)
    "89f8"  # mov eax, edi
    "89f1"  # mov ecx, esi
    "4989d0"  # mov r8, rdx
    "0fa2"  # cpuid
    "418900"  # mov [r8], eax
    "41895804"  # mov [r8+4], ebx
    "41894808"  # mov [r8+8], ecx
    "4189500c"  # mov [r8+12], edx
    "5b"  # pop rbx
    "c3")  # ret

# (leaf, subleaf, register index, bit) of each X86_FEATURES entry (Intel SDM vol. 2, CPUID)
_CPUID_BITS = {
    "avx2": (7, 0, 1, 5), "avx512f": (7, 0, 1, 16), "avx512bw": (7, 0, 1, 30),
    "avx512_vnni": (7, 0, 2, 11), "avx_vnni": (7, 1, 0, 4), "amx_tile": (7, 0, 3, 24),
    "amx_int8": (7, 0, 3, 25)}


def cpuid_features() -> set[str] | None:
    """The X86_FEATURES the CPUID instruction reports, or None where it cannot be asked
    (not x86-64 Linux, or executable memory refused, e.g. by MemoryDenyWriteExecute)."""
    if platform.machine() not in ("x86_64", "AMD64") or not hasattr(mmap, "PROT_EXEC"):
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError:
        return None
    try:
        page.write(_CPUID_CODE)
        anchor = ctypes.c_char.from_buffer(page)
        fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32,
                              ctypes.c_void_p)(ctypes.addressof(anchor))
        regs = (ctypes.c_uint32 * 4)()
        fn(0, 0, regs)
        top = regs[0]
        found: set[str] = set()
        cache: dict[tuple[int, int], tuple[int, ...]] = {}
        for name, (leaf, sub, reg, bit) in _CPUID_BITS.items():
            if leaf > top:
                continue
            if (leaf, sub) not in cache:
                fn(leaf, sub, regs)
                cache[(leaf, sub)] = tuple(regs)
            if cache[(leaf, sub)][reg] >> bit & 1:
                found.add(name)
        del fn, anchor  # the buffer export must end before the page can close
        return found
    finally:
        with contextlib.suppress(BufferError):
            page.close()


def detect() -> CpuInfo:
    """This machine's CPU (features empty where /proc/cpuinfo cannot be read; on x86 only
    the features CPUID confirms, where it can be asked)."""
    machine = platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    info = parse(text, machine)
    probed = cpuid_features()
    if probed is None:
        return info
    if not text:  # no /proc/cpuinfo (a sandbox): CPUID alone
        return CpuInfo(machine, "", tuple(f for f in X86_FEATURES if f in probed))
    return CpuInfo(machine, info.model, tuple(f for f in info.features if f in probed))


# How each class's int8 kernels accumulate U8S8 products: "exact" (VNNI, AMX and ARM's
# widening or dot-product instructions, int32 throughout) or "saturating" (x86 without
# VNNI: pairs of products summed in int16 by vpmaddubsw, which clips unless weights are
# 7-bit). Two classes in one family compute the same integers for the same model, so an
# int8 model's accuracy carries between them; only its speed differs.
_NUMERICS = {"x86-amx": "exact", "x86-vnni": "exact", "x86-avx512": "saturating",
             "x86-avx2": "saturating", "x86": "saturating", "arm-i8mm": "exact",
             "arm-dotprod": "exact", "arm": "exact"}


def int8_numerics(int8_class: str) -> str:
    """"exact", "saturating", or "unknown" for a class edged has no rule for."""
    return _NUMERICS.get(int8_class, "unknown")


def validated_class(quantization: dict[str, Any] | None) -> str | None:
    """The int8 class a manifest's quantization record says the model was validated for:
    `valid_for` (`edged quantize --for-class`), else the class of `validated_on`."""
    target = quantization.get("valid_for") if quantization else None
    if isinstance(target, str):
        return target
    validated = quantization.get("validated_on") if quantization else None
    if not isinstance(validated, dict):
        return None
    theirs = validated.get("int8_class")
    return theirs if isinstance(theirs, str) else None


def int8_mismatch(quantization: dict[str, Any], cpu: CpuInfo, model_id: str) -> str | None:
    """The warning for an int8 model validated on a CPU whose int8 kernels compute other
    integers than this one's (see _NUMERICS), or None.

    `quantization` is the manifest's record (`edged quantize` writes `validated_on`)."""
    theirs = validated_class(quantization)
    if theirs is None or theirs == cpu.int8_class:
        return None
    mine = int8_numerics(cpu.int8_class)
    if mine != "unknown" and mine == int8_numerics(theirs):
        return None  # same integers: the validation holds here
    why = (" (without VNNI, int8 products saturate: expect lower accuracy and less "
           "speed-up)" if mine == "saturating" else "")
    return (f"model {model_id} was quantized and validated on a CPU of int8 class {theirs}; "
            f"this one is "
            f"{cpu.int8_class}{why}. Run `edged quantize` on this machine for an int8 model "
            "validated here, or use the fp32 model")
