"""Mistakes caught at submit and explained right: each message a user meets, checked whole
(one line, exit 2, the right hint), with nothing written to the database."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.procs import child_env
from tests.test_cli_errors import assert_one_line, invoke
from tests.test_submit_cli import job_count

SNIPPETS = ["--dataset", "movie-snippets"]


@pytest.fixture
def eager(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    from ftqueue.settings import reset_settings

    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    return sqlite_url


def minilm_dir() -> str:
    from ftqueue.inputs.weights import resolve_model

    return resolve_model("minilm")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["lora", "--model", "mini-lm", *SNIPPETS],
            ["unknown model 'mini-lm'", "did you mean minilm?"],
        ),
        (["lora", "--model", "MiniLM", *SNIPPETS], ["did you mean minilm?"]),
        (
            ["lora", "--model", "minilm", "--dataset", "movie-snipets"],
            ["unknown dataset 'movie-snipets'", "did you mean movie-snippets?"],
        ),
        (
            ["lora", "--model", "minilm", *SNIPPETS, "--target-modules", "q_proj,v_proj"],
            ["no layer named q_proj or v_proj", "dense, key, query, value,"],
        ),
        (
            ["lora", "--model", "minilm", *SNIPPETS, "--target-modules", "query,vlaue"],
            ["no layer named vlaue", "did you mean value?"],
        ),
        (
            ["lora", "--model", "minilm", *SNIPPETS, "--target-modules", "query",
             "--target-modules", "c_attn"],
            ["--target-modules c_attn", "no layer named c_attn"],
        ),
        (
            ["evaluate", "--adapter-job", "999", *SNIPPETS],
            ["--adapter-job 999: no such job", "ftqueue list --status succeeded"],
        ),
        (
            ["--model", "minilm", *SNIPPETS],
            ["name the kind first", "ftqueue submit evaluate|lora|predict --model minilm"],
        ),
        (["lora", "--model", "minilm", *SNIPPETS, "--seed", "0-2"], ["0..2"]),
        (["lora", "--model", "minilm", *SNIPPETS, "--learning-rate", "1e-3"],
         ["ftqueue calls it --lr"]),
        (["lora", "--model", "minilm", *SNIPPETS, "--lora-alpha=16"], ["ftqueue calls it --alpha"]),
        (["lora", "--model", "minilm", *SNIPPETS, "--num-epochs", "3"],
         ["ftqueue calls it --epochs"]),
        (["lora", "--modle", "minilm", *SNIPPETS], ["'--model'"]),
        (["evaluate", "--adapter", "3", *SNIPPETS], ["ftqueue calls it --adapter-job"]),
        (["lroa", "--model", "minilm"], ["Did you mean 'lora'?"]),
    ],
)  # fmt: skip
def test_a_mistake_is_one_line_with_the_fix(
    eager: str, args: list[str], needles: list[str]
) -> None:
    code, out = invoke("submit", *args)
    line = assert_one_line(out)
    assert code == 2, out
    for needle in needles:
        assert needle in line, line
    assert job_count() == 0


def test_target_modules_are_checked_against_a_local_model_directory(eager: str) -> None:
    code, out = invoke("submit", "lora", "--model", minilm_dir(), *SNIPPETS,
                       "--target-modules", "q_proj,v_proj")  # fmt: skip
    assert code == 2 and "no layer named q_proj or v_proj" in assert_one_line(out)
    # Names that end a layer's path count, as peft matches them.
    code, out = invoke("submit", "lora", "--model", minilm_dir(), *SNIPPETS,
                       "--target-modules", "attention.self.query,value", "--json",
                       "--train-samples", "40", "--eval-samples", "20", "--epochs", "1",
                       "--batch-size", "16", "--max-length", "16")  # fmt: skip
    assert code == 0, out
    assert job_count() == 1


def test_near_names_that_are_not_slips_are_left_alone() -> None:
    from ftqueue.core.text import close_match

    for name in ("bert-base-uncased", "gpt2", "distilroberta-base", "imdb", "sst2", "snippets"):
        assert close_match(name, ["minilm", "movie-snippets"]) is None, name
    assert close_match("movie_snippets", ["movie-snippets"]) == "movie-snippets"


@pytest.mark.slow
def test_an_unreachable_hub_fails_a_hub_dataset_fast_on_the_worker(tmp_path: Path) -> None:
    """Loading a hub dataset while the hub refuses connections: the local cache only, then
    one line, not the libraries' five retries (about 25 s)."""
    env = child_env(HF_ENDPOINT="http://127.0.0.1:1", HF_HOME=str(tmp_path / "hf"))
    env.pop("HF_HUB_OFFLINE", None)
    code = (
        "import time; from ftqueue.inputs.labelled import resolve_dataset; "
        "from ftqueue.specs import DataSpec; from ftqueue.errors import DatasetError\n"
        "import datasets\n"  # imported first, as a worker has: the switch must still hold
        "start = time.monotonic()\n"
        "try:\n    resolve_dataset(DataSpec(dataset='org/some-data'))\n"
        "except DatasetError as exc:\n    print(exc.message)\n"
        "print(round(time.monotonic() - start, 1))\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    message, seconds = done.stdout.strip().splitlines()[-2:]
    assert "http://127.0.0.1:1 is unreachable" in message, done.stdout + done.stderr
    assert "not in the local cache" in message and "movie-snippets" in message
    assert float(seconds) < 8, (seconds, time.monotonic() - started)


@pytest.mark.slow
def test_an_unreachable_hub_fails_a_hub_model_fast_on_the_worker(tmp_path: Path) -> None:
    env = child_env(HF_ENDPOINT="http://127.0.0.1:1", HF_HOME=str(tmp_path / "hf"))
    env.pop("HF_HUB_OFFLINE", None)
    code = (
        "import time, torch; from ftqueue.training.modeling import load_base\n"
        "from ftqueue.errors import ModelError\n"
        "start = time.monotonic()\n"
        "try:\n    load_base('org/some-model', torch.device('cpu'))\n"
        "except ModelError as exc:\n    print(exc.message)\n"
        "print(round(time.monotonic() - start, 1))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180
    )
    message, seconds = done.stdout.strip().splitlines()[-2:]
    assert "http://127.0.0.1:1 is unreachable" in message, done.stdout + done.stderr
    assert "not in the local cache" in message and "minilm" in message
    assert float(seconds) < 8, seconds
