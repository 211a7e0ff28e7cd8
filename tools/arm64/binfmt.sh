#!/usr/bin/env bash
# Register qemu-aarch64 with binfmt_misc if it is not: every aarch64 ELF the kernel is
# asked to exec (in the rootfs, and each subprocess edged or its tests start) then runs
# under qemu-aarch64-static. The F flag opens the interpreter now, so the rootfs need not
# contain it. QEMU_CPU in the environment picks the emulated CPU, for children too.
set -euo pipefail
BM=/proc/sys/fs/binfmt_misc
[ -e "$BM/qemu-aarch64" ] && exit 0
[ -e "$BM/register" ] || mount -t binfmt_misc binfmt_misc "$BM"
conf=/usr/lib/binfmt.d/qemu-aarch64.conf  # Debian's qemu-user-static ships it (flags OPF)
[ -f "$conf" ] || { echo "no $conf: apt-get install qemu-user-static" >&2; exit 1; }
cat "$conf" > "$BM/register"
