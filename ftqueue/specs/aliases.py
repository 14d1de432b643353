"""The names other tools give ftqueue's settings (the HF Trainer, peft, common scripts).

One table for the command line (``--learning_rate`` -> ``--lr``) and sweep files
(``learning_rate:`` -> ``lr``). Keys are written with dashes; underscores and upper case are
folded before the lookup, so ``--per_device_train_batch_size`` and
``--per-device-train-batch-size`` are one entry.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Another tool's flag -> ftqueue's.
ALIASES = {
    # transformers.TrainingArguments
    "--learning-rate": "--lr",
    "--num-train-epochs": "--epochs",
    "--per-device-train-batch-size": "--batch-size",
    "--per-gpu-train-batch-size": "--batch-size",
    "--train-batch-size": "--batch-size",
    "--per-device-eval-batch-size": "--eval-batch-size",
    "--per-gpu-eval-batch-size": "--eval-batch-size",
    "--gradient-accumulation-steps": "--grad-accum",
    "--gradient-accumulation": "--grad-accum",
    "--accumulation-steps": "--grad-accum",
    "--warmup": "--warmup-ratio",
    "--data-seed": "--split-seed",
    # the HF example scripts (run_glue.py, run_classification.py)
    "--model-name-or-path": "--model",
    "--model-name": "--model",
    "--train-file": "--dataset",
    "--data": "--dataset",
    "--text-column-name": "--text-column",
    "--label-column-name": "--label-column",
    "--max-seq-length": "--max-length",
    "--max-seq-len": "--max-length",
    "--max-len": "--max-length",
    "--max-train-samples": "--train-samples",
    "--max-eval-samples": "--eval-samples",
    # peft.LoraConfig and the scripts around it
    "--lora-r": "--r",
    "--lora-rank": "--r",
    "--rank": "--r",
    "--lora-alpha": "--alpha",
    "--lora-dropout": "--dropout",
    "--lora-bias": "--bias",
    "--lora-target-modules": "--target-modules",
    "--modules": "--target-modules",
    "--target-module": "--target-modules",
    # other common spellings
    "--head-learning-rate": "--head-lr",
    "--num-epochs": "--epochs",
    "--epoch": "--epochs",
    "--batch": "--batch-size",
    "--bs": "--batch-size",
    "--seeds": "--seed",
    "--adapter": "--adapter-job",
}


def folded(name: str) -> str:
    """``--Per_Device_Train_Batch_Size`` -> ``--per-device-train-batch-size``."""
    return "--" + name.lstrip("-").replace("_", "-").lower()


def own_flag(name: str, known: Iterable[str]) -> str | None:
    """ftqueue's flag for another tool's ``name``, if it is one of ``known``; None if not."""
    known = set(known)
    plain = folded(name.split("=", 1)[0])
    for candidate in (ALIASES.get(plain), plain):
        if candidate in known and candidate != name:
            return candidate
    return None


def own_field(name: str, known: Iterable[str]) -> str | None:
    """The same for a spec field as a sweep file writes it (``learning_rate`` -> ``lr``)."""
    found = own_flag(name, ("--" + k.replace("_", "-") for k in known))
    return None if found is None else found[2:].replace("-", "_")
