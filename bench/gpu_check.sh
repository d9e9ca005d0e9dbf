#!/usr/bin/env bash
# One call on a lent GPU (H100 / H200, no network; torch + triton preinstalled): install fastmi,
# run the GPU and AOT tests, benchmark every family, and leave everything in one flat results folder
# (at most 8 files), within a time budget (default 440 s) that each stage's `timeout` respects.
#
#   bash bench/gpu_check.sh [--out DIR] [--budget SECONDS] [--python PY] [--dry-run]
#
#   --out DIR      results folder (default: $OUT if set, else bench/results/gpu-check-<UTC time>);
#                  it must be empty or new: finished results are never overwritten
#   --budget S     total seconds for all stages (default 440: under 8 minutes in all)
#   --python PY    the interpreter that has torch and triton (default: python3)
#   --dry-run      print the stages, their time limits and commands; run nothing
#
# Stages, in order of value (each one's output goes to the folder even when it fails or times out):
#   env      nvidia-smi, versions, commit                         -> env.txt
#   install  pip install --no-build-isolation --no-deps -e .      -> install.log
#   tests    pytest -m "gpu or aot" (+ junit XML)                  -> pytest.log, pytest.xml
#   fused    bench/gpu.py, fused + reference, the CPU benchmarks' sizes, float32 + bfloat16
#   large    separable InfoNCE at n = 2^20, d = 256, bfloat16, fused
#   compiled bench/gpu.py, the torch.compile baselines, with whatever time is left
#   aot      python -m bench.aot_report --out (the report as this GPU's Triton compiles it)
#                                                                 -> bench.log, gpu-<device>.jsonl, aot-resources.json
#   summary  one line per stage: exit code, seconds               -> summary.txt
set -u

die() { echo "gpu_check: $*" >&2; exit 2; }

OUTDIR="${OUT:-}"
BUDGET=440
PY=python3
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a folder"; OUTDIR="$2"; shift 2 ;;
    --budget) [ $# -ge 2 ] || die "--budget needs seconds"; BUDGET="$2"; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PY="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$BUDGET" in ''|*[!0-9]*) die "--budget must be a whole number of seconds, got '$BUDGET'" ;; esac
[ "$BUDGET" -ge 120 ] || die "--budget must be at least 120 seconds, got $BUDGET"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || die "cannot enter $ROOT"
[ -n "$OUTDIR" ] || OUTDIR="bench/results/gpu-check-$(date -u +%Y%m%d-%H%M%S)"
if [ "$DRY" = 0 ]; then
  if [ -e "$OUTDIR" ] && [ -n "$(ls -A "$OUTDIR" 2>/dev/null)" ]; then
    die "$OUTDIR is not empty; give another --out (finished results are not overwritten)"
  fi
  mkdir -p "$OUTDIR" || die "cannot create $OUTDIR"
  OUTDIR="$(cd "$OUTDIR" && pwd)"
fi

# Triton's cache is shared by the AOT test, the report and the benchmarks: kernels compiled ahead of
# time for this GPU's target are cache hits at run time.
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-$ROOT/.aot_cache/triton}"
export PYTHONUNBUFFERED=1
export MAX_JOBS="${MAX_JOBS:-$(nproc 2>/dev/null || echo 8)}"
unset TRITON_INTERPRET

START=$SECONDS
SUMMARY=()

# Stage limits (seconds), each capped by what is left of the budget minus RESERVE for the later stages.
# Worst case (every stage using its whole limit) is 10+150+130+70+60+20 = 440 s, the default budget:
# the torch.compile baselines then get nothing; they run on the time the earlier stages leave over.
# (A stage that ignores SIGTERM is killed 10 s later: the whole script stays under 8 minutes.)
T_ENV=10; T_INSTALL=150; T_TESTS=130; T_FUSED=70; T_LARGE=60; T_AOT=20; RESERVE_AFTER_TESTS=150
SIMULATED=0  # --dry-run: seconds the stages would take at their limits

# x CMD...: run it, or under --dry-run print it (the commands inside the stages' functions)
x() {
  if [ "$DRY" = 1 ]; then printf '      '; printf ' %q' "$@"; printf '\n'; return 0; fi
  "$@"
}

export DRY PY OUTDIR ROOT

remaining() { echo $(( BUDGET - (SECONDS - START) - SIMULATED )); }

# run_stage NAME LIMIT LOGFILE COMMAND...  (LOGFILE is appended to; LIMIT is capped by the budget)
run_stage() {
  local name="$1" limit="$2" log="$3"; shift 3
  local left; left=$(remaining)
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    [ "$DRY" = 1 ] && echo "[$name] skipped: no budget left at the earlier stages' limits"
    SUMMARY+=("$name skipped (budget spent)")
    return 0
  fi
  if [ "$DRY" = 1 ]; then
    printf '[%s] at most %ss (>> %s):' "$name" "$limit" "$(basename "$log")"
    printf ' %q' "$@"
    printf '\n'
    case "$1" in install|bench_all) "$@" ;; esac  # their commands, printed by x
    SIMULATED=$(( SIMULATED + limit ))
    return 0
  fi
  local t0=$SECONDS rc
  echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$log"
  # through bash -c, so that a stage may be one of the (exported) functions below
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >>"$log" 2>&1
  rc=$?
  local what="rc $rc"
  [ "$rc" = 124 ] && what="timed out after ${limit}s"
  SUMMARY+=("$name $what, $((SECONDS - t0)) s")
  echo "== $name: $what, $((SECONDS - t0)) s" | tee -a "$log"
  return 0
}

