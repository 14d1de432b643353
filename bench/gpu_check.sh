#!/usr/bin/env bash
# The GPU verification in one command: install, GPU tests through Redis and a real worker, the
# training benchmark (original style against ftqueue's GPU defaults, eager and with the
# compiled fixed-shape step: samples/s, compile time alone and over a 10-job sweep in one warm
# process, peak memory; BERT-base and minilm), operator and kernel counts per sample,
# prediction throughput; one JSON file and one markdown table naming the GPU.
#
#   bench/gpu_bundle.sh                 # first, on a machine with the dev install (fills .gpu/)
#   bench/gpu_check.sh                  # on the GPU machine, from the repository root
#   bench/gpu_check.sh --cpu-dry-run    # the same steps on a CPU with tiny sizes
#
# Each step has its own time limit; a failing step is logged and the next one runs. Results go
# to bench/results/ as they come, and to $OUT too when it is set. The whole run stays under
# 8 minutes on one GPU (GPU_CHECK_BUDGET seconds; a step that would not fit is cut or skipped,
# the least needed last).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CPU=${FTQUEUE_GPU_CHECK_CPU:-0}
[[ "${1:-}" == "--cpu-dry-run" ]] && CPU=1
BUNDLE=${FTQUEUE_GPU_BUNDLE:-$ROOT/.gpu}
RESULTS=$ROOT/bench/results
# A dry run's figures are no GPU's: they go where they cannot be mistaken for (or committed as) one.
[[ "$CPU" == 1 ]] && RESULTS=$ROOT/bench/results/cpu-dry-run
BUDGET=${GPU_CHECK_BUDGET:-460}
WORK=$(mktemp -d /tmp/ftqueue-gpu-check.XXXXXX)
mkdir -p "$RESULTS/logs"
rm -f "$RESULTS"/logs/*.log "$RESULTS/steps.tsv"
LOG=$RESULTS/gpu_check.log
: >"$LOG"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export FTQUEUE_GPU_CHECK_CPU=$CPU FTQUEUE_GPU_CHECK_RESULTS=$RESULTS
PY=python3
[[ -n "${VIRTUAL_ENV:-}" ]] && PY=python

say() { echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG"; }

publish() {
  # $OUT gets a few files: the summary, the step table, the log, and everything as a tar.
  [[ -z "${OUT:-}" ]] && return 0
  cp -f "$LOG" "$OUT/" 2>/dev/null
  cp -f "$RESULTS/steps.tsv" "$OUT/" 2>/dev/null
  cp -f "$RESULTS"/gpu_check.json "$RESULTS"/gpu_check.md "$OUT/" 2>/dev/null
  tar -C "$RESULTS" -czf "$OUT/results.tar.gz" . 2>/dev/null
  return 0
}

# step NAME SECONDS COMMAND...: run with a limit, log its output, record its status and time.
step() {
  local name=$1 limit=$2
  shift 2
  # GPU_CHECK_STEPS="pytest_gpu predict" reruns only those (set-up and summary always run).
  if [[ -n "${GPU_CHECK_STEPS:-}" && " environment install model redis summary $GPU_CHECK_STEPS " != *" $name "* ]]; then
    return 0
  fi
  local left=$((BUDGET - SECONDS))
  if ((left < 20)); then
    say "SKIP $name: ${left}s left of the ${BUDGET}s budget"
    printf '%s\tskipped\t0\n' "$name" >>"$RESULTS/steps.tsv"
    LAST_RC=skipped
    publish
    return 0
  fi
  ((limit > left)) && limit=$left
  say "BEGIN $name (limit ${limit}s)"
  local start=$SECONDS
  timeout --kill-after=15 "$limit" "$@" >"$RESULTS/logs/$name.log" 2>&1
  local rc=$?
  local took=$((SECONDS - start))
  tail -n 25 "$RESULTS/logs/$name.log" | sed 's/^/    /' >>"$LOG"
  if ((rc == 0)); then say "OK $name (${took}s)"; else say "FAILED $name: exit $rc (${took}s)"; fi
  printf '%s\t%s\t%s\n' "$name" "$rc" "$took" >>"$RESULTS/steps.tsv"
  LAST_RC=$rc
  publish
  return 0
}

cleanup() {
  if [[ -f "$WORK/redis.pid" ]]; then kill "$(cat "$WORK/redis.pid")" 2>/dev/null; fi
  publish
}
trap cleanup EXIT

say "gpu_check: cpu dry run=$CPU, bundle=$BUNDLE, results=$RESULTS, work=$WORK"

environment() {
  uname -a
  nvidia-smi || echo "no nvidia-smi"
  # torch.compile's GPU kernels (triton) build their launchers with the host's C compiler.
  command -v gcc cc || echo "no C compiler: the compiled steps will fail"
  $PY - <<'PY'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__)
print("cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "bf16", torch.cuda.is_bf16_supported())
for name in ("transformers", "peft", "celery", "sqlalchemy", "alembic", "redis", "triton"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as exc:
        print(name, "MISSING", exc)
PY
}

install() {
  if [[ "$CPU" == 1 ]]; then
    # The dry run uses the current environment; it checks that the wheels install for cp312.
    local py312
    py312=$(PYENV_VERSION=3.12.1 command -v python3.12 2>/dev/null) || true
    if [[ -n "$py312" ]]; then
      PYENV_VERSION=3.12.1 python3.12 -m pip install -q --no-index --no-deps --no-compile \
        --target "$WORK/site312" "$BUNDLE"/wheels/*.whl && echo "cp312 wheels install"
    fi
    return 0
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    "$BUNDLE"/wheels/*.whl || return 1
  python3 -c "import ftqueue.migrations.versions" || return 1
}

model_and_data() {
  $PY bench/gpu_model.py unpack "$BUNDLE/minilm" "$WORK/minilm" || return 1
  $PY - "$WORK/minilm" <<'PY'
import sys
from transformers import AutoModel, AutoTokenizer
AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModel.from_pretrained(sys.argv[1])
print("minilm restored:", sum(p.numel() for p in model.parameters()), "parameters")
PY
}

redis_server() {
  # Python's tarfile when the image's tar has no xz.
  tar -C "$WORK" -xJf "$BUNDLE/redis.tar.xz" ||
    $PY -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" \
      "$BUNDLE/redis.tar.xz" "$WORK" || return 1
  LD_LIBRARY_PATH=$WORK/redis/lib "$WORK/redis/redis-server" --port "$REDIS_PORT" \
    --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --pidfile "$WORK/redis.pid" \
    --logfile "$WORK/redis.log" || return 1
  for _ in $(seq 50); do
    $PY -c "import redis; redis.Redis(port=$REDIS_PORT).ping()" 2>/dev/null && {
      echo "redis-server answers on port $REDIS_PORT"
      return 0
    }
    sleep 0.2
  done
  cat "$WORK/redis.log"
  return 1
}

# The steps below run under `timeout`, in a shell of their own: they read these.
export -f environment install model_and_data redis_server
export CPU BUNDLE WORK PY ROOT

REDIS_PORT=$($PY -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
export REDIS_PORT
step environment 60 bash -c environment
step install 90 bash -c install
if [[ "$CPU" != 1 ]]; then
  export PYTHONPATH=/tmp/site-ftqueue:/tmp/site:$ROOT
fi
step model 60 bash -c model_and_data
# A half-written copy would fail every job; without the copy the wheel is used where installed.
if [[ "$LAST_RC" == 0 ]]; then
  export FTQUEUE_MINILM_DIR=$WORK/minilm
else
  say "minilm copy not ready: the alias minilm falls back to its wheel, if installed"
fi
export FTQUEUE_MOVIE_SNIPPETS_FILE=$BUNDLE/movieReviewSnippets_GroundTruth.txt
step redis 30 bash -c redis_server
export FTQUEUE_TEST_REDIS=redis://127.0.0.1:$REDIS_PORT FTQUEUE_TEST_REDIS_DB=0

step pytest_gpu 240 $PY -m pytest -m gpu tests/test_gpu.py tests/test_gpu_shapes.py -v -p no:cacheprovider -o addopts="" \
  --timeout 230 --junitxml "$RESULTS/logs/pytest_gpu.xml"

if [[ "$CPU" == 1 ]]; then
  SIZES=(--train-samples 32 --eval-samples 16)
  DEVICE=(--device cpu)
  ACCURACY=(--train-samples 64 --eval-samples 64 --seeds 0)
  # The compiled path's code end to end; no code generation (inductor) on the CPU.
  COMPILE_MODES=(aot_eager)
  AUTOTUNE=()
  JOBS=(--jobs 2 --train-samples 32 --eval-samples 16)
  BERT_JOBS=("${JOBS[@]}")
  SWEEP=(--train-samples 64 --eval-samples 64 --seeds 0)
  CANDIDATES=("epochs=1")
  OPS=(--train-samples 0 --eval-samples 16 --ops-steps 1,2)
  PREDICT=(--rows 200 --train-samples 64 --pipeline-batch-size 0)
else
  SIZES=(--train-samples 0)
  DEVICE=(--device cuda)
  ACCURACY=(--train-samples 0 --seeds 0,1)
  # CUDA graphs over inductor's kernels; then inductor's autotuned kernels without graphs
  # (long to compile: two jobs only, the least needed step of the compiled ones).
  COMPILE_MODES=(reduce-overhead)
  AUTOTUNE=(max-autotune-no-cudagraphs)
  # A sweep of 10 one-epoch jobs on one warm process: the first compiles, the others reuse.
  JOBS=(--jobs 10 --train-samples 0)
  BERT_JOBS=(--jobs 10 --train-samples 2000)
  SWEEP=(--train-samples 0 --seeds 0,1,2)
  # Neighbours of the GPU recipe, for the record: more epochs, or twice the batch (the step
  # time is nearly flat in the batch while launches bound it).
  CANDIDATES=("epochs=6" "batch_size=512,lr=4e-3,head_lr=4e-2,epochs=8")
  OPS=(--train-samples 0 --eval-samples 64 --ops-steps 3,6)
  PREDICT=(--rows 0 --device cuda --pipeline-batch-size 0)
fi
step train_bert_base 150 $PY bench/train_throughput.py "${DEVICE[@]}" --random-init-bert-base \
  "${SIZES[@]}" --json "$RESULTS/train_bert_base.json"
for mode in "${COMPILE_MODES[@]}"; do
  step "compiled_bert_base_$mode" 110 $PY bench/train_throughput.py "${DEVICE[@]}" \
    --random-init-bert-base --only ftqueue --compile "$mode" --set epochs=1 "${BERT_JOBS[@]}" \
    --json "$RESULTS/compiled_bert_base_$mode.json"
done
step train_minilm_accuracy 100 $PY bench/train_throughput.py "${DEVICE[@]}" "${ACCURACY[@]}" \
  --json "$RESULTS/train_minilm.json"
for mode in "${COMPILE_MODES[@]}"; do
  step "compiled_minilm_$mode" 90 $PY bench/train_throughput.py "${DEVICE[@]}" --only ftqueue \
    --compile "$mode" --set epochs=1 "${JOBS[@]}" --json "$RESULTS/compiled_minilm_$mode.json"
done
for mode in "${AUTOTUNE[@]}"; do
  step "compiled_minilm_$mode" 90 $PY bench/train_throughput.py "${DEVICE[@]}" --only ftqueue \
    --compile "$mode" --set epochs=1 --jobs 2 --train-samples 0 \
    --json "$RESULTS/compiled_minilm_$mode.json"
done
# BERT-base throughput at twice the default batch, one epoch: how much the batch still buys.
step bert_base_batch512 60 $PY bench/train_throughput.py "${DEVICE[@]}" --random-init-bert-base \
  "${SIZES[@]}" --only ftqueue --set batch_size=512,epochs=1 --json "$RESULTS/sweep_bert_base.json"
step predict 100 $PY bench/predict_throughput.py "${PREDICT[@]}" --json "$RESULTS/predict.json"
for i in "${!CANDIDATES[@]}"; do
  step "sweep_$i" 75 $PY bench/train_throughput.py "${DEVICE[@]}" "${SWEEP[@]}" --only ftqueue \
    --set "${CANDIDATES[$i]}" --json "$RESULTS/sweep_$i.json"
done
step ops_per_sample 90 $PY bench/train_throughput.py "${DEVICE[@]}" "${OPS[@]}" --ops \
  --json "$RESULTS/ops.json"
# The summary runs whatever the budget says: it only reads what the steps wrote.
BUDGET=$((SECONDS + 60)) step summary 30 $PY bench/gpu_summary.py "$RESULTS"
cat "$RESULTS/gpu_check.md" 2>/dev/null | tee -a "$LOG"
say "gpu_check done in ${SECONDS}s"
