#!/usr/bin/env bash
# A wheel built from a clean clone installs into a fresh virtual environment and passes the CPU tests
# of every family from outside the source tree, with the AVX2 and the portable (no-AVX2) kernels,
# and a wheel without prebuilt kernels JIT-builds them on first use.
#   bash tools/wheel_check.sh [REV] [WORKDIR]      (about 10 minutes on 2 cores; WORKDIR is replaced)
# Needs: python3.11, a python with torch and build tools to build the wheel (PYB, default .venv).
set -u
REV=${1:-HEAD}
W=${2:-/tmp/fastmi-wheel-check}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYB=${PYB:-$REPO/.venv/bin/python}
case "$W" in /tmp/*) ;; *) echo "wheel_check.sh: WORKDIR must be under /tmp (it is deleted first)" >&2; exit 2 ;; esac
rm -rf "$W" && mkdir -p "$W" && cd "$W" || exit 2
git clone -q "$REPO" src && git -C src checkout -q "$REV" || exit 2
echo "== wheel with prebuilt kernels ($(date -u +%T))"
(cd src && "$PYB" -m pip wheel -q --no-build-isolation --no-deps -w "$W/dist" .) || exit 1
echo "== wheel without prebuilt kernels"
(cd src && FASTMI_NO_EXT_BUILD=1 "$PYB" -m pip wheel -q --no-build-isolation --no-deps -w "$W/dist-jit" .) || exit 1
ls -la dist dist-jit
echo "== fresh venv ($(date -u +%T))"
python3.11 -m venv venv && V=$W/venv/bin/python || exit 1
"$V" -m pip install -q torch==2.13.0 numpy pytest hypothesis expecttest ninja || exit 1
"$V" -m pip install -q dist/fastmi-*.whl || exit 1
cp -r src/tests tests && mkdir run && cd run || exit 1
TESTS="$W/tests/critic_lse/test_api.py $W/tests/separable/test_api.py $W/tests/fd_jacobian/test_api.py
       $W/tests/softmax_stats/test_api.py $W/tests/mmd_imq/test_api.py $W/tests/numerics/test_determinism.py"
K="not triton and not cuda and not compile and not opcheck"
run_tests() { "$V" -m pytest -q -p no:cacheprovider --import-mode=importlib -m "not slow and not gpu" $TESTS -k "$K" | tail -1; }
fail=0
for isa in avx2 portable; do
  echo "== $isa kernels, tests from outside the source tree ($(date -u +%T))"
  FASTMI_ISA=$isa "$V" -c "import fastmi._ext as e; print(e.status()['how'])"
  FASTMI_ISA=$isa run_tests || fail=1
done
echo "== JIT fallback ($(date -u +%T))"
"$V" -m pip install -q --force-reinstall --no-deps "$W"/dist-jit/fastmi-*.whl || exit 1
rm -rf ~/.cache/torch_extensions/*/fastmi*
"$V" -c "import fastmi; print(fastmi.info()['cpu'])"
run_tests || fail=1
echo "== done ($(date -u +%T)), failures: $fail"
exit $fail
