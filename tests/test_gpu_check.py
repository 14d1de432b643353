"""What of bench/gpu_check.sh runs without a GPU: its scripts parse, its summary reads partial
results (a failed step leaves its part out) and names the GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_scripts_parse() -> None:
    for script in ("gpu_check.sh", "gpu_bundle.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "bench" / script)], check=True)


def test_the_summary_takes_what_the_steps_left(tmp_path: Path) -> None:
    run = {"samples_per_second": 400.0, "train_seconds": 21.0, "test_accuracy": 0.5}
    fast = {**run, "samples_per_second": 4000.0, "train_seconds": 8.0}
    (tmp_path / "train_bert_base.json").write_text(
        json.dumps(
            {
                "device_name": "NVIDIA H200",
                "model": "random-init BERT-base",
                "recipe": "gpu",
                "train_rows": 8456,
                "runs": {"original (HF Trainer, fp32, batch 16)": run, "ftqueue GPU": fast},
                "throughput_ratio": 10.0,
                "accuracy_difference": 0.0,
            }
        )
    )
    (tmp_path / "steps.tsv").write_text("pytest_gpu\t0\t61\npredict\t124\t100\n")
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_summary.py"), str(tmp_path)], check=True
    )
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.startswith("## GPU check on NVIDIA H200")
    assert "| predict | 124 | 100 |" in md and "**10.00x**" in md
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["device"] == "NVIDIA H200" and "predict" not in summary
