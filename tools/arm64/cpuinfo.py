"""Print the /proc/cpuinfo an arm64 Linux kernel would show for the CPU this process runs
on. Meant for aarch64 under qemu-user, whose 7.2 release passes the host's (x86) text
through; tools/arm64/chroot.sh bind-mounts this text over /proc/cpuinfo.

The values are asked of the (emulated) CPU itself: Features from the ELF hwcaps
(getauxval, named as arch/arm64/kernel/cpuinfo.c names them), the MIDR_EL1 fields from an
`mrs` of that register (the kernel, and qemu-user, emulate it for EL0). Standard library
only: it runs on the rootfs's system python before any venv exists.
"""

import ctypes
import mmap
import os

_HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                "jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc "
                "flagm ssbs sb paca pacg")
HWCAP = _HWCAP_NAMES.split()  # one string: the kernel's order, easy to compare
_HWCAP2_NAMES = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm "
                 "svef32mm svef64mm svebf16 i8mm bf16 dgh rng bti mte")
HWCAP2 = _HWCAP2_NAMES.split()


def midr() -> int:
    code = bytes.fromhex("000038d5" "c0035fd6")  # mrs x0, midr_el1; ret
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE
                     | mmap.PROT_EXEC)
    page.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    return int(ctypes.CFUNCTYPE(ctypes.c_uint64)(addr)())


libc = ctypes.CDLL(None)
libc.getauxval.restype = ctypes.c_ulong
hw, hw2 = libc.getauxval(16), libc.getauxval(26)  # AT_HWCAP, AT_HWCAP2
names = [n for i, n in enumerate(HWCAP) if hw >> i & 1]
names += [n for i, n in enumerate(HWCAP2) if hw2 >> i & 1]
m = midr()
for cpu in range(os.cpu_count() or 1):
    print(f"processor\t: {cpu}\nBogoMIPS\t: 50.00\nFeatures\t: {' '.join(names)}\n"
          f"CPU implementer\t: {m >> 24 & 0xff:#04x}\nCPU architecture: 8\n"
          f"CPU variant\t: {m >> 20 & 0xf:#x}\nCPU part\t: {m >> 4 & 0xfff:#05x}\n"
          f"CPU revision\t: {m & 0xf}\n")
