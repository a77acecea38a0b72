#!/usr/bin/env bash
# GPU-machine check for mlbh: environment report, offline install, GPU tests, benchmarks.
#
#   bash scripts/gpu_check.sh [LOGDIR]
#
# LOGDIR defaults to $OUT when set, else ./gpu_logs. The machine has no network, so
# everything installs with --no-index; wheels carried in ./wheels are installed first.
# Every step runs even if an earlier one failed; the exit status is non-zero if any did.
# Env: PYTHON (interpreter, default python or python3), BENCH_TIMEOUT (s per bench, default
# 300, 0 = none), PARTS (default "tests bench": "tests" alone or "bench" alone splits the
# check over two device calls, each of which may run at most 10 minutes).
# The benchmarks are the GPU ones, scripts/bench_*_gpu.py (the others time the CPU), then
# the train step again with --cuda-graph, and with --remat-attention.

set -u
cd "$(dirname "$0")/.."
REPO_ROOT=$(pwd)

LOGDIR=${1:-${OUT:-./gpu_logs}}
mkdir -p "$LOGDIR"
LOGDIR=$(cd "$LOGDIR" && pwd)
export MLBH_GPU_LOGDIR="$LOGDIR"

if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif command -v python >/dev/null 2>&1; then
    PY=python
else
    PY=python3
fi
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
PARTS=${PARTS:-tests bench}

STEP_NAMES=()
STEP_RESULTS=()
FAILED=0

banner() {
    echo
    echo "=================================================================="
    echo "== $*"
    echo "=================================================================="
}

record() {  # record NAME RC [NOTE]
    local name=$1 rc=$2 note=${3:-}
    STEP_NAMES+=("$name")
    if [ "$rc" -eq 0 ]; then
        STEP_RESULTS+=("PASS${note:+  ($note)}")
    else
        STEP_RESULTS+=("FAIL  (exit $rc${note:+; $note})")
        FAILED=1
    fi
    echo "-- step '$name': $([ "$rc" -eq 0 ] && echo PASS || echo "FAIL (exit $rc)") ${note}"
}

# run_logged NAME LOGFILE CMD...: runs CMD, output to the terminal and LOGFILE; sets RC.
run_logged() {
    local name=$1 log=$2
    shift 2
    echo "\$ $*" | tee "$log"
    local start=$SECONDS
    "$@" 2>&1 | tee -a "$log"
    RC=${PIPESTATUS[0]}
    echo "-- '$name' finished in $((SECONDS - start)) s with exit code $RC" | tee -a "$log"
}

banner "mlbh GPU check  $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "repo:    $REPO_ROOT"
echo "logdir:  $LOGDIR"
echo "python:  $(command -v "$PY") ($("$PY" --version 2>&1))"
echo "host:    $(uname -a)"
if command -v git >/dev/null 2>&1 && git rev-parse --git-dir >/dev/null 2>&1; then
    echo "commit:  $(git rev-parse HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) changed file(s)"
fi

# ---------------------------------------------------------------- environment
banner "nvidia-smi"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi 2>&1 | tee "$LOGDIR/nvidia_smi.log"
    record "nvidia-smi" "${PIPESTATUS[0]}"
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>&1 \
        | tee -a "$LOGDIR/nvidia_smi.log"
else
    echo "nvidia-smi not found on PATH"
    record "nvidia-smi" 1 "not found"
fi

banner "versions"
"$PY" - <<'EOF' 2>&1 | tee "$LOGDIR/versions.log"
import importlib, platform
print(f"python      {platform.python_version()}")
for name in ("pip", "setuptools", "wheel", "numpy", "numba", "click", "pytest",
             "ml_dtypes", "cupy", "torch"):
    try:
        module = importlib.import_module(name)
        print(f"{name:<11} {getattr(module, '__version__', '?')}")
    except Exception as exc:
        print(f"{name:<11} MISSING ({type(exc).__name__}: {exc})")
try:
    import cupy
    print(f"cupy CUDA runtime  {cupy.cuda.runtime.runtimeGetVersion()}")
    print(f"CUDA driver        {cupy.cuda.runtime.driverGetVersion()}")
    print(f"device count       {cupy.cuda.runtime.getDeviceCount()}")
    device = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(device.id)
    print(f"device 0           {props['name'].decode() if isinstance(props['name'], bytes) else props['name']}"
          f"  sm_{device.compute_capability}  {props['totalGlobalMem'] / 2**30:.1f} GiB")
except Exception as exc:
    print(f"cupy device query failed: {type(exc).__name__}: {exc}")
try:
    from cupy_backends.cuda.libs import nvrtc
    print(f"NVRTC              {nvrtc.getVersion()}  archs {nvrtc.getSupportedArchs()}")
except Exception as exc:
    print(f"NVRTC bindings     unavailable ({type(exc).__name__}: {exc})")
EOF

