"""Artifacts on an object store, against a real S3-compatible server (moto's, on a free port):
publication through a temporary prefix and a manifest written last, readers that trust only a
whole output, a worker killed mid-upload, `ftqueue fetch`, and rows relative to the root."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from ftqueue.artifacts import objects
from ftqueue.artifacts.publishing import ADAPTER_METADATA, ADAPTER_WEIGHTS
from ftqueue.errors import FtqueueError
from ftqueue.kinds import rows
from ftqueue.kinds.lora import LoraSpec
from ftqueue.settings import get_settings, load_settings, reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db, insert
from ftqueue.store.schema import Job
from ftqueue.submit.submission import submit
from ftqueue.worker import reaper
from tests.conftest import run, service_missing
from tests.procs import WorkerProcess, all_terminal, child_env, wait_for

QUICK = "synthetic:seconds=0.1,steps=2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's standalone S3 server, for the module: its endpoint URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        service_missing("moto's S3 server (pip install 'moto[server]')", exc)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_root(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> objects.ObjectRoot:
    """A new bucket, and FTQUEUE_ARTIFACTS_DIR pointing at a prefix in it."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    bucket = f"ftq-{uuid.uuid4().hex[:10]}"
    root = objects.ObjectRoot(f"s3://{bucket}/team/runs", s3_server)
    root.filesystem().mkdir(bucket)
    monkeypatch.setenv("FTQUEUE_ARTIFACTS_DIR", root.url)
    monkeypatch.setenv("FTQUEUE_S3_ENDPOINT_URL", s3_server)
    reset_settings()
    return root


def _adapter(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / ADAPTER_WEIGHTS).write_bytes(os.urandom(4096))
    (directory / "adapter_config.json").write_text('{"r": 8}')
    (directory / ADAPTER_METADATA).write_text('{"format": 2}')
    return directory


def _spec(seed: int) -> LoraSpec:
    return LoraSpec(model=QUICK, data=DataSpec(dataset="movie-snippets"), seed=seed, epochs=1)


@pytest.mark.slow  # starts moto's S3 server
def test_a_cut_upload_is_never_read_and_a_whole_one_is_checked(
    s3_root: objects.ObjectRoot, tmp_path: Path
) -> None:
    source = _adapter(tmp_path / "adapter")

    class Cut(Exception):
        pass

    def cut(count: int) -> None:
        raise Cut

    with pytest.raises(Cut):
        objects.upload(s3_root, source, "adapters/job-7", after_file=cut)
    assert objects.read_manifest(s3_root, "adapters/job-7") is None
    with pytest.raises(FtqueueError, match="holds no complete output"):
        rows.local_output("adapters/job-7")
    [stale] = objects.uploads_by_job(s3_root)[7]
    assert "/adapters/.upload-job-7-" in stale
    # The whole upload, published: read back into the cache, each file as it was written.
    up = objects.upload(s3_root, source, "adapters/job-7")
    assert objects.read_manifest(s3_root, "adapters/job-7") is None  # not until published
    objects.publish(up)
    local = rows.local_output("adapters/job-7")
    assert local.is_relative_to(get_settings().artifacts_cache_dir)
    assert (local / ADAPTER_WEIGHTS).read_bytes() == (source / ADAPTER_WEIGHTS).read_bytes()
    assert objects.uploads_by_job(s3_root)[7] == [stale]  # the published upload went
    # A file changed behind the manifest's back (same size) is refused, not loaded.
    fs = s3_root.filesystem()
    fs.pipe_file(s3_root.key(f"adapters/job-7/{ADAPTER_WEIGHTS}"), os.urandom(4096))
    with pytest.raises(FtqueueError, match="does not match its manifest"):
        objects.download_dir(s3_root, "adapters/job-7", tmp_path / "again")


