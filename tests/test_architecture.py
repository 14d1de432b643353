"""The package's shape: no import cycles, layers that point one way, kinds named in one place,
and a new kind added through the registry alone."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import grimp
import pytest

from ftqueue import kinds
from ftqueue.core.outcome import Measurement, Outcome, Progress
from ftqueue.core.states import AttemptEnd, Phase
from ftqueue.errors import SpecError
from ftqueue.execution import attempt
from ftqueue.kinds import registry
from ftqueue.queue.app import celery_config
from ftqueue.settings import get_settings
from ftqueue.specs import (
    DataSpec,
    ModelSpec,
    eval_batch_size_field,
    max_length_field,
    param,
    required,
)
from ftqueue.store import db, insert, reads
from ftqueue.store.schema import Job
from ftqueue.submit import enqueue

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ftqueue"


def test_no_import_cycles() -> None:
    """Counting imports inside functions too: a lazy import is still a dependency."""
    graph = grimp.build_graph("ftqueue", exclude_type_checking_imports=True)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported == module:
                continue
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.append(f"{module} -> {' -> '.join(back)}")
    assert cycles == []


def test_lazy_imports_are_dependencies_too() -> None:
    """The trainer loads on first use; the checks must still see what it loads, or a cycle
    through a lazy import (kinds -> training -> kinds) would pass unseen."""
    graph = grimp.build_graph("ftqueue", exclude_type_checking_imports=True)
    lazy = graph.find_modules_directly_imported_by("ftqueue.training")
    assert {"ftqueue.training.lora", "ftqueue.training.predicting"} <= lazy
    assert not graph.chain_exists(importer="ftqueue.training", imported="ftqueue.kinds")


def _layers() -> list[list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [contract] = [c for c in config["contracts"] if c["type"] == "layers"]
    return [re.split(r"\s*[|:]\s*", layer) for layer in contract["layers"]]


def test_every_package_has_a_layer() -> None:
    """A new package cannot slip past the layers: each one, and each top-level module that is
    not an entry point, is in exactly one layer."""
    named = [name.removeprefix("ftqueue.") for layer in _layers() for name in layer]
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")} - {"migrations"}
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__", "pytest_entry"}
    assert sorted(named) == sorted(packages | modules)


def test_the_top_level_is_small() -> None:
    """Concerns live in packages; the top level holds the version, the entry points, the
    settings and the error types."""
    assert len(list(PACKAGE.glob("*.py"))) <= 6


def test_import_contracts_hold() -> None:
    """report/ never imports cli/, the queue core never imports the trainer, layers point down."""
    out = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert "0 broken" in out.stdout


def _string_literals(path: Path) -> list[str]:
    """Every string constant of a module except docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            docstrings.add(id(first.value))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


@pytest.mark.parametrize("name", kinds.names())
def test_a_kind_is_spelled_in_few_files(name: str) -> None:
    spelled = sorted(
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if any(s in (name, f"ftqueue.{name}") for s in _string_literals(path))
    )
    assert len(spelled) <= 5, spelled
    assert f"ftqueue/kinds/{name}.py" in spelled


# --- a kind added by a test, through the registry alone ------------------------------------


@dataclass(frozen=True, kw_only=True)
class EchoSpec(ModelSpec):
    kind = "echo-test"

    model: str = required("text", "Any model name.")
    data: DataSpec
    words: int = param(3, "int", "How many words to write.", lo=1, hi=10)
    max_length: int = max_length_field()
    eval_batch_size: int | None = eval_batch_size_field()


def _echo(spec: EchoSpec, ctx: kinds.JobContext) -> Outcome:
    assert ctx.staging is not None
    ctx.on_progress(Progress(Phase.TRAIN, 1, 1, 1, None))
    (ctx.staging / "echo.txt").write_text("echo " * spec.words)
    measurement = Measurement("test", 0, 1.0, 0.0, 1.0, spec.words)
    return Outcome([measurement], ctx.staging, {"words": spec.words})


@pytest.fixture
def echo_kind() -> object:
    kind = registry.register(
        kinds.JobKind(
            name="echo-test",
            spec_type=EchoSpec,
            perform=_echo,
            role=kinds.Role.OTHER,
            artifacts="echoes",
        )
    )
    yield kind
    registry.unregister("echo-test")


def test_a_new_kind_runs_through_the_registry_alone(sqlite_url: str, echo_kind: object) -> None:
    spec = EchoSpec(model="any", data=DataSpec(dataset="movie-snippets"), words=4)
    with db.session_scope(write=True) as session:
        [job] = insert.create_jobs(
            session,
            [
                insert.NewJob(
                    kind=spec.kind,
                    spec=spec.to_dict(),
                    spec_hash=spec.spec_hash(),
                    model=spec.model,
                    dataset=spec.data.dataset,
                )
            ],
            max_attempts=3,
        )
        job_id = job.id
    # The queue routes it to its own queue under its own task name.
    config = celery_config(get_settings())
    assert config["task_routes"]["ftqueue.echo-test"] == {"queue": "echo-test"}
    assert "echo-test" in {q.name for q in config["task_queues"]}
    # The execution path gives it a staging directory because it publishes one.
    assert attempt.run_job(job_id, worker="w@test") == AttemptEnd.SUCCEEDED
    with db.session_scope() as session:
        row = reads.get_job(session, job_id, with_results=True)
        assert row.status == "succeeded" and row.stats["words"] == 4
        assert [r.n_examples for r in row.results] == [4]
        assert row.output_path == f"echoes/job-{job_id}"  # relative to the artifacts root
        published = get_settings().artifacts_dir / row.output_path
    assert (published / "echo.txt").read_text() == "echo " * 4
    with db.session_scope() as session:
        assert [j.id for j in reads.list_jobs(session, job_kinds=["echo-test"])] == [job_id]
    # It is no run and no evaluation, so the report leaves it out.
    from ftqueue.report import ReportOptions, build_report

    with db.session_scope() as session:
        assert build_report(session, ReportOptions()).rows == []


def test_unknown_kinds_are_refused_where_jobs_are_made(sqlite_url: str) -> None:
    """Jobs are made in one place (submit.enqueue), and there the registry checks the kind."""
    with pytest.raises(SpecError, match="unknown job kind 'nope'"):
        enqueue.jobs([insert.NewJob(kind="nope", spec={}, spec_hash="h", model="m", dataset="d")])
    with db.session_scope() as session:
        assert session.query(Job).count() == 0
