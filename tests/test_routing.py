"""GPU classes, priorities and submitters: what submit writes and publishes, and who reads it.

The slow tests run real `ftqueue worker` processes: a class's jobs go only to its workers, a
high-priority job overtakes 200 queued ones, and the per-user cap holds with two workers.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, func, select, text

from ftqueue import api
from ftqueue.core.states import JobStatus, Priority, gpu_class_from_name
from ftqueue.errors import FtqueueError
from ftqueue.kinds.lora import LoraSpec
from ftqueue.queue import broker
from ftqueue.settings import load_settings, reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db, insert, lifecycle, reads, workers
from ftqueue.store.schema import Job, JobEvent
from ftqueue.worker import reaper, roster
from tests.conftest import job_count, run
from tests.procs import WorkerProcess, all_terminal, child_env, wait_for

SPACE = "space: {seed: [1]}\n"
SYN = ("--model", "synthetic:seconds=0", "--dataset", "movie-snippets")


def spec(seed: int, seconds: float = 0.2) -> LoraSpec:
    return LoraSpec(
        model=f"synthetic:seconds={seconds},steps=2",
        data=DataSpec(dataset="movie-snippets"),
        seed=seed,
    )


def rows(ids: list[int] | None = None) -> dict[int, Job]:
    with db.session_scope() as session:
        query = select(Job) if ids is None else select(Job).where(Job.id.in_(ids))
        found = {job.id: job for job in session.scalars(query)}
        session.expunge_all()
        return found


def waiting(client: Any, key: str) -> list[str]:
    """Task ids of the messages in one Redis list."""
    return [json.loads(m)["headers"]["id"] for m in client.lrange(key, 0, -1)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("Tesla T4", "t4"),
        ("NVIDIA GeForce RTX 4090", "4090"),
        (None, "cpu"),
    ],
)
def test_a_gpu_name_gives_its_class(name: str | None, expected: str) -> None:
    assert gpu_class_from_name(name) == expected


def test_ftqueue_user_defaults_to_the_login_name_and_refuses_odd_text() -> None:
    import getpass

    assert load_settings({}).user == getpass.getuser()
    assert load_settings({"FTQUEUE_USER": "alice"}).user == "alice"
    with pytest.raises(FtqueueError) as caught:
        load_settings({"FTQUEUE_USER": "alice; rm -rf"})
    assert "FTQUEUE_USER" in caught.value.message and "\n" not in caught.value.message
    with pytest.raises(FtqueueError):
        load_settings({"FTQUEUE_MAX_RUNNING_PER_USER": "0"})


def test_submit_routes_by_class_and_priority_and_records_the_submitter(
    sqlite_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTQUEUE_USER", "alice")
    reset_settings()
    code, out = run("submit", "lora", *SYN, "--seed", "1", "--json")
    assert code == 0, out
    code, out = run("submit", "lora", *SYN, "--seed", "2", "--priority", "high", "--json")
    assert code == 0, out
    code, out = run(
        "submit", "lora", *SYN, "--seed", "3", "--priority", "low", "--gpu-class", "a100"
    )
    # No live worker of class a100: a warning, the job queued all the same, exit 0.
    assert code == 0, out
    assert "warning: no live worker of GPU class a100 consumes queue lora.a100" in out
    jobs = rows()
    normal, high, low = (jobs[i] for i in sorted(jobs))
    assert (normal.priority, high.priority, low.priority) == (3, 0, 6)
    assert (normal.gpu_class, high.gpu_class, low.gpu_class) == (None, None, "a100")
    assert {job.submitted_by for job in jobs.values()} == {"alice"}
    # kombu's lists: step 0 is the queue's own name and is read first.
    client = redis.Redis.from_url(redis_url)
    assert waiting(client, "lora") == [high.task_id]
    assert waiting(client, "lora\x06\x163") == [normal.task_id]
    assert waiting(client, "lora.a100\x06\x166") == [low.task_id]
    assert broker.queue_length("lora") == 2 and broker.queue_length("lora.a100") == 1
    listed = api.jobs(user="alice")
    assert [(j["user"], j["gpu_class"], j["priority"]) for j in listed] == [
        ("alice", "a100", "low"),
        ("alice", None, "high"),
        ("alice", None, "normal"),
    ]
    assert listed[0]["queue"]["name"] == "lora.a100"
    assert api.jobs(user="bob") == []
    code, out = run("list", "--user", "bob")
    assert code == 0 and "No jobs match" in out


def test_a_queued_jobs_place_and_depth_are_its_class_queues_higher_priorities_first(
    sqlite_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    normal = [j.id for j in api.submit([spec(1), spec(2)]).created]
    [high] = [j.id for j in api.submit([spec(3)], priority="high").created]
    a100 = [j.id for j in api.submit([spec(4), spec(5)], gpu_class="a100").created]
    [low] = [j.id for j in api.submit([spec(6)], gpu_class="a100", priority="low").created]
    [urgent] = [j.id for j in api.submit([spec(7)], gpu_class="a100", priority="high").created]
    queues = {j["id"]: j["queue"] for j in api.jobs()}
    place = {job_id: (q["name"], q["position"], q["depth"]) for job_id, q in queues.items()}
    # As a worker of each queue takes them: its high list first, then the oldest.
    assert place == {
        high: ("lora", 1, 3),
        normal[0]: ("lora", 2, 3),
        normal[1]: ("lora", 3, 3),
        urgent: ("lora.a100", 1, 4),
        a100[0]: ("lora.a100", 2, 4),
        a100[1]: ("lora.a100", 3, 4),
        low: ("lora.a100", 4, 4),
    }
    assert broker.queue_length("lora") == 3 and broker.queue_length("lora.a100") == 4
    frame = {q["name"]: q["queued"] for q in api.top()["queues"]}
    assert frame["lora"] == 3 and frame["lora.a100"] == 4
    code, out = run("status", str(urgent))
    assert code == 0 and "lora.a100: 1st of 4 queued" in out, out
    assert "start one with `ftqueue worker --class a100`" in out, out
    # `list` names a class queue in its progress column; a shared queue is the kind's own.
    monkeypatch.setenv("COLUMNS", "160")
    code, listed = run("list")
    assert code == 0 and "1st of 4 in lora.a100, no live worker" in listed, listed
    assert "1st of 3, no live worker" in listed, listed


def test_following_warns_of_a_class_queue_no_live_worker_consumes(
    sqlite_url: str, redis_url: str
) -> None:
    from ftqueue.cli.follow import IdleQueues

    [shared] = [j.id for j in api.submit([spec(1)]).created]
    [routed] = [j.id for j in api.submit([spec(2)], gpu_class="t4").created]
    idle = IdleQueues(after=0)
    lines = idle.lines(reads.job_states([shared, routed]))
    assert any("consumes queue lora;" in line for line in lines), lines
    assert any("GPU class t4 consumes queue lora.t4" in line for line in lines), lines
    assert idle.lines(reads.job_states([shared, routed])) == []  # said once per queue


def test_a_re_published_job_keeps_its_class_and_priority(sqlite_url: str, redis_url: str) -> None:
    sub = api.submit([spec(1)], gpu_class="h200", priority="high")
    [job] = sub.created
    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # the message lost
    summary = reaper.reap_once(lock_seconds=10, grace_seconds=0)
    assert summary.republished == [job.id]
    # High priority is step 0: the class queue's own list.
    assert waiting(client, "lora.h200") == [rows([job.id])[job.id].task_id]
    # A running job whose worker died: re-queued by the reaper, published where it was.
    assert lifecycle.claim(job.id, worker="gpu0@gone", lease_seconds=1)
    client.flushdb()
    time.sleep(1.2)
    summary = reaper.reap_once(lock_seconds=10, grace_seconds=0)
    assert summary.requeued == [job.id]
    task_id = rows([job.id])[job.id].task_id
    assert waiting(client, "lora.h200") == [task_id]
    assert broker.pending_task_ids() == {task_id}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--gpu-class", "A100!"], ["--gpu-class", "no GPU class"]),
        (["--priority", "urgent"], ["--priority", "high"]),
    ],
)
def test_bad_class_or_priority_is_one_line_and_writes_nothing(
    sqlite_url: str, redis_url: str, args: list[str], words: list[str]
) -> None:
    code, out = run("submit", "lora", *SYN, *args)
    assert code == 2, out
    assert all(w in out for w in words), out
    assert len(out.strip().splitlines()) <= 2, out  # click's usage line, then the error
    assert job_count() == 0 and broker.queue_length("lora") == 0


def test_strict_refuses_a_class_no_live_worker_serves_before_writing(
    sqlite_url: str, redis_url: str
) -> None:
    code, out = run("submit", "lora", *SYN, "--gpu-class", "a100", "--strict")
    assert code == 1, out
    assert out.strip().splitlines() == [
        "Error: no live worker of GPU class a100 takes lora.a100: start one with "
        "`ftqueue worker --class a100`, or leave out --strict to queue the jobs for "
        "when one starts"
    ]
    assert job_count() == 0
    # A live worker of the class, as its row says: accepted.
    workers.register(**roster.describe("big0@host", ["lora", "lora.a100"]))
    code, out = run("submit", "lora", *SYN, "--gpu-class", "a100", "--strict")
    assert code == 0 and "warning" not in out, out
    assert job_count() == 1


def test_a_strict_sweep_to_a_class_no_live_worker_serves_writes_nothing(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "kind: lora\nmodel: synthetic:seconds=0\ndataset: movie-snippets\n"
        "space: {seed: [1, 2, 3]}\nbudget: {max_parallel: 2}\ngpu_class: a100\n"
    )
    code, out = run("sweep", str(path), "--strict")
    assert code == 1, out
    assert len(out.strip().splitlines()) == 1 and "no live worker of GPU class a100" in out
    with db.session_scope() as session:
        assert session.execute(text("SELECT count(*) FROM sweeps")).scalar() == 0
    assert job_count() == 0 and broker.queue_length("lora.a100") == 0
    # Without --strict: queued, with the warning.
    code, out = run("sweep", str(path))
    assert code == 0 and "warning: no live worker of GPU class a100" in out, out
    assert job_count() == 2 and broker.queue_length("lora.a100") == 2


def test_a_sweep_file_routes_its_trials_and_they_stay_their_starters(
    sqlite_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftqueue.sweeps import sweepfile, trials

    monkeypatch.setenv("FTQUEUE_USER", "carol")
    reset_settings()
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "kind: lora\nmodel: synthetic:seconds=0\ndataset: movie-snippets\n"
        "space: {seed: [1, 2, 3]}\nbudget: {max_parallel: 2}\n"
        "gpu_class: t4\npriority: low\n"
    )
    started = api.start_sweep(file=path)
    assert len(started.created) == 2
    # The next trial is made later, by whichever worker: still carol's, on class t4.
    monkeypatch.setenv("FTQUEUE_USER", "someone-else")
    reset_settings()
    lifecycle.claim(started.created[0].id, worker="w@h", lease_seconds=60)
    with db.session_scope(write=True) as session:
        session.execute(text("UPDATE jobs SET status = 'succeeded' WHERE id = :i"),
                        {"i": started.created[0].id})  # fmt: skip
    trials.after_trial(started.created[0].id)
    made = rows()
    assert len(made) == 3
    assert {(j.gpu_class, j.priority, j.submitted_by) for j in made.values()} == {
        ("t4", 6, "carol")
    }
    for bad, words in (("gpu_class: T4!", "gpu_class"), ("priority: now", "priority")):
        path.write_text(f"kind: lora\nmodel: synthetic\ndataset: movie-snippets\n{bad}\n{SPACE}")
        with pytest.raises(FtqueueError) as caught:
            sweepfile.load(path)
        assert words in caught.value.message and "\n" not in caught.value.message


def test_list_report_and_the_runs_view_know_who_submitted(
    eager: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for user, seeds in (("alice", [1, 2]), ("bob", [3])):
        monkeypatch.setenv("FTQUEUE_USER", user)
        reset_settings()
        api.submit([spec(s, seconds=0) for s in seeds])
    code, out = run("list", "--user", "bob", "--json")
    assert code == 0, out
    assert [j["user"] for j in json.loads(out)] == ["bob"]
    with db.session_scope() as session:
        users = session.execute(text('SELECT DISTINCT "user" FROM runs ORDER BY 1')).scalars()
        assert list(users) == ["alice", "bob"]
    code, out = run("report", "--user", "alice", "--json")
    assert code == 0, out
    [row] = json.loads(out)
    assert row["n"] == 2  # alice's two seeds, not bob's
    code, out = run("report", "--user", "bob", "--json")
    assert [r["n"] for r in json.loads(out)] == [1]
    code, out = run("report", "--user", "nobody", "--json")
    assert json.loads(out) == []


def _insert(user: str, count: int) -> list[int]:
    with db.session_scope(write=True) as session:
        made = insert.create_jobs(
            session,
            [
                insert.NewJob(
                    kind="lora",
                    spec={"u": user, "n": i},
                    spec_hash=f"{user}{i}",
                    model="m",
                    dataset="d",
                    submitted_by=user,
                )
                for i in range(count)
            ],
            max_attempts=3,
        )
    return [job.id for job in made]


def test_the_cap_refuses_a_claim_without_counting_an_attempt(any_db_url: str) -> None:
    first, second = _insert("alice", 2)
    [other] = _insert("bob", 1)
    assert lifecycle.claim(first, worker="a@h", lease_seconds=60, max_running_per_user=1)
    with pytest.raises(lifecycle.OverUserCap):
        lifecycle.claim(second, worker="b@h", lease_seconds=60, max_running_per_user=1)
    assert lifecycle.claim(other, worker="b@h", lease_seconds=60, max_running_per_user=1)
    found = rows([second])[second]
    assert (found.status, found.attempts, found.worker) == ("queued", 0, None)
    # Under a cap of 2 it goes through.
    assert lifecycle.claim(second, worker="b@h", lease_seconds=60, max_running_per_user=2)


def test_the_keda_query_of_a_class_counts_what_list_shows(pg_url: str, redis_url: str) -> None:
    api.submit([spec(1), spec(2)], gpu_class="a100")
    api.submit([spec(3)], gpu_class="t4")
    api.submit([spec(4)])
    jobs = api.jobs(statuses=("queued", "running"))
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            count = {
                cls: conn.execute(text(reads.backlog_sql(["lora"], cls))).scalar()
                for cls in ("a100", "t4", None)
            }
            shared = conn.execute(text(reads.backlog_sql(["lora"], shared_only=True))).scalar()
    finally:
        engine.dispose()
    listed = {cls: len([j for j in jobs if j["gpu_class"] == cls]) for cls in ("a100", "t4")}
    assert count == {**listed, None: len(jobs)} == {"a100": 2, "t4": 1, None: 4}
    # The shared pool's count, where classes have pools: the jobs of no class.
    assert shared == len([j for j in jobs if j["gpu_class"] is None]) == 1
    with pytest.raises(ValueError):
        reads.backlog_sql(["lora"], "a100", shared_only=True)
    with pytest.raises(ValueError):
        reads.backlog_sql(["lora"], "a100' OR '1'='1")


# --- real workers ---------------------------------------------------------------------------


@pytest.mark.slow
def test_class_jobs_go_to_their_class_and_a_high_priority_job_overtakes_200(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = child_env(FTQUEUE_WORKER_REFRESH="1")
    shared = WorkerProcess("shared", env=env, log_dir=tmp_path, queues="lora").start()
    big = WorkerProcess("big", env=env, log_dir=tmp_path, queues="lora", gpu_class="a100")
    try:
        shared.wait_ready(timeout=120)
        # The worker busy with a first job, 199 more behind it, and two for class a100.
        [first] = [job.id for job in api.submit([spec(0, seconds=3)]).created]
        normal = [job.id for job in api.submit([spec(s) for s in range(1, 200)]).created]
        mine = [job.id for job in api.submit([spec(2000), spec(2001)], gpu_class="a100").created]
        wait_for(lambda: rows([first])[first].status == "running", timeout=60, what="job 1")
        [high] = [job.id for job in api.submit([spec(1000)], priority="high").created]
        wait_for(lambda: all_terminal([high]), timeout=60, what="the high-priority job")
        assert not all_terminal(mine)  # the shared worker does not take class a100's jobs
        big.start().wait_ready(timeout=120)
        wait_for(lambda: all_terminal(mine), timeout=60, what="the a100 jobs")
    finally:
        shared.stop()
        big.stop()
    found = rows()
    started = [i for _, i in sorted((j.started_at, j.id) for j in found.values() if j.started_at)]
    # Next after the job it was running: the high-priority one, ahead of all 199 others.
    assert started[:2] == [first, high], started[:4]
    assert {found[i].status for i in [first, high, *mine]} == {JobStatus.SUCCEEDED}
    # Only the a100 worker ran the a100 jobs (it asks its class's queue first).
    assert {str(found[i].worker).split("@")[0] for i in mine} == {"big0"}
    assert len(normal) == 199


@pytest.mark.slow
def test_two_users_two_workers_cap_one_never_more_than_one_running_each(
    sqlite_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids: list[int] = []
    for user, seeds in (("alice", range(4)), ("bob", range(10, 14))):
        monkeypatch.setenv("FTQUEUE_USER", user)
        reset_settings()
        ids += [job.id for job in api.submit([spec(s, seconds=0.5) for s in seeds]).created]
    env = child_env(FTQUEUE_MAX_RUNNING_PER_USER="1", FTQUEUE_CAP_RETRY_SECONDS="0.3")
    pair = [WorkerProcess(n, env=env, log_dir=tmp_path, queues="lora") for n in ("p", "q")]
    worst: dict[str, int] = {}
    both = threading.Event()
    stop = threading.Event()

    def sample() -> None:
        query = (
            select(Job.submitted_by, func.count())
            .where(Job.status == JobStatus.RUNNING)
            .group_by(Job.submitted_by)
        )
        while not stop.is_set():
            with db.session_scope() as session:
                running = dict(session.execute(query).all())
            for user, n in running.items():
                worst[str(user)] = max(worst.get(str(user), 0), int(n))
            if len(running) == 2:
                both.set()  # the two workers ran one job of each user at once
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        for worker in pair:
            worker.start()
        for worker in pair:
            worker.wait_ready(timeout=120)
        sampler.start()
        wait_for(lambda: all_terminal(ids), timeout=120, what="every job")
    finally:
        stop.set()
        for worker in pair:
            worker.stop()
    sampler.join(timeout=5)
    assert worst == {"alice": 1, "bob": 1}
    assert both.is_set()
    found = rows(ids)
    assert {j.status for j in found.values()} == {JobStatus.SUCCEEDED}
    # Held back many times, yet each ran once: one attempt, one start, one end.
    assert {j.attempts for j in found.values()} == {1}
    with db.session_scope() as session:
        events = session.execute(
            select(JobEvent.status, func.count()).where(JobEvent.job_id.in_(ids))
            .group_by(JobEvent.status)
        ).all()  # fmt: skip
    assert dict(events) == {"queued": 8, "running": 8, "succeeded": 8}
    logs = "".join(w.log() for w in pair)
    assert "held back" in logs  # the cap did act
    assert not broker.pending_task_ids()


def test_priorities_are_named_and_ordered() -> None:
    assert [p.level for p in Priority] == [0, 3, 6]
    assert Priority.of_level(None) == Priority.NORMAL


def test_workers_started_by_hand_read_their_class_from_their_queues(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FTQUEUE_WORKER_CLASS", raising=False)
    assert roster.class_of(["lora", "lora.a100"]) == "a100"
    assert roster.class_of(["lora"]) is None
    monkeypatch.setenv("FTQUEUE_WORKER_CLASS", "h200")
    assert roster.class_of(["lora"]) == "h200"


def test_a_worker_class_that_is_no_plain_name_is_refused_in_one_line() -> None:
    code, out = run("worker", "--class", "A 100")
    assert code == 2, out
    assert "--class" in out and "no class name" in out and "a100" in out
