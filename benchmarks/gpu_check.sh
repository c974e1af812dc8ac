#!/usr/bin/env bash
# Every CUDA check in one run on a GPU machine that has python3 + torch but no rasterio (and no network):
#   0. installs the carried wheels (rasterio, TorchGeo and their missing dependencies) into --site and prints versions;
#   a. the tests marked `cuda` (tests/test_cuda.py and the models' CUDA tests), then benchmarks/cuda_smoke.py
#      (predict_raster on the device against the CPU class map: fp32 identical up to near-ties, bf16 disagreement);
#   b. benchmarks/throughput.py --device cuda --bands 4,13,200 (TorchGeo included when its wheels are there).
# Every stage runs whatever happened before it, each under its own `timeout`, all within --budget seconds; logs are
# written with tee into --out as they are produced, so they survive a kill. Exit status: the number of stages that
# did not exit 0 (a test failure, a smoke mismatch, a missed throughput target, a timeout or a crash).
#
#   bash benchmarks/gpu_check.sh                                  # on the GPU machine: wheels in .whl, logs in $OUT
#   bash benchmarks/gpu_check.sh --stages b --budget 300          # only the throughput stage (a1, a2, b)
#   GPU_CHECK_CAP_SCALE=6 bash benchmarks/gpu_check.sh --device cpu --quick --wheels .whl311 --budget 3000 \
#       --out /tmp/gpu-check --site /tmp/site311                 # rehearsal on a slow CPU (stage caps x 6)
#
# Files written to --out (at most 8, flat): env.txt, tests.log, smoke.log, smoke.json, throughput.log, summary.txt.
set -u -o pipefail

device=cuda
wheels=.whl
out=${OUT:-$PWD/gpu-check-out}
site=/tmp/site
quick=0
budget=480
stages=a1,a2,b
while [ $# -gt 0 ]; do
    case $1 in
        --device) device=$2; shift 2 ;;
        --wheels) wheels=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --site) site=$2; shift 2 ;;
        --budget) budget=$2; shift 2 ;;
        --quick) quick=1; shift ;;
        --stages) stages=$2; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$out"
deadline=$((SECONDS + budget))
summary=$out/summary.txt
: >"$summary"
failed=0

note() { echo "$*" | tee -a "$summary"; }

# run_stage NAME LOG CAP_SECONDS COMMAND...: run under timeout (at most CAP, never past the deadline), log with tee
run_stage() {
    local name=$1 log=$2 cap=$(($3 * ${GPU_CHECK_CAP_SCALE:-1})) t0=$SECONDS left rc
    shift 3
    case ",$stages," in *",${name%% *},"*) ;; *) note "$name: skipped (--stages $stages)"; return ;; esac
    left=$((deadline - SECONDS - 5))
    [ "$cap" -gt "$left" ] && cap=$left
    if [ "$cap" -lt 20 ]; then
        note "$name: NOT RUN (only ${left}s of the ${budget}s budget left)"
        failed=$((failed + 1))
        return
    fi
    echo "\$ $*   # timeout ${cap}s" | tee -a "$out/$log"
    timeout -k 10 "$cap" "$@" 2>&1 | tee -a "$out/$log"
    rc=${PIPESTATUS[0]}
    # the closing line says what an exit status means: pytest's counts, throughput's "overall: PASS/FAIL (n checks)"
    last=$(grep -E '^ *(overall:|=+ .*(passed|failed|error)|smoke:|FAILURES:)' "$out/$log" | tail -1 | sed 's/^ *//')
    case $rc in
        0) note "$name: OK in $((SECONDS - t0))s -- $last" ;;
        124|137) note "$name: TIMEOUT after $((SECONDS - t0))s (cap ${cap}s) -- $last"; failed=$((failed + 1)) ;;
        *) note "$name: FAILED (exit $rc) after $((SECONDS - t0))s -- ${last:-no closing line: crashed}"
           failed=$((failed + 1)) ;;
    esac
}

