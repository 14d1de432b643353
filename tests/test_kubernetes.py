"""The Kubernetes manifests (deploy/kubernetes), rendered and checked without a cluster.

`kubectl kustomize` renders them as `kubectl apply -k` would; every core object is then
checked against the Kubernetes API schemas (kubernetes-validate), KEDA's objects against
a schema of their own below, and the KEDA query against a real PostgreSQL database.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import create_engine, text, update

from ftqueue import kinds
from ftqueue.cli import cli
from ftqueue.core.states import STATUSES, JobStatus, gpu_class_from_name
from ftqueue.queue import broker
from ftqueue.settings import load_settings
from ftqueue.store import db, insert, lifecycle, reads
from ftqueue.store.schema import Job
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAY = KUBE / "overlays" / "example"
#: The Kubernetes version the core objects are checked against (kubernetes-validate's schemas).
K8S_VERSION = "1.31"
SECRET = "ftqueue-passwords"


def render(directory: Path) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        message = "kubectl is not installed: it renders the kustomize manifests"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render(OVERLAY)


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind]
    return found


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


#: The shared pool's Deployment (base/); the example overlay adds one per GPU class (classes/).
SHARED = "ftqueue-gpu-worker"


def gpu_class_of(worker: dict[str, Any]) -> str | None:
    args = containers(worker)[0]["args"]
    return args[args.index("--class") + 1] if "--class" in args else None


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["spec"]["template"]["spec"]["containers"])


# KEDA's CRDs are not in kubernetes-validate. This schema is written from KEDA's documented
# fields of keda.sh/v1alpha1 ScaledObject and TriggerAuthentication (spec.scaleTargetRef,
# pollingInterval, cooldownPeriod, min/maxReplicaCount, advanced, triggers[].type, metadata,
# authenticationRef; secretTargetRef[].parameter/name/key); unknown fields are refused, so a
# misspelt one fails here rather than being ignored by the cluster.
_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
_META = {"type": "object", "required": ["name"], "properties": {"name": _NAME}}
KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "name": _NAME,
                            "kind": {"type": "string"},
                            "apiVersion": {"type": "string"},
                            "envSourceContainerName": {"type": "string"},
                        },
                    },
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "idleReplicaCount": {"type": "integer", "minimum": 0},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "fallback": {"type": "object"},
                    "advanced": {"type": "object"},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"type": "string"},
                                "name": {"type": "string"},
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                "useCachedMetrics": {"type": "boolean"},
                                # KEDA's trigger metadata is a map of strings, numbers too.
                                "metadata": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                                "authenticationRef": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name"],
                                    "properties": {
                                        "name": _NAME,
                                        "kind": {
                                            "enum": [
                                                "TriggerAuthentication",
                                                "ClusterTriggerAuthentication",
                                            ]
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "minProperties": 1,
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["parameter", "name", "key"],
                            "properties": {
                                "parameter": {"type": "string"},
                                "name": _NAME,
                                "key": {"type": "string"},
                            },
                        },
                    },
                    "env": {"type": "array"},
                    "podIdentity": {"type": "object"},
                },
            },
        },
    },
}


# --- the manifests --------------------------------------------------------------------------


@pytest.mark.parametrize("directory", [KUBE / "base", OVERLAY], ids=["base", "example"])
def test_every_object_validates_against_its_schema(directory: Path) -> None:
    import kubernetes_validate

    objects = render(directory)
    assert {o["kind"] for o in objects} >= {
        "ConfigMap",
        "Deployment",
        "Job",
        "ScaledObject",
        "TriggerAuthentication",
        "PersistentVolumeClaim",
    }
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(obj, KEDA_SCHEMAS[obj["kind"]])
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_keda_schema_refuses_a_misspelt_field(objects: list[dict[str, Any]]) -> None:
    scaled = json.loads(json.dumps(named(objects, "ScaledObject", SHARED)))
    scaled["spec"]["minReplicas"] = 0  # the HPA's name, not KEDA's
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, KEDA_SCHEMAS["ScaledObject"])


@pytest.mark.parametrize("directory", [KUBE / "base", OVERLAY], ids=["base", "example"])
def test_each_pool_scales_on_its_own_jobs_with_backlog_sql_and_to_zero(directory: Path) -> None:
    objects = render(directory)
    workers = [o for o in objects if o["kind"] == "Deployment"]
    scaled_objects = [o for o in objects if o["kind"] == "ScaledObject"]
    classes = {gpu_class_of(w) for w in workers} - {None}
    # One ScaledObject a pool, each sizing its own Deployment; the base has the shared pool
    # alone, the example a pool for a100 and one for t4 as well.
    assert sorted(s["spec"]["scaleTargetRef"]["name"] for s in scaled_objects) == sorted(
        w["metadata"]["name"] for w in workers
    )
    assert classes == (set() if directory.name == "base" else {"a100", "t4"})
    config = one(objects, "ConfigMap")["data"]
    for scaled in scaled_objects:
        worker = named(objects, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
        assert scaled["spec"]["minReplicaCount"] == 0
        [trigger] = scaled["spec"]["triggers"]
        assert trigger["type"] == "postgresql"
        meta = trigger["metadata"]
        # The kinds the worker consumes: its --queues, or every queue by default.
        args = containers(worker)[0]["args"]
        queues = (
            args[args.index("--queues") + 1].split(",") if "--queues" in args else kinds.queues()
        )
        consumed = [k.name for k in kinds.all_kinds() if k.queue in queues]
        # A class pool counts its class's jobs; the shared pool every job, or, beside class
        # pools, the jobs of no class.
        cls = gpu_class_of(worker)
        assert meta["query"] == reads.backlog_sql(
            consumed, cls, shared_only=cls is None and bool(classes)
        )
        assert meta["targetQueryValue"] == "1"
        assert meta["activationTargetQueryValue"] == "0"
        # KEDA connects to the database the workers use, with the password they use.
        assert f"{meta['host']}:{meta['port']}" == config["FTQUEUE_POSTGRES_ADDR"]
        assert (meta["userName"], meta["dbName"]) == (
            config["FTQUEUE_POSTGRES_USER"],
            config["FTQUEUE_POSTGRES_DB"],
        )
        auth = named(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        [ref] = auth["spec"]["secretTargetRef"]
        assert (ref["parameter"], ref["name"], ref["key"]) == (
            "password",
            SECRET,
            "postgres-password",
        )


def test_class_pools_run_on_their_gpus_and_own_their_pods(objects: list[dict[str, Any]]) -> None:
    workers = [o for o in objects if o["kind"] == "Deployment"]
    selectors = [w["spec"]["selector"]["matchLabels"] for w in workers]
    # No Deployment's selector matches another's pods.
    for worker, selector in zip(workers, selectors, strict=True):
        for other in workers:
            labels = other["spec"]["template"]["metadata"]["labels"]
            matches = all(labels.get(k) == v for k, v in selector.items())
            assert matches == (other is worker), (worker["metadata"]["name"], labels)
    for worker in workers:
        cls = gpu_class_of(worker)
        node_selector = worker["spec"]["template"]["spec"].get("nodeSelector", {})
        if cls is None:
            assert worker["metadata"]["name"] == SHARED and not node_selector
        else:
            assert worker["metadata"]["name"] == f"{SHARED}-{cls}"
            # The class a worker serves is the class of the GPU it is scheduled on.
            product = node_selector["nvidia.com/gpu.product"]
            assert gpu_class_from_name(product.replace("-", " ")) == cls


def _secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_workers_and_the_upgrade_get_their_settings_and_passwords(
    objects: list[dict[str, Any]],
) -> None:
    readme = (KUBE / "README.md").read_text()
    config = one(objects, "ConfigMap")
    pools = [o for o in objects if o["kind"] == "Deployment"]
    assert len(pools) == 3
    for obj in (*pools, one(objects, "Job")):
        [container] = containers(obj)
        assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
        refs = _secret_refs(container)
        assert refs == {
            "FTQUEUE_POSTGRES_PASSWORD": (SECRET, "postgres-password"),
            "FTQUEUE_REDIS_PASSWORD": (SECRET, "redis-password"),
        }
        # The settings ftqueue would build in the pod: the URLs point at the configured hosts.
        env = {**config["data"], **{name: "pw/with#chars" for name in refs}}
        settings = load_settings(env)
        assert settings.database_url.endswith(
            "@"
            + config["data"]["FTQUEUE_POSTGRES_ADDR"]
            + "/"
            + config["data"]["FTQUEUE_POSTGRES_DB"]
        )
        assert f"@{config['data']['FTQUEUE_REDIS_ADDR']}/" in settings.broker_url
        assert settings.mlflow_tracking_uri == config["data"]["FTQUEUE_MLFLOW_TRACKING_URI"]
        assert str(settings.artifacts_dir) == config["data"]["FTQUEUE_ARTIFACTS_DIR"]
    # The README's command creates that Secret with those keys.
    create = re.search(r"create secret generic (\S+)(.*?)\n```", readme, re.S)
    assert create and create.group(1) == SECRET
    assert "--from-literal=postgres-password=" in create.group(2)
    assert "--from-literal=redis-password=" in create.group(2)
    assert one(objects, "Job")["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "db",
        "upgrade",
    ]


def test_a_worker_pod_has_one_gpu_runs_as_a_user_and_drains_before_it_stops(
    objects: list[dict[str, Any]],
) -> None:
    for worker in [o for o in objects if o["kind"] == "Deployment"]:
        _one_gpu_a_user_and_a_drain(objects, worker)


def _one_gpu_a_user_and_a_drain(objects: list[dict[str, Any]], worker: dict[str, Any]) -> None:
    pod = worker["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert "replicas" not in worker["spec"]  # the ScaledObject's
    assert container["args"][0] == "worker" and "--gpus" not in container["args"]
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1 == resources["requests"]["nvidia.com/gpu"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] not in (0, None)
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The drain runs first, bounded, and the grace period outlasts it by a margin for the
    # attempt's last step and Celery's warm shutdown.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "timeout" and pre_stop[2:] == ["python", "-m", "ftqueue.worker.drain"]
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + 30
    assert "livenessProbe" not in container
    assert pod["shareProcessNamespace"] is True  # zombies reaped, as compose's `init: true`
    [upgrade] = containers(one(objects, "Job"))
    assert container["image"] == upgrade["image"] != "ftqueue-worker:latest"  # the overlay's
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    artifacts = volumes[mounts["/data/artifacts"]]["persistentVolumeClaim"]["claimName"]
    pvc = one(objects, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == artifacts and pvc["spec"]["accessModes"] == ["ReadWriteMany"]


# --- against the database -------------------------------------------------------------------


def _job_in_every_status_of_every_kind() -> None:
    """Two jobs of each kind in each status, made as the queue makes them."""
    new = [
        insert.NewJob(kind=kind, spec={"n": i}, spec_hash=f"{kind}{i}", model="m", dataset="d")
        for kind in kinds.names()
        for i in range(2 * len(STATUSES))
    ]
    with db.session_scope(write=True) as session:
        jobs = insert.create_jobs(session, new, max_attempts=3)
        ids = [(job.id, job.kind) for job in jobs]
    for n, (job_id, _kind) in enumerate(ids):
        status = STATUSES[n % len(STATUSES)]
        if status == JobStatus.QUEUED:
            continue
        assert lifecycle.claim(job_id, worker=f"gpu0@host{n}", lease_seconds=60)
        if status != JobStatus.RUNNING:
            with db.session_scope(write=True) as session:
                session.execute(update(Job).where(Job.id == job_id).values(status=status))


def test_the_keda_query_counts_what_list_shows_queued_and_running(pg_url: str) -> None:
    _job_in_every_status_of_every_kind()
    listed = CliRunner().invoke(
        cli, ["list", "--status", "queued", "--status", "running", "--all", "--json"]
    )
    assert listed.exit_code == 0, listed.output
    jobs = json.loads(listed.output)
    assert {j["status"] for j in jobs} == {"queued", "running"}
    # KEDA runs the text as it is, over a plain libpq connection, as the database's user.
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            counted = conn.execute(text(reads.backlog_sql(kinds.names()))).scalar()
            lora_only = conn.execute(text(reads.backlog_sql(["lora"]))).scalar()
    finally:
        engine.dispose()
    assert counted == len(jobs) > 0
    assert lora_only == len([j for j in jobs if j["kind"] == "lora"]) < counted


def test_backlog_sql_refuses_a_kind_that_is_not_a_plain_name() -> None:
    with pytest.raises(ValueError):
        reads.backlog_sql(["lora') OR ('1'='1"])
    with pytest.raises(ValueError):
        reads.backlog_sql([])


def test_the_drain_re_queues_this_hosts_running_jobs_only(any_db_url: str, redis_url: str) -> None:
    from ftqueue.worker import drain

    with db.session_scope(write=True) as session:
        jobs = insert.create_jobs(
            session,
            [
                insert.NewJob(kind="lora", spec={"n": i}, spec_hash=f"h{i}", model="m", dataset="d")
                for i in range(3)
            ],
            max_attempts=3,
        )
        ids = [job.id for job in jobs]
    here = socket.gethostname()
    mine = lifecycle.claim(ids[0], worker=f"gpu0@{here}", lease_seconds=600)
    assert mine is not None
    assert lifecycle.claim(ids[1], worker=f"gpu0@{here}.other", lease_seconds=600)
    assert drain.drain() == [ids[0]]
    with db.session_scope() as session:
        status = {j.id: j.status for j in session.query(Job).filter(Job.id.in_(ids))}
    assert status == {ids[0]: "queued", ids[1]: "running", ids[2]: "queued"}
    # The drained attempt is fenced: its next beat finds the job gone, so it stops at its next
    # step and records nothing.
    assert lifecycle.heartbeat(mine, None, lease_seconds=60) == (False, False)
    # And the job is on its queue again, for another worker.
    import redis

    assert broker.queue_length("lora", redis.Redis.from_url(redis_url)) == 1


def test_the_readiness_probe_passes_once_this_hosts_worker_is_live(
    objects: list[dict[str, Any]], sqlite_url: str
) -> None:
    import os
    import sys

    from ftqueue.store import workers
    from ftqueue.worker import roster

    [container] = containers(named(objects, "Deployment", SHARED))
    probe = container["readinessProbe"]["exec"]["command"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}

    def ready() -> bool:
        done = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode in (0, 1), done.stderr
        return done.returncode == 0

    assert not ready()  # no worker yet
    elsewhere = roster.describe("gpu0@other-pod", ["lora"])
    workers.register(**{**elsewhere, "host": "other-pod"})
    assert not ready()  # a worker on another host is not this pod's
    workers.register(**roster.describe(f"gpu0@{socket.gethostname()}", ["lora"]))
    assert ready()


def test_the_drain_command_says_what_it_did_and_fails_soft(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ftqueue.settings import reset_settings
    from ftqueue.worker import drain

    assert drain.main() == 0
    assert capsys.readouterr().err == "ftqueue drain: released jobs none\n"
    # No database: one line and a failure status, and the pod goes on stopping.
    monkeypatch.setenv("FTQUEUE_DATABASE_URL", "postgresql+psycopg://u:secret@127.0.0.1:1/x")
    reset_settings()
    db.dispose_engines()
    assert drain.main() == 1
    err = capsys.readouterr().err
    assert err.startswith("ftqueue drain: could not release") and err.count("\n") == 1
    assert "secret" not in err


@pytest.mark.slow
def test_a_stopping_pod_hands_its_job_back_and_ends_within_the_grace_period(
    objects: list[dict[str, Any]], pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    """As the kubelet stops a pod: the preStop command, then SIGTERM to the main process only.

    The job takes 10 minutes in 1-second steps; without the drain, Celery's warm shutdown
    would wait for all of it, far past the grace period.
    """
    import os
    import signal
    import sys
    import time

    from ftqueue.kinds.lora import LoraSpec
    from ftqueue.specs import DataSpec
    from ftqueue.submit.submission import submit
    from tests.procs import WorkerProcess, child_env, wait_for

    pod = named(objects, "Deployment", SHARED)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    grace = pod["terminationGracePeriodSeconds"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    env = child_env()
    worker = WorkerProcess("pod", env=env, log_dir=tmp_path).start()
    try:
        worker.wait_ready()
        spec = LoraSpec(
            model="synthetic:seconds=600,steps=600",
            data=DataSpec(dataset="movie-snippets"),
            seed=1,
        )
        [job] = submit([spec]).created

        def status() -> str:
            with db.session_scope() as session:
                found = session.get(Job, job.id)
                assert found is not None
                return found.status

        wait_for(lambda: status() == "running", timeout=60, what="the claim")
        started = time.monotonic()
        # The preStop hook runs in the container: `python` is this environment's.
        command = [sys.executable if part == "python" else part for part in pre_stop]
        hook = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)
        assert hook.returncode == 0, hook.stderr
        assert f"released jobs [{job.id}]" in hook.stderr
        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGTERM)  # the kubelet signals the main process
        worker.proc.wait(timeout=grace)
        took = time.monotonic() - started
    finally:
        worker.kill()
    assert worker.proc.returncode == 0, worker.log()[-3000:]
    assert took < grace / 2, f"{took:.0f}s to stop"
    with db.session_scope() as session:
        row = session.get(Job, job.id)
        assert row is not None
        assert (row.status, row.attempts, row.error_type) == ("queued", 1, None)
    import redis

    # Its new message waits for the next worker.
    assert broker.queue_length("lora", redis.Redis.from_url(redis_url)) == 1
