#!/usr/bin/env bash
# Build (or reuse) an arm64 Debian 12 rootfs with a venv of edged's dependencies, all from
# aarch64 wheels on PyPI, for running edged under user-mode qemu (tools/arm64/run.sh).
#
#   tools/arm64/rootfs.sh [ROOTFS]      (default $EDGED_ARM64_ROOTFS or
#                                        /var/cache/edged/arm64-rootfs)
#
# Needs root (mmdebstrap's root mode, chroot), Debian's qemu-user-static, mmdebstrap and
# arch-test (mmdebstrap asks it whether arm64 binaries run),
# and binfmt_misc (registered here if missing: the rootfs's maintainer scripts and every
# process edged starts are aarch64 ELF files the kernel must hand to qemu). The rootfs is
# kept between local runs and rebuilt when this script or the wheel list changes (a stamp
# file holds their hash); CI starts without it.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOTFS="${1:-${EDGED_ARM64_ROOTFS:-/var/cache/edged/arm64-rootfs}}"
# edged's dependencies and what the arm64 tests import, at the versions x86 CI resolves
# today (the same releases on both sides, so their results can be compared)
# (setuptools to build edged's wheel without network: the venv's own is too old)
WHEELS=(numpy==2.4.6 onnxruntime==1.32.0 opencv-python-headless==5.1.0.95 pyzmq==27.3.0
        msgpack==1.2.4 PyYAML==6.0.4 pydantic==2.14.4 zstandard==0.25.0 scipy==1.17.1
        onnx==1.23.2 pytest==9.2.0 "setuptools>=68")
DEBIAN=(--arch=arm64 --variant=apt --include=python3,python3-venv,ca-certificates bookworm)
# the recipe's hash: a rootfs built from another recipe is rebuilt
STAMP="$(echo "${DEBIAN[*]} ${WHEELS[*]}" | sha256sum | cut -c1-16)"

"$HERE/binfmt.sh"
if [ -f "$ROOTFS/.edged-stamp" ] && [ "$(cat "$ROOTFS/.edged-stamp")" = "$STAMP" ]; then
    echo "arm64 rootfs: reusing $ROOTFS"
    exit 0
fi
rm -rf "$ROOTFS"
mkdir -p "$(dirname "$ROOTFS")"
t0=$(date +%s)
# --variant=apt: Essential plus apt; python3-venv brings ensurepip's pip
mmdebstrap --quiet "${DEBIAN[@]}" "$ROOTFS" http://deb.debian.org/debian
echo "arm64 rootfs: debian done in $(( $(date +%s) - t0 )) s"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
# this machine's CA bundle (PyPI may be reached through a proxy with its own CA)
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/host-ca.crt"
EDGED_ARM64_NET=host "$HERE/chroot.sh" "$ROOTFS" - /bin/sh -c '
    set -e
    python3 -m venv /opt/venv
    # wheels only: a dependency without an aarch64 wheel must fail here, not compile
    PIP_CERT=/etc/ssl/certs/host-ca.crt /opt/venv/bin/pip install -q \
        --disable-pip-version-check --only-binary=:all: '"${WHEELS[*]@Q}"'
    /opt/venv/bin/pip list --format=freeze > /opt/venv/freeze.txt'
echo "$STAMP" > "$ROOTFS/.edged-stamp"
echo "arm64 rootfs: built in $(( $(date +%s) - t0 )) s"
