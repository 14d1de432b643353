#!/bin/sh
# The image is the app: with no arguments (or only options) it runs `ftqueue worker`, and any
# other ftqueue command runs as given, e.g. `docker compose run --rm cli submit lora ...`.
set -eu

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
  set -- worker "$@"
fi

# Compose gives every replica of a scaled service the same GPUs (a device reservation with
# `count: 1` is always GPU 0), so replicas share out the GPUs themselves: each takes the first
# GPU whose lock file it can flock. The lock lives as long as this process (the open fd 9 is
# inherited through exec), and the kernel drops it when the container stops, however it stops.
lock_dir="${FTQUEUE_GPU_LOCK_DIR:-}"
case " $* " in
  *" --gpus "* | *" --gpus="*) lock_dir="" ;;  # the GPUs were chosen by hand
esac
if [ "$1" = worker ] && [ -n "$lock_dir" ] && [ -z "${CUDA_VISIBLE_DEVICES+set}" ] \
  && command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr -d ' ') || gpus=""
  if [ -n "$gpus" ]; then
    mkdir -p "$lock_dir"
    chosen=""
    for gpu in $gpus; do
      exec 9>"$lock_dir/gpu-$gpu.lock"
      if flock -n 9; then
        chosen="$gpu"
        break
      fi
      exec 9>&-
    done
    if [ -z "$chosen" ]; then
      all=$(printf '%s\n' "$gpus" | paste -sd, -)
      echo "ftqueue worker: every GPU here ($all) already has a worker; run one replica per GPU." >&2
      exit 3
    fi
    echo "ftqueue worker: this replica takes GPU $chosen" >&2
    shift
    set -- worker --gpus "$chosen" "$@"
  fi
fi

exec ftqueue "$@"