# --- 0. wheels and versions ---------------------------------------------------------------------------------------
{
    echo "== install $wheels -> $site"
    ls -la "$wheels" 2>&1
    if ls "$wheels"/*.whl >/dev/null 2>&1; then
        # --ignore-requires-python: lets a CPU rehearsal on an older Python install the same wheel set
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --ignore-requires-python \
            --target "$site" "$wheels"/*.whl && echo "installed" || echo "WHEEL INSTALL FAILED"
    else
        echo "no wheels in $wheels"
    fi
} 2>&1 | tee "$out/env.txt"
export PYTHONPATH=$PWD:$site${PYTHONPATH:+:$PYTHONPATH}
{
    echo "== machine"
    uname -a; nproc; free -g 2>/dev/null; df -h /tmp /dev/shm 2>/dev/null
    command -v nvidia-smi >/dev/null && nvidia-smi
    echo "== versions"
    timeout 120 $PY - <<'EOF'
import importlib, platform, sys, warnings
warnings.simplefilter("ignore")
print("python", platform.python_version(), sys.executable)
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    free, total = torch.cuda.mem_get_info(0)
    print("gpu", p.name, f"cc {p.major}.{p.minor}", f"{p.multi_processor_count} SMs", f"{total / 2**30:.1f} GiB",
          f"{free / 2**30:.1f} GiB free", "bf16", torch.cuda.is_bf16_supported())
for name in ("rasterio", "torchvision", "numpy", "affine", "pyproj", "shapely", "pyogrio", "geopandas", "pandas",
             "torchgeo", "timm", "sklearn", "psutil", "triton", "onnx", "onnxruntime", "click", "safetensors"):
    try:
        m = importlib.import_module(name)
        extra = f" (GDAL {m.__gdal_version__})" if name == "rasterio" else ""
        print(f"{name} {getattr(m, '__version__', '?')}{extra} from {m.__file__}")
    except Exception as exc:
        print(f"{name}: NOT IMPORTABLE ({type(exc).__name__}: {exc})")
try:
    import torchgeo.datasets, torchgeo.samplers  # noqa: F401,E401
    print("torchgeo.datasets + samplers import: OK")
except Exception as exc:
    print(f"torchgeo.datasets + samplers: NOT IMPORTABLE ({type(exc).__name__}: {exc})")
import geoseg.inference.predict  # noqa: F401
print("geoseg.inference.predict import: OK")
EOF
} 2>&1 | tee -a "$out/env.txt"
note "env: done in ${SECONDS}s (see env.txt)"

# --- a. CUDA tests and the smoke test --------------------------------------------------------------------------
export GEOSEG_TEST_DEVICE=$device
run_stage "a1 cuda tests" tests.log 180 \
    $PY -m pytest -p no:cacheprovider -m cuda -rA -s --durations=10 \
    tests/test_cuda.py tests/models/test_contract.py tests/models/test_crf.py
if [ "$quick" = 1 ]; then smoke=(--size 512 --train-seconds 5); else smoke=(--size 2048 --train-seconds 20); fi
run_stage "a2 smoke" smoke.log 90 $PY benchmarks/cuda_smoke.py --device "$device" "${smoke[@]}" --json "$out/smoke.json"

# --- b. throughput -----------------------------------------------------------------------------------------------
# GPU sizes: every timed pass lasts seconds, not a fraction of one (H100-class figures: ~370 MPix/s model-only,
# ~240 MPix/s 16-thread decode): 4 bands 32768² (1.07 GPix), 13 bands 18048², 200 bands 4608² (each ~4.3e9
# samples, ~6.5 GB of DEFLATE on disk, deleted after use); single-thread decode and the naive loop stop after 10 s,
# TorchGeo after 30 s; (4) is also timed with 8 reader threads (the former default). Disk: samples shrink to fit a
# quarter of the free space.
free_kb=$(df -Pk /tmp | awk 'NR==2 {print $4}')
samples=$($PY -c "print(f'{min(4.3e9, ${free_kb:-0} * 1024 / 4 / 1.6):.3g}')")
if [ "$quick" = 1 ]; then
    tp=(--size 768 --tile 256 --batch 2 --width 8 --max-samples 2e7 --min-seconds 1 --max-seconds 3
        --torchgeo-seconds 10 --repeat 1 --loader-workers 2 --also-workers 2)
else
    tp=(--size 32768 --batch 16 --max-samples "$samples" --min-seconds 5 --max-seconds 10 --torchgeo-seconds 30
        --also-workers 8)
fi
run_stage "b throughput" throughput.log 330 $PY benchmarks/throughput.py --device "$device" --bands 4,13,200 \
    "${tp[@]}" --delete-rasters --workdir /tmp/geoseg-bench

note "total: ${SECONDS}s, $failed stage(s) not OK"
exit $failed