@pytest.mark.slow  # starts moto's S3 server
def test_an_eager_job_publishes_to_the_bucket_and_fetch_downloads_it(
    eager: str, s3_root: objects.ObjectRoot, tmp_path: Path
) -> None:
    code, out = run("submit", "lora", "--model", QUICK, "--dataset", "movie-snippets", "--json")
    assert code == 0, out
    [job] = json.loads(out)["jobs"]
    with db.session_scope() as session:
        row = session.get(Job, job["id"])
        assert row is not None and row.status == "succeeded"
        relative = row.output_path
    assert relative == f"adapters/job-{row.id}"  # relative to the root, never absolute
    manifest = objects.read_manifest(s3_root, relative)
    assert manifest is not None
    assert {e["path"] for e in manifest["files"]} >= {ADAPTER_WEIGHTS, ADAPTER_METADATA}
    assert not list(get_settings().artifacts_dir.rglob(".staging-*"))  # staged locally, gone
    code, out = run("show", str(row.id), "--json")
    assert code == 0 and json.loads(out)["output_path"] == f"{s3_root.url}/{relative}"
    code, out = run("show", str(row.id))
    assert code == 0 and f"ftqueue fetch {row.id} DIR" in out
    code, out = run("fetch", str(row.id), str(tmp_path / "got"), "--json")
    assert code == 0, out
    fetched = json.loads(out)
    assert fetched["source"] == f"{s3_root.url}/{relative}"
    assert ADAPTER_WEIGHTS in fetched["files"] and (tmp_path / "got" / ADAPTER_WEIGHTS).is_file()
    # Never over anything: a second fetch into the same directory is refused in one line.
    code, out = run("fetch", str(row.id), str(tmp_path / "got"))
    assert code == 2 and "is not an empty directory" in out and len(out.splitlines()) == 1
    code, out = run("fetch", "999999")
    assert code == 2 and "no job 999999" in out


@pytest.mark.slow  # starts moto's S3 server
def test_a_worker_killed_mid_upload_leaves_nothing_readable_and_the_retry_publishes(
    sqlite_url: str, redis_url: str, s3_root: objects.ObjectRoot, tmp_path: Path
) -> None:
    # The first attempt's process kills itself once one file of its upload is stored.
    env = child_env(FTQUEUE_TEST_KILL_UPLOAD="1")
    worker = WorkerProcess("uploader", env=env, log_dir=tmp_path).start()
    try:
        worker.wait_ready()
        [job] = submit([_spec(2)]).created
        wait_for(lambda: all_terminal([job.id]), timeout=90, what="the job to end")
    finally:
        worker.stop()
    with db.session_scope() as session:
        row = session.get(Job, job.id)
        assert row is not None, worker.log()[-2000:]
        assert (row.status, row.attempts) == ("succeeded", 2), worker.log()[-3000:]
    # What the killed attempt left: one file under its upload prefix, no manifest.
    [cut] = objects.uploads_by_job(s3_root)[job.id]
    fs = s3_root.filesystem()
    assert len(fs.find(cut)) == 1 and not fs.exists(f"{cut}/{objects.MANIFEST}")
    assert objects.read_manifest(s3_root, f"adapters/{cut.rsplit('/', 1)[1]}") is None
    # The retry's output is whole, and the reaper removes the stale upload of the ended job.
    local = rows.local_output(f"adapters/job-{job.id}")
    assert json.loads((local / ADAPTER_METADATA).read_text())["synthetic"] is True
    assert any(cut in removed for removed in reaper.clean_staging())
    assert objects.uploads_by_job(s3_root) == {}


