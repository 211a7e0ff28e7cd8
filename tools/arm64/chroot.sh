#!/usr/bin/env bash
# Run a command in the arm64 rootfs, in a private mount namespace (nothing to unmount
# after): /proc, /dev, /sys, a fresh /tmp, the source tree at /src, and an ARM
# /proc/cpuinfo.
#
#   tools/arm64/chroot.sh ROOTFS SRC|- COMMAND...
#
# Why the cpuinfo: qemu-user 7.2 (Debian 12) passes the host's /proc/cpuinfo through, so
# an emulated aarch64 process reads an x86 text; onnxruntime's cpuinfo library finds no
# ARM processor in it and `import onnxruntime` segfaults. tools/arm64/cpuinfo.py, run
# first on the emulated CPU (QEMU_CPU), writes the text a kernel would show for it (its
# MIDR fields and hwcaps), and that file is bind-mounted over /proc/cpuinfo.
#
# A private network namespace too (loopback only), so the default config's
# tcp://127.0.0.1:5555 and the tests' ports never meet other processes on this machine;
# EDGED_ARM64_NET=host keeps the machine's network (rootfs.sh: pip downloads).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOTFS="$1"; SRC="$2"; shift 2
export QEMU_CPU="${QEMU_CPU:-max}"
NET=--net
[ "${EDGED_ARM64_NET:-}" = host ] && NET=
exec unshare --mount --propagation private $NET /bin/bash -c '
    set -e
    [ -z "'"$NET"'" ] || ip link set lo up
    R="$1"; S="$2"; H="$3"; shift 3
    mount -t proc proc "$R/proc"
    mount --rbind /dev "$R/dev"
    mount --rbind /sys "$R/sys"
    mount -t tmpfs tmpfs "$R/tmp"
    mkdir -p "$R/run/edged"; mount -t tmpfs tmpfs "$R/run/edged"
    cp "$H/cpuinfo.py" "$R/run/edged/"
    chroot "$R" /usr/bin/python3 /run/edged/cpuinfo.py > "$R/run/edged/cpuinfo"
    mount --bind "$R/run/edged/cpuinfo" "$R/proc/cpuinfo"
    if [ "$S" != - ]; then mkdir -p "$R/src"; mount --bind "$S" "$R/src"; fi
    exec chroot "$R" /usr/bin/env -i PATH=/opt/venv/bin:/usr/bin:/bin HOME=/root \
        LANG=C.UTF-8 QEMU_CPU="$QEMU_CPU" "$@"' _ "$ROOTFS" "$SRC" "$HERE" "$@"