if [ "$DRY" = 1 ]; then
  echo "gpu_check dry run: results would go to $OUTDIR; budget ${BUDGET}s; python $PY"
  LOG_ENV=env.txt LOG_INSTALL=install.log LOG_TESTS=pytest.log LOG_BENCH=bench.log
else
  LOG_ENV="$OUTDIR/env.txt" LOG_INSTALL="$OUTDIR/install.log" LOG_TESTS="$OUTDIR/pytest.log"
  LOG_BENCH="$OUTDIR/bench.log"
fi

# --- env ------------------------------------------------------------------------------------
env_info() {
  date -u
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || true
  "$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
  command -v nvcc >/dev/null && nvcc --version | tail -1
  git -C "$ROOT" log -1 --format='commit %H %cI' 2>/dev/null || echo "commit: (no git)"
  git -C "$ROOT" status --short 2>/dev/null | head -20
  echo "nproc $(nproc)"
}
export -f x env_info
run_stage env "$T_ENV" "$LOG_ENV" env_info

# --- install --------------------------------------------------------------------------------
# The extension is built for this GPU's architecture only (TORCH_CUDA_ARCH_LIST), with all cores.
install() {
  local cap=""
  [ "$DRY" = 1 ] || cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')"
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-${cap:-9.0}}"
  [ "$DRY" = 1 ] || echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
  x "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . || {
    echo "pip install -e . failed: building the extension in place instead"
    x "$PY" setup.py build_ext --inplace || return 1
  }
  [ "$DRY" = 1 ] && return 0
  # fastmi.kernels is kernels/ (setup.py's package_dir); a plain checkout needs the link
  "$PY" -c "import fastmi.kernels" 2>/dev/null || ln -sfn ../kernels fastmi/kernels
  "$PY" -m fastmi info
}
export -f install
run_stage install "$T_INSTALL" "$LOG_INSTALL" install

# --- tests ----------------------------------------------------------------------------------
# pytest-xdist spreads the files over processes when present (--dist loadfile keeps the AOT module,
# whose fixture compiles everything once, in one process).
XDIST=()
if [ "$DRY" = 1 ] || "$PY" -c "import xdist" 2>/dev/null; then XDIST=(-n 4 --dist loadfile); fi
left=$(remaining)
t_tests=$(( left - RESERVE_AFTER_TESTS )); [ "$t_tests" -gt "$T_TESTS" ] && t_tests=$T_TESTS
run_stage tests "$t_tests" "$LOG_TESTS" "$PY" -m pytest -q -m "gpu or aot" tests -p no:cacheprovider \
  --continue-on-collection-errors -rs "${XDIST[@]}" --junitxml="$OUTDIR/pytest.xml"

# --- benchmarks -----------------------------------------------------------------------------
# Every family at the sizes of its CPU benchmark (bench/bench_*.py), float32 and bfloat16; rows are
# appended as they are measured, so a stage stopped by its limit keeps what it finished.
bench_all() {  # bench_all IMPLS...
  x "$PY" bench/gpu.py --cpu-sizes --dtypes float32 bfloat16 --impls "$@" --out "$OUTDIR"
}
export -f bench_all
run_stage fused "$T_FUSED" "$LOG_BENCH" bench_all fused reference
run_stage large "$T_LARGE" "$LOG_BENCH" "$PY" bench/gpu.py --families separable --sizes 1048576 --cases infonce \
  --dtypes bfloat16 --impls fused --out "$OUTDIR"
left=$(remaining)
run_stage compiled $(( left - T_AOT - 5 )) "$LOG_BENCH" bench_all compiled
run_stage aot "$T_AOT" "$LOG_BENCH" "$PY" -m bench.aot_report --out "$OUTDIR/aot-resources.json"

# --- summary --------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  echo "files: env.txt install.log pytest.log pytest.xml bench.log gpu-<device>.jsonl aot-resources.json summary.txt"
  exit 0
fi
{
  echo "gpu_check $(date -u +%FT%TZ), total $((SECONDS - START)) s of a ${BUDGET} s budget"
  for line in "${SUMMARY[@]}"; do echo "  $line"; done
  echo "pytest: $(grep -E '(passed|failed|error).* in [0-9.]+s' "$LOG_TESTS" | tail -1)"
  echo "files: $(ls "$OUTDIR" | tr '\n' ' ')"
} | tee "$OUTDIR/summary.txt"
