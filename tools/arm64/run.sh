#!/usr/bin/env bash
# The arm64 job (CI runs it at the end of .ci/run): edged on Debian 12 arm64 under
# user-mode qemu, as on a Raspberry Pi, a Jetson or a Graviton, on an x86 machine.
#
#   tools/arm64/run.sh          (root; EDGED_ARM64_ROOTFS, EDGED_ARM64_OUT optional)
#
# 1. the rootfs (tools/arm64/rootfs.sh: Debian's arm64 packages, then every dependency as
#    an aarch64 wheel from PyPI) and edged installed in it from a wheel of this tree;
# 2. on each emulated CPU (QEMU_CPU), `edged check` on the default config must name the
#    int8 class that CPU has: Cortex-A72 arm, Cortex-A76 and Neoverse N1 arm-dotprod,
#    qemu's `max` (Armv9 with i8mm) arm-i8mm; tests/unit/test_cpu.py with that expectation;
# 3. on a Cortex-A76 (a Raspberry Pi 5's core): a short `edged run --echo` must publish,
#    tests/unit/test_cpu.py and tests/e2e/test_demo_model.py (the subset in TESTS below), the demo
#    model's int8 and fp32 scored by `edged eval` (compared with x86 in the docs), and the
#    synthetic renderer's images compared with this machine's.
# Figures go to $EDGED_ARM64_OUT (default /tmp/edged-arm64). Timings under qemu are not
# the speed of any real arm64 CPU.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ROOTFS="${EDGED_ARM64_ROOTFS:-/var/cache/edged/arm64-rootfs}"
OUT="${EDGED_ARM64_OUT:-/tmp/edged-arm64}"
CPUS="${EDGED_ARM64_CPUS:-cortex-a72:arm cortex-a76:arm-dotprod neoverse-n1:arm-dotprod max:arm-i8mm}"
MAIN_CPU=cortex-a76
SCENES="${EDGED_ARM64_SCENES:-20}"
# the CPU and demo-model tests that fit the job's time under emulation: all of
# tests/unit/test_cpu.py, the demo's contract and its model card (60 scenes through `edged
# eval`); not the six-camera subscriber test, whose 72 frames must arrive within 90 s
# (about 0.3 s a frame under qemu, with six renderers beside it: too close to call)
TESTS="${EDGED_ARM64_TESTS:-tests/unit/test_cpu.py tests/e2e/test_demo_model.py::test_shipped_models_follow_the_yoeo_contract tests/e2e/test_demo_model.py::test_eval_command_meets_the_model_card}"
mkdir -p "$OUT"
t0=$(date +%s)
step() { echo "arm64 [$(( $(date +%s) - t0 )) s] $*"; }

# commands in the rootfs: the tree at /src (read through, not written: no bytecode, no
# pytest cache), the venv first on PATH
arm() {  # arm CPU COMMAND
    QEMU_CPU="$1" "$HERE/chroot.sh" "$ROOTFS" "$REPO" /bin/bash -c \
        "set -euo pipefail; export PYTHONDONTWRITEBYTECODE=1; cd /tmp; $2"
}

step "rootfs"
"$HERE/rootfs.sh" "$ROOTFS"
step "edged from a wheel of this tree"
arm "$MAIN_CPU" '
    mkdir /tmp/src && tar -C /src --exclude="./.venv*" --exclude=./.git --exclude="./build" \
        --exclude="*.egg-info" -cf - . | tar -C /tmp/src -xf -
    pip wheel -q --no-deps --no-build-isolation -w /tmp/wheel /tmp/src 2>&1 | tail -3
    pip install -q --no-deps --force-reinstall /tmp/wheel/edged-*.whl
    cd / && edged --help >/dev/null && python -c "import onnxruntime, cv2, zmq, edged"'

for pair in $CPUS; do
    cpu="${pair%%:*}"; want="${pair#*:}"
    step "$cpu: edged check, the CPU tests (int8 class $want)"
    arm "$cpu" "edged check | tee /tmp/check.txt
        grep -q 'int8 class $want$' /tmp/check.txt || { echo 'want int8 class $want' >&2; exit 1; }
        cd /src && EDGED_EXPECT_INT8_CLASS=$want python -m pytest -q -p no:cacheprovider \
            tests/unit/test_cpu.py -k 'arm64 or int8_class_of or detect_reads'" \
        | tee "$OUT/check-$cpu.txt"
done

step "$MAIN_CPU: edged run --echo publishes"
arm "$MAIN_CPU" '
    sed -e "s#tcp://127.0.0.1:5555#ipc:///tmp/edged.sock#" -e "s/fps: 15/fps: 5/" \
        "$(python -c "import edged; print(edged.__file__.rsplit(\"/\", 1)[0])")/configs/default.yaml" > /tmp/cfg.yaml
    timeout 300 edged run -c /tmp/cfg.yaml --echo --frames 8 > /tmp/echo.txt
    cat /tmp/echo.txt
    [ "$(grep -c "^synthetic" /tmp/echo.txt)" -ge 2 ] || { echo "run published nothing" >&2; exit 1; }' \
    | tee "$OUT/run-echo.txt"

step "$MAIN_CPU: tests ($TESTS)"
arm "$MAIN_CPU" "cd /src && python -m pytest -q -p no:cacheprovider $TESTS" | tee "$OUT/tests.txt"

step "$MAIN_CPU: demo int8 and fp32 on $SCENES evaluation scenes; synthetic images"
arm "$MAIN_CPU" "
    for v in int8 fp32; do
        edged eval --model /src/models/yoeo-demo-\$v.onnx --scenes $SCENES --json > /tmp/eval-\$v.json
    done
    python /src/tools/arm64/synth_compare.py dump /tmp/synth-arm64.npz
    tar -C /tmp -cf - eval-int8.json eval-fp32.json synth-arm64.npz" | tar -C "$OUT" -xf -
step "x86 (this machine): the same, to compare"
PY="${EDGED_X86_PYTHON:-$REPO/.venv/bin/python}"
for v in int8 fp32; do
    "$PY" -m edged eval --model "$REPO/models/yoeo-demo-$v.onnx" --scenes "$SCENES" --json \
        > "$OUT/eval-$v-x86.json"
done
"$PY" "$HERE/synth_compare.py" dump "$OUT/synth-x86.npz"
"$PY" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
r = {f"{v}_{a}": json.load(open(f"{out}/eval-{v}{s}.json"))["miou"]
     for v in ("int8", "fp32") for a, s in (("arm64", ""), ("x86", "-x86"))}
print("mIoU", json.dumps(r))
print("int8 - fp32: arm64 %+.4f, x86 %+.4f" % (r["int8_arm64"] - r["fp32_arm64"],
                                                r["int8_x86"] - r["fp32_x86"]))
json.dump(r, open(f"{out}/miou.json", "w"))
PY
# the images must be identical; a label pixel may still differ where numpy's BLAS rounds
# the homography's last bit differently (docs/benchmarks.md, "ARM64 under qemu")
"$PY" "$HERE/synth_compare.py" compare "$OUT/synth-x86.npz" "$OUT/synth-arm64.npz" \
    | tee "$OUT/synth-compare.json"
step "done in $(( $(date +%s) - t0 )) s"