@pytest.mark.slow  # starts moto's S3 server
def test_a_trained_adapter_on_s3_is_loaded_by_predict_elsewhere(
    sqlite_url: str, redis_url: str, s3_root: objects.ObjectRoot, tmp_path: Path
) -> None:
    data = DataSpec(dataset="movie-snippets", train_samples=32, eval_samples=16)
    spec = LoraSpec(model="minilm", data=data, epochs=1, batch_size=16, lr=2e-3)
    worker = WorkerProcess("trainer", env=child_env(), log_dir=tmp_path).start()
    try:
        worker.wait_ready()
        [job] = submit([spec]).created
        wait_for(lambda: all_terminal([job.id]), timeout=300, what="the training job")
    finally:
        worker.stop()
    with db.session_scope() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.status == "succeeded", worker.log()[-3000:]
    assert row.output_path == f"adapters/job-{job.id}"
    # Another machine: its own FTQUEUE_HOME (so its own cache and staging), the same database
    # and bucket.
    elsewhere = child_env(FTQUEUE_HOME=str(tmp_path / "elsewhere"))
    out = subprocess.run(
        [sys.executable, "-m", "ftqueue", "predict", str(job.id), "a gripping film", "--json"],
        env=elsewhere, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    [labelled] = json.loads(out.stdout)
    assert labelled["label"] in ("positive", "negative")
    cached = tmp_path / "elsewhere" / "artifacts-cache" / "adapters" / f"job-{job.id}"
    assert (cached / ADAPTER_WEIGHTS).is_file() and (cached / objects.MANIFEST).is_file()


def test_the_artifacts_setting_takes_a_bucket_url_or_a_directory(tmp_path: Path) -> None:
    remote = load_settings({"FTQUEUE_HOME": "/h", "FTQUEUE_ARTIFACTS_DIR": "s3://team-b/ft/"})
    assert remote.artifacts_url == "s3://team-b/ft" and remote.artifacts_root == "s3://team-b/ft"
    assert remote.artifacts_dir == Path("/h/staging")  # where jobs stage before the upload
    assert remote.artifacts_cache_dir == Path("/h/artifacts-cache")
    local = load_settings({"FTQUEUE_HOME": "/h", "FTQUEUE_ARTIFACTS_DIR": "/data/a"})
    assert local.artifacts_url is None and local.artifacts_root == "/data/a"
    for bad in ("gs://bucket/x", "s3://", "s3:///prefix"):
        with pytest.raises(FtqueueError, match="neither a local directory nor an S3 URL"):
            load_settings({"FTQUEUE_ARTIFACTS_DIR": bad})


def test_a_bad_artifacts_url_is_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ftqueue", "fetch", "1"],
        env=child_env(FTQUEUE_ARTIFACTS_DIR="gs://bucket/x"), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "give a path, or s3://BUCKET/PREFIX" in out.stderr and not out.stdout


def test_a_store_without_credentials_is_one_line_everywhere_and_the_reaper_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    """botocore's own errors (no credentials here), which s3fs passes through unwrapped, reach
    nobody as a traceback: each store call says what it could not do in one line."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_ENDPOINT_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata lookup
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    root = objects.ObjectRoot("s3://bucket/runs", f"http://127.0.0.1:{_free_port()}")
    source = _adapter(tmp_path / "out")
    calls = {
        "upload to": lambda: objects.upload(root, source, "job-1"),
        "read": lambda: objects.read_manifest(root, "job-1"),
        "list the uploads in": lambda: objects.uploads_by_job(root),
        "remove the stale uploads in": lambda: objects.remove_uploads(root, ["bucket/runs/x"]),
    }
    for doing, call in calls.items():
        with pytest.raises(FtqueueError) as caught:
            call()
        message = caught.value.message
        assert message.startswith(f"could not {doing} s3://bucket/runs/"), message
        assert "credentials" in message and "\n" not in message
    monkeypatch.setenv("FTQUEUE_ARTIFACTS_DIR", root.url)
    monkeypatch.setenv("FTQUEUE_S3_ENDPOINT_URL", root.endpoint_url or "")
    reset_settings()
    assert reaper.clean_staging() == []  # logged, and the pass goes on
    job_id = _job_with_output("job-1", seed=1)
    code, out = run("fetch", str(job_id), str(tmp_path / "here"))
    assert code != 0 and "could not read s3://bucket/runs/job-1" in out, out
    assert "Traceback" not in out and not (tmp_path / "here").exists()


def _job_with_output(path: str, seed: int) -> int:
    spec = _spec(seed)
    new = insert.NewJob(kind="lora", spec=spec.to_dict(), spec_hash=spec.spec_hash(),
                        model=spec.model, dataset=spec.source())  # fmt: skip
    with db.session_scope(write=True) as session:
        [job] = insert.create_jobs(session, [new], max_attempts=1)
        job_id = int(job.id)
    with db.get_engine().begin() as conn:
        conn.execute(
            text("UPDATE jobs SET output_path = :p WHERE id = :i"), {"p": path, "i": job_id}
        )
    return job_id


def _paths() -> dict[int, str | None]:
    with db.session_scope() as session:
        return {jid: path for jid, path in session.execute(select(Job.id, Job.output_path))}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_migration_makes_paths_under_the_root_relative(
    backend: str, request: pytest.FixtureRequest, isolated_home: Path
) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    root = get_settings().artifacts_dir
    inside = _job_with_output(str(root / "adapters" / "job-1"), 1)
    outside = _job_with_output("/srv/old-share/adapters/job-2", 2)
    db.downgrade(url, "0022")  # absolute paths, as rows held them before the revision
    db.upgrade(url)
    assert _paths() == {inside: "adapters/job-1", outside: "/srv/old-share/adapters/job-2"}
    # Both still resolve: the relative one under the root, the old one where it is.
    assert rows.output_location("adapters/job-1") == str(root / "adapters" / "job-1")
    assert rows.output_location("/srv/old-share/adapters/job-2") == "/srv/old-share/adapters/job-2"
    db.downgrade(url, "0022")
    assert _paths()[inside] == str(root.absolute() / "adapters" / "job-1")
    db.upgrade(url)
