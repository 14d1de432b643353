"""Gather what bench/gpu_check.sh measured into gpu_check.json and a markdown table.

    python bench/gpu_summary.py bench/results

Reads whatever of train_bert_base.json, train_minilm.json, compiled_*.json, sweep_*.json,
ops.json, predict.json, gpu_tests.json and steps.tsv is there (a step that failed leaves its
part out).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _steps(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    return [{"step": r[0], "exit": r[1], "seconds": r[2]} for r in rows if len(r) == 3]


def _nvidia_smi_name() -> str:
    """The GPU's name when no benchmark got far enough to record it."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "no GPU (a dry run?)"
    return ", ".join(line.strip() for line in out.splitlines() if line.strip()) or "unknown GPU"


def _runs_table(title: str, report: dict[str, Any]) -> list[str]:
    lines = [
        f"### {title}: {report['model']}, {report['train_rows']:,} train rows",
        "",
        "| run | train samples/s | train s | test acc | peak CUDA MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, r in report.get("runs", {}).items():
        lines.append(
            f"| {label} | {r['samples_per_second']:,.0f} | {r['train_seconds']:.1f} "
            f"| {r['test_accuracy']:.4f} | {_mib(r.get('peak_cuda_mb'))} |"
        )
    lines.append("")
    if "throughput_ratio" in report:
        lines.append(
            f"Throughput ratio (ftqueue {report['recipe']} defaults / original style): "
            f"**{report['throughput_ratio']:.2f}x**; accuracy difference "
            f"{report['accuracy_difference']:+.4f}."
        )
    if "ftqueue_test_accuracy_mean" in report:
        lines.append(
            f"ftqueue test accuracy {report['ftqueue_test_accuracy_mean']:.4f} ± "
            f"{report['ftqueue_test_accuracy_sd']:.4f}."
        )
    return [*lines, ""]


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _compiled_table(compiled: list[dict[str, Any]], eager: dict[str, Any]) -> list[str]:
    """The compiled steps against the original style and the GPU defaults run eagerly (the
    runs of train_bert_base.json and train_minilm.json for the same model)."""
    lines = [
        "### Compiled training steps (fixed shapes), one warm process per row",
        "",
        "| model | compile mode | jobs | samples/s first job | samples/s warm jobs | x original "
        "| x eager defaults | compile s (first job) | compile s per job | peak CUDA MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in compiled:
        runs = eager.get(c["model"], {}).get("runs", {})
        original = next((r for k, r in runs.items() if k.startswith("original")), None)
        mine = [r for k, r in runs.items() if k.startswith("ftqueue")]
        warm = c["samples_per_second_warm"]
        vs_original = f"{warm / original['samples_per_second']:.2f}x" if original else "-"
        vs_eager = f"{warm / mine[0]['samples_per_second']:.2f}x" if mine else "-"
        lines.append(
            f"| {c['model']} | {c['compile_mode']} | {c['jobs']} "
            f"| {c['samples_per_second_first_job']:,.0f} | {warm:,.0f} | {vs_original} "
            f"| {vs_eager} | {c['compile_seconds_first_job']:.1f} "
            f"| {c['compile_seconds_per_job']:.1f} | {_mib(c.get('peak_cuda_mb'))} |"
        )
    return [*lines, ""]


def main(argv: list[str]) -> int:
    results = Path(argv[0] if argv else "bench/results")
    parts = {
        name: _load(results / f"{name}.json")
        for name in ("train_bert_base", "train_minilm", "ops", "predict", "gpu_tests")
    }
    sweeps = [_load(path) for path in sorted(results.glob("sweep_*.json"))]
    parts["sweep"] = [sweep for sweep in sweeps if sweep]
    compiled = [_load(path) for path in sorted(results.glob("compiled_*.json"))]
    parts["compiled"] = [c for c in compiled if c and "compile_mode" in c]
    steps = _steps(results / "steps.tsv")
    device = (
        next(
            (
                p["device_name"]
                for p in parts.values()
                if isinstance(p, dict) and p.get("device_name")
            ),
            None,
        )
        or _nvidia_smi_name()
    )
    summary = {"device": device, "steps": steps, **{k: v for k, v in parts.items() if v}}
    (results / "gpu_check.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    md = [f"## GPU check on {device}", "", "| step | exit | seconds |", "|---|---|---:|"]
    md += [f"| {s['step']} | {s['exit']} | {s['seconds']} |" for s in steps]
    md.append("")
    if parts["gpu_tests"]:
        md += ["### GPU tests: jobs through Redis and the GPU worker", ""]
        md += ["| job | status | dtype | fused AdamW | peak CUDA MiB | reserved at start MiB |"]
        md += ["|---|---|---|---|---:|---:|"]
        for job in parts["gpu_tests"]["jobs"]:
            st = job["stats"]
            status = job["status"] + (f" ({job['error_type']})" if job["error_type"] else "")
            peak, reserved = st.get("peak_cuda_mb") or 0, st.get("cuda_reserved_at_start_mb") or 0
            md.append(
                f"| {job['id']} | {status} | {st.get('dtype')} | {st.get('fused_optimizer')} "
                f"| {peak:,.0f} | {reserved:,.0f} |"
            )
        md.append("")
    if parts["train_bert_base"]:
        md += _runs_table("Training throughput", parts["train_bert_base"])
    if parts["train_minilm"]:
        md += _runs_table("Accuracy", parts["train_minilm"])
    if parts["compiled"]:
        eager = {p["model"]: p for p in (parts["train_bert_base"], parts["train_minilm"]) if p}
        md += _compiled_table(parts["compiled"], eager)
    for sweep in parts["sweep"]:
        md += _runs_table("Recipe neighbour", sweep)
    if parts["ops"]:
        rows = parts["ops"]["ops"]
        base = next(iter(rows.values()))["ops_per_sample"]
        md += [
            f"### Operator calls per training sample ({parts['ops']['model']})",
            "",
            "| run | batch | ops/step | ops/sample | fewer than original |",
            "|---|---:|---:|---:|---:|",
        ]
        md += [
            f"| {label} | {r['batch_size']} | {r['ops_per_step']:,.0f} | "
            f"{r['ops_per_sample']:,.1f} | {base / r['ops_per_sample']:.1f}x |"
            for label, r in rows.items()
        ]
        md.append("")
    if parts["predict"]:
        p = parts["predict"]
        md += [f"### Prediction: {p['rows']:,} rows ({p['device']})", "", "| route | rows/s |"]
        md += ["|---|---:|"]
        md += [f"| {k} | {v['rows_per_second']:,.0f} |" for k, v in p["routes"].items()]
        md += [
            "",
            f"Ratio against the pipeline's defaults: {p['ratio_vs_pipeline_defaults']:.2f}x.",
            "",
        ]
    (results / "gpu_check.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
