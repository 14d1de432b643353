"""The pytest plugin as a user meets it: pytest run in a directory outside this repository.

Each test starts `python -m pytest` on files in a temporary directory, with this process's
FTQUEUE_* settings removed, so what the plugin does not set up itself is not there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "test_my_pipeline.py"

pytestmark = pytest.mark.slow

USES_FIXTURE = """
import os

from ftqueue.queue.app import app
from ftqueue.settings import get_settings, reset_settings


def test_eager_home(monkeypatch, ftqueue_env):
    monkeypatch.setenv("FTQUEUE_LEASE_SECONDS", "7")
    reset_settings()
    settings = get_settings()
    assert settings.eager and settings.home == ftqueue_env.home and settings.lease_seconds == 7
    assert app.conf.task_always_eager


def test_after_it_the_settings_are_the_environments():
    settings = get_settings()
    assert str(settings.home) == os.environ["FTQUEUE_HOME"]
    assert not settings.eager and settings.lease_seconds == 120
    assert not app.conf.task_always_eager
"""


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no ftqueue settings, no pytest options of ours."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("FTQUEUE_") and not k.startswith("FTQUEUE_TEST_"))
        and k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "CI")
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run_pytest(
    where: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args],
        cwd=where,
        env=env or user_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: the example test file and nothing else."""
    where = tmp_path / "project"
    where.mkdir()
    shutil.copy(EXAMPLE, where / EXAMPLE.name)
    return where


@pytest.mark.redis
def test_the_example_passes_eager_and_on_a_worker(
    project: Path, redis_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "user"
    out = run_pytest(project, env=user_env(HOME=str(home)))
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "3 passed" in out.stdout and "skipped" not in out.stdout, out.stdout[-2000:]
    # Every queue lived under pytest's temporary directories, none in ~/.ftqueue.
    assert not (home / ".ftqueue").exists()


def test_without_redis_the_worker_test_is_skipped_and_fails_under_ci(project: Path) -> None:
    nowhere = "redis://127.0.0.1:1"  # nothing listens on port 1
    skipped = run_pytest(project, env=user_env(FTQUEUE_TEST_REDIS=nowhere))
    assert skipped.returncode == 0, skipped.stdout[-3000:]
    assert "2 passed, 1 skipped" in skipped.stdout
    assert f"Redis at {nowhere}/" in skipped.stdout and "is not reachable" in skipped.stdout
    failed = run_pytest(
        project, "-k", "on_a_worker", env=user_env(FTQUEUE_TEST_REDIS=nowhere, CI="true")
    )
    assert failed.returncode == 1, failed.stdout[-3000:]
    # A fixture that fails is an error of the test's set-up, which fails the run all the same.
    assert "CI must provide it" in failed.stdout and "1 error" in failed.stdout


def test_the_fixtures_load_only_when_asked_for(tmp_path: Path) -> None:
    """And the settings of the shell are back after a test that used them."""
    (tmp_path / "test_user.py").write_text(USES_FIXTURE)
    env = user_env(FTQUEUE_HOME=str(tmp_path / "my-home"))
    plain = run_pytest(tmp_path, env=env)
    assert plain.returncode == 1 and "fixture 'ftqueue_env' not found" in plain.stdout
    for args in (["--ftqueue"], ["-p", "ftqueue.testing"]):
        asked = run_pytest(tmp_path, *args, env=env)
        assert asked.returncode == 0 and "2 passed" in asked.stdout, (args, asked.stdout[-3000:])
    (tmp_path / "pytest.ini").write_text("[pytest]\nftqueue = true\n")
    configured = run_pytest(tmp_path, env=env)
    assert configured.returncode == 0 and "2 passed" in configured.stdout, configured.stdout


FAILS_ON_A_WORKER = """
from ftqueue import api
from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.testing import synthetic_model


def test_fails(ftqueue_worker, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,label\\n" + "".join(f"t{i},{i % 2}\\n" for i in range(30)))
    spec = EvaluateSpec(model=synthetic_model(0.05, 2, fault="raise"), data={"dataset": str(data)})
    job = api.submit(spec).job_ids[0]
    assert api.wait(job, timeout=60)[job] == "succeeded"
"""


@pytest.mark.redis
def test_a_failed_test_shows_the_worker_log(tmp_path: Path, redis_url: str) -> None:
    (tmp_path / "test_user.py").write_text(FAILS_ON_A_WORKER)
    out = run_pytest(tmp_path, "-p", "ftqueue.testing")
    assert out.returncode == 1 and "1 failed" in out.stdout, out.stdout[-3000:]
    log = out.stdout[out.stdout.index(" ftqueue worker log ") :]
    # The worker's own account of the job: it ran there, and how it failed.
    assert " ready." in log and "synthetic failure requested" in log, log[-3000:]


LEAVES_THE_ENVIRONMENT = """
import os
import socket

from ftqueue import api
from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.settings import reset_settings
from ftqueue.testing import synthetic_model

OWNED = ("FTQUEUE_", "MLFLOW_")
BEFORE = {k: v for k, v in os.environ.items() if k.startswith(OWNED)}


def test_a_tracked_job(ftqueue_env, monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: the tracker is unreachable
    monkeypatch.setenv("FTQUEUE_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    reset_settings()
    # The code under test sets variables itself, not through monkeypatch.
    os.environ["FTQUEUE_SET_BY_THE_CODE"] = "1"
    os.environ["MLFLOW_TRACKING_USERNAME"] = "someone"
    os.environ["FTQUEUE_HOME"] = str(tmp_path / "elsewhere")
    data = tmp_path / "d.csv"
    data.write_text("text,label\\n" + "".join(f"t{i},{i % 2}\\n" for i in range(30)))
    spec = EvaluateSpec(model=synthetic_model(0.05, 2), data={"dataset": str(data)})
    job = api.submit(spec).job_ids[0]
    assert api.wait(job, timeout=60)[job] == "succeeded"


def test_after_it_the_environment_is_as_before():
    assert {k: v for k, v in os.environ.items() if k.startswith(OWNED)} == BEFORE
"""


def test_every_ftqueue_and_mlflow_variable_is_restored_after_a_test(tmp_path: Path) -> None:
    """Whoever set them: the test's code, or the MLflow tracker bounding its calls."""
    pytest.importorskip("mlflow")
    (tmp_path / "test_user.py").write_text(LEAVES_THE_ENVIRONMENT)
    env = user_env(FTQUEUE_HOME=str(tmp_path / "my-home"), MLFLOW_EXPERIMENT_NAME="mine")
    out = run_pytest(tmp_path, "-p", "ftqueue.testing", env=env)
    assert out.returncode == 0 and "2 passed" in out.stdout, out.stdout[-3000:]
