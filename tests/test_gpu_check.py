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


def test_the_summary_tables_the_compiled_steps_against_eager_and_original(
    tmp_path: Path,
) -> None:
    original = {"samples_per_second": 500.0, "train_seconds": 20.0, "test_accuracy": 0.8}
    eager = {**original, "samples_per_second": 4000.0, "peak_cuda_mb": 1500.0}
    (tmp_path / "train_minilm.json").write_text(
        json.dumps(
            {
                "device_name": "NVIDIA H200", "model": "minilm", "recipe": "gpu",
                "train_rows": 8456,
                "runs": {"original (HF Trainer, fp32, batch 16)": original, "ftqueue GPU": eager},
            }
        )
    )  # fmt: skip
    runs = [
        {"samples_per_second": 2000.0, "compile_seconds": 40.0, "peak_cuda_mb": 1200.0},
        *[{"samples_per_second": 8000.0, "compile_seconds": 0.0, "peak_cuda_mb": 1100.0}] * 9,
    ]
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from train_throughput import compile_summary
    finally:
        sys.path.remove(str(ROOT / "bench"))
    summary = compile_summary(runs, "reduce-overhead")
    assert summary["compile_seconds_per_job"] == 4.0 and summary["jobs"] == 10
    assert summary["samples_per_second_warm"] == 8000.0 and summary["peak_cuda_mb"] == 1200.0
    (tmp_path / "compiled_minilm_reduce-overhead.json").write_text(
        json.dumps({"device_name": "NVIDIA H200", "model": "minilm", **summary})
    )
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_summary.py"), str(tmp_path)], check=True
    )
    md = (tmp_path / "gpu_check.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| minilm | reduce-overhead"))
    # warm 8,000/s: 16x the original's 500, 2x the eager defaults' 4,000; 40 s once, 4 per job.
    assert (
        row
        == "| minilm | reduce-overhead | 10 | 2,000 | 8,000 | 16.00x | 2.00x | 40.0 | 4.0 | 1,200 |"
    )
    assert "| ftqueue GPU | 4,000 | 20.0 | 0.8000 | 1,500 |" in md
