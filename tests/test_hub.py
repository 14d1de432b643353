"""Hub ids at submit: refused when the hub says they do not exist, one line when it cannot be
asked. The hub is a local HTTP server answering like the Hugging Face API; no test reaches
the real one."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.procs import child_env, count_jobs

# Each test starts a local server (a fake hub, or one that never answers) and a subprocess.
pytestmark = pytest.mark.slow

KNOWN = {"/api/models/org/known-model", "/api/datasets/org/known-data"}


class FakeHub(BaseHTTPRequestHandler):
    """200 for the known repositories, 404 RepoNotFound (as the hub says it) for the rest."""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in KNOWN:
            body = json.dumps({"id": path.split("/", 3)[-1], "sha": "0" * 40}).encode()
            self.send_response(200)
        else:
            body = b'{"error": "Repository not found"}'
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def hub_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections and never answers: the slowest way to be unreachable."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def submit(endpoint: str | None, *args: str, offline: bool = False) -> tuple[int, str, str, float]:
    env = child_env()
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ftqueue", "submit", "lora", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def test_unknown_hub_model_and_dataset_are_refused(
    hub_url: str, sqlite_url: str, redis_url: str
) -> None:
    code, _, err, _ = submit(hub_url, "--model", "org/no-such-model", "--dataset", "movie-snippets")
    assert code == 2 and "no model 'org/no-such-model' on the Hugging Face hub" in err, err
    assert err.strip().count("\n") == 0
    code, _, err, _ = submit(hub_url, "--model", "minilm", "--dataset", "org/no-such-data")
    assert code == 2 and "no dataset 'org/no-such-data'" in err, err
    assert count_jobs() == 0
    code, out, err, _ = submit(
        hub_url, "--model", "org/known-model", "--dataset", "movie-snippets", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["notes"] == [] and count_jobs() == 1


@pytest.mark.parametrize("how", ["offline", "refused", "silent"])
def test_an_unreachable_hub_is_one_line_and_a_short_wait(
    how: str, sqlite_url: str, redis_url: str, silent_url: str
) -> None:
    endpoint = {"offline": None, "refused": "http://127.0.0.1:1", "silent": silent_url}[how]
    code, out, err, seconds = submit(
        endpoint,
        "--model",
        "org/model-one",
        "--dataset",
        "movie-snippets",
        "--json",
        offline=how == "offline",
    )
    assert code == 0, err
    notes = json.loads(out)["notes"]
    assert len(notes) == 1 and "cannot check model 'org/model-one'" in notes[0]
    assert [line for line in err.splitlines() if line.startswith("note:")] == [f"note: {notes[0]}"]
    assert count_jobs() == 1
    # Process start and imports included; the probe itself waits 3 s at most.
    assert seconds < (15 if how == "silent" else 10), seconds
