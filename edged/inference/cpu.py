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
flag the OS has not enabled). On arm64 the ELF hwcaps (getauxval) are what onnxruntime
reads and what the kernel prints as `Features`; they win where they can be asked (qemu-user
7.2 passes the host's x86 /proc/cpuinfo through, but emulates the hwcaps).

An arm64 kernel names no CPU model: /proc/cpuinfo has only MIDR fields (`CPU implementer`,
`CPU part`), named here from ARM_PARTS, and the board is in the device tree's model
(`/proc/device-tree/model`: "Raspberry Pi 5 Model B Rev 1.0", "NVIDIA Jetson AGX Orin
Developer Kit") or, on a Raspberry Pi kernel, a `Model` line.
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

ARM_MACHINES = ("aarch64", "arm64", "armv8l")

# (CPU implementer, CPU part) from MIDR_EL1 -> core name (ARM's technical reference
# manuals; the Linux kernel's arch/arm64/include/asm/cputype.h lists the same numbers)
ARM_PARTS: dict[tuple[int, int], str] = {
    **{(0x41, part): name for part, name in {
        0xd03: "Cortex-A53", 0xd04: "Cortex-A35", 0xd05: "Cortex-A55", 0xd07: "Cortex-A57",
        0xd08: "Cortex-A72", 0xd09: "Cortex-A73", 0xd0a: "Cortex-A75", 0xd0b: "Cortex-A76",
        0xd0c: "Neoverse N1", 0xd0d: "Cortex-A77", 0xd0e: "Cortex-A76AE",
        0xd40: "Neoverse V1", 0xd41: "Cortex-A78", 0xd42: "Cortex-A78AE",
        0xd44: "Cortex-X1", 0xd46: "Cortex-A510", 0xd47: "Cortex-A710", 0xd48: "Cortex-X2",
        0xd49: "Neoverse N2", 0xd4a: "Neoverse E1", 0xd4b: "Cortex-A78C",
        0xd4c: "Cortex-X1C", 0xd4d: "Cortex-A715", 0xd4e: "Cortex-X3",
        0xd4f: "Neoverse V2", 0xd80: "Cortex-A520", 0xd81: "Cortex-A720",
        0xd82: "Cortex-X4", 0xd84: "Neoverse V3", 0xd85: "Cortex-X925",
        0xd87: "Cortex-A725", 0xd8e: "Neoverse N3"}.items()},
    (0x4e, 0x003): "NVIDIA Denver 2", (0x4e, 0x004): "NVIDIA Carmel",  # Jetson Xavier
    (0x48, 0xd01): "HiSilicon TaiShan v110",  # Kunpeng 920
    (0x46, 0x001): "Fujitsu A64FX",
    (0xc0, 0xac3): "Ampere-1", (0xc0, 0xac4): "Ampere-1A",
    # Apple silicon under Asahi Linux (the kernel's cputype.h)
    (0x61, 0x022): "Apple M1 Icestorm", (0x61, 0x023): "Apple M1 Firestorm",
    (0x61, 0x032): "Apple M2 Blizzard", (0x61, 0x033): "Apple M2 Avalanche",
    # qemu's `-cpu max`: implementer 0 is "reserved for software use", part 'Q'
    (0x00, 0x051): "QEMU max",
}

# the bits of AT_HWCAP / AT_HWCAP2 for ARM_FEATURES (the kernel's uapi asm/hwcap.h)
_HWCAP_BITS = {"asimd": (16, 1), "asimddp": (16, 20), "sve": (16, 22), "sve2": (26, 1),
               "i8mm": (26, 13)}

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
        if self.machine in ARM_MACHINES:
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


def _int(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def arm_cores(cpuinfo: str) -> str:
    """The cores an arm64 /proc/cpuinfo lists, named: "Cortex-A76", or "4x Cortex-A55 +
    4x Cortex-A76" on a big.LITTLE board such as the RK3588 ("" when it lists no MIDR
    fields). A part missing from ARM_PARTS is shown by number ("ARM part 0x41:0xd99")."""
    counts: dict[str, int] = {}
    implementer: int | None = None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if not sep:
            continue
        if key == "processor":
            implementer = None
        elif key == "cpu implementer":
            implementer = _int(value.strip())
        elif key == "cpu part" and implementer is not None:
            part = _int(value.strip())
            if part is None:
                continue
            name = ARM_PARTS.get((implementer, part),
                                 f"ARM part {implementer:#04x}:{part:#05x}")
            counts[name] = counts.get(name, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return " + ".join(f"{n}x {name}" for name, n in counts.items())


def parse(cpuinfo: str, machine: str, board: str = "") -> CpuInfo:
    """CpuInfo from the text of /proc/cpuinfo (the first processor's entries). On arm64,
    `board` is the device tree's model, if any: the model is "<board> (<cores>)"."""
    flags: set[str] = set()
    model = ""
    board_line = ""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key == "model" and not board_line:  # a Raspberry Pi kernel's board line
            board_line = value.strip()
    if machine in ARM_MACHINES:
        cores = arm_cores(cpuinfo)
        # a 64-bit kernel prints no `model name`; `Hardware` is the SoC family at best
        # ("BCM2835" on a Raspberry Pi 4), so the board and the cores name it first
        board = board or board_line
        if cores:
            model = f"{board} ({cores})" if board else cores
        elif board:
            model = board
        return CpuInfo(machine, model, tuple(f for f in ARM_FEATURES if f in flags))
    return CpuInfo(machine, model, tuple(f for f in X86_FEATURES if f in flags))


def hwcap_features() -> set[str] | None:
    """The ARM_FEATURES in this process's ELF hwcaps (what onnxruntime's dispatch reads),
    or None where they cannot be asked (not arm64 Linux)."""
    if platform.machine() not in ARM_MACHINES:
        return None
    try:
        libc = ctypes.CDLL(None)
        getauxval = libc.getauxval
    except (OSError, AttributeError):
        return None
    getauxval.restype = ctypes.c_ulong
    getauxval.argtypes = [ctypes.c_ulong]
    words = {16: int(getauxval(16)), 26: int(getauxval(26))}  # AT_HWCAP, AT_HWCAP2
    return {name for name, (at, bit) in _HWCAP_BITS.items() if words[at] >> bit & 1}


def device_tree_model() -> str:
    """The board's name from the device tree ("" where there is none, e.g. ACPI servers)."""
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            return Path(path).read_bytes().rstrip(b"\0").decode(errors="replace").strip()
        except OSError:
            continue
    return ""


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
    the features CPUID confirms, where it can be asked; on arm64 the hwcaps' features)."""
    machine = platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    if machine in ARM_MACHINES:
        info = parse(text, machine, device_tree_model())
        caps = hwcap_features()
        if caps is None:
            return info
        return CpuInfo(machine, info.model, tuple(f for f in ARM_FEATURES if f in caps))
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