# ---------------------------------------------------------------- install
if compgen -G "wheels/*.whl" >/dev/null; then
    banner "install carried wheels (wheels/*.whl)"
    ls -l wheels/*.whl
    run_logged "install wheels" "$LOGDIR/install_wheels.log" \
        "$PY" -m pip install --no-index --find-links wheels wheels/*.whl
    record "install wheels" "$RC"
fi

banner "ml_dtypes check"
if "$PY" -c "import ml_dtypes; print('ml_dtypes', ml_dtypes.__version__)"; then
    echo "ml_dtypes OK"
else
    echo "WARNING: ml_dtypes is NOT importable. mlbh.tracer.dtypes (bfloat16) needs it;"
    echo "WARNING: tests touching bf16 dtypes will fail. Carry its wheel in ./wheels/."
fi

banner "install mlbh (editable, offline, no deps)"
run_logged "install mlbh" "$LOGDIR/install_mlbh.log" \
    "$PY" -m pip install --no-deps --no-build-isolation --no-index -e .
if [ "$RC" -eq 0 ]; then
    record "install mlbh" 0
else
    # Still run the tests: expose the mlbh namespace through symlinks built from the
    # package_dir mapping in setup.cfg (e.g. setuptools without `wheel` cannot build).
    record "install mlbh" "$RC" "tests below use a PYTHONPATH fallback"
    FALLBACK_SITE=$(mktemp -d)
    "$PY" - "$FALLBACK_SITE" <<'EOF' 2>&1 | tee -a "$LOGDIR/install_mlbh.log"
import configparser, os, sys
site = sys.argv[1]
config = configparser.ConfigParser()
config.read("setup.cfg")
for line in config["options"]["package_dir"].strip().splitlines():
    package, folder = (part.strip() for part in line.split("="))
    target = os.path.join(site, *package.split("."))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.symlink(os.path.abspath(folder), target)
    print(f"fallback: {package} -> {os.path.abspath(folder)}")
EOF
    export PYTHONPATH="$FALLBACK_SITE${PYTHONPATH:+:$PYTHONPATH}"
    echo "PYTHONPATH=$PYTHONPATH"
fi
"$PY" - <<'EOF' 2>&1 | tee -a "$LOGDIR/install_mlbh.log"
try:
    from mlbh.codegen import nvrtc, cuda_device
    print("mlbh imports from", nvrtc.__file__)
    support = nvrtc.cubin_supported()
    print("cubin_supported:", bool(support), support.reason)
    print("CUDA include dir:", nvrtc.cuda_include_dir())
    print("cuda_available:", cuda_device.cuda_available(), cuda_device.unavailable_reason())
    if cuda_device.cuda_available():
        print("device arch:", cuda_device.device_arch(), cuda_device.device_name())
except Exception as exc:
    print(f"mlbh self-check failed: {type(exc).__name__}: {exc}")
EOF

# ---------------------------------------------------------------- GPU tests
if [[ " $PARTS " == *" tests "* ]]; then
    banner "pytest -m gpu"
    run_logged "gpu tests" "$LOGDIR/gpu_tests.log" "$PY" -m pytest -m gpu -v -rs
    if [ "$RC" -eq 0 ] && ! grep -qE "[0-9]+ passed" "$LOGDIR/gpu_tests.log"; then
        record "gpu tests" 1 "no gpu test passed (all skipped?)"
    elif [ "$RC" -eq 5 ]; then
        record "gpu tests" 5 "no tests collected"
    else
        record "gpu tests" "$RC"
    fi
fi

# ---------------------------------------------------------------- benchmarks
shopt -s nullglob
BENCHES=()
if [[ " $PARTS " == *" bench "* ]]; then
    BENCHES=(scripts/bench_*_gpu.py)
    if [ ${#BENCHES[@]} -eq 0 ]; then
        banner "benchmarks"
        echo "no scripts/bench_*_gpu.py found; nothing to run"
    fi
fi
# each bench with its defaults; then the train step once more, with CUDA-graph replay beside
# plain launches and torch eager (a crash there cannot take the default run's figures)
RUNS=()
for bench in "${BENCHES[@]}"; do
    RUNS+=("$(basename "$bench" .py)|$bench")
done
if [ ${#BENCHES[@]} -gt 0 ] && [ -f scripts/bench_train_gpu.py ]; then
    RUNS+=("bench_train_gpu_cuda_graph|scripts/bench_train_gpu.py --cuda-graph --no-compile")
    RUNS+=("bench_train_gpu_remat_attention|scripts/bench_train_gpu.py --remat-attention --no-compile --no-torch")
fi
for run in "${RUNS[@]}"; do
    name=${run%%|*}
    read -r -a cmd <<< "${run#*|}"
    banner "benchmark $name"
    if [ "$BENCH_TIMEOUT" != "0" ] && command -v timeout >/dev/null 2>&1; then
        run_logged "$name" "$LOGDIR/$name.log" timeout "$BENCH_TIMEOUT" "$PY" "${cmd[@]}"
    else
        run_logged "$name" "$LOGDIR/$name.log" "$PY" "${cmd[@]}"
    fi
    if [ "$RC" -eq 124 ]; then
        record "$name" "$RC" "timed out after ${BENCH_TIMEOUT} s"
    else
        record "$name" "$RC"
    fi
done

# ---------------------------------------------------------------- summary
banner "summary"
{
    for i in "${!STEP_NAMES[@]}"; do
        printf '%-28s %s\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}"
    done
    echo
    if [ "$FAILED" -eq 0 ]; then echo "ALL STEPS PASSED"; else echo "SOME STEPS FAILED"; fi
    echo "logs in $LOGDIR"
} | tee "$LOGDIR/summary.txt"
exit "$FAILED"
