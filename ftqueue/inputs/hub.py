"""The Hugging Face hub, through huggingface_hub (torch-free).

Hub ids are checked at submit: an id that does not exist is refused while the hub is
reachable; when it is not (offline mode, no network), one line says the id could not be
checked, after one short request rather than a download's retries. Exports are pushed with
everything that can be checked without the hub (the repository id, a token) checked before
the long export starts.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from ftqueue.core.text import clip, quote
from ftqueue.errors import DatasetError, FtqueueError, ModelError, SpecError, first_line

#: A hub repository id, NAME or ORG/NAME, spelt as the hub allows (no "--" and no "..").
HUB_ID = re.compile(r"^(?!.*(--|\.\.))([A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")

#: One request, this long at most: a reachable hub answers in well under a second.
PROBE_SECONDS = 3.0
_TRUE = {"1", "true", "yes", "on"}

RepoType = Literal["model", "dataset"]
_FLAG: dict[RepoType, str] = {"model": "--model", "dataset": "--dataset"}
_INSTEAD: dict[RepoType, str] = {
    "model": "a local directory or the alias minilm",
    "dataset": "a local .csv/.jsonl/.parquet file or the alias movie-snippets",
}

#: A hub found unreachable is asked again after this long (workers run for days).
REPROBE_SECONDS = 60.0

#: Per process: each id's note (None: it exists), and why the hub was found unreachable.
_checked: dict[tuple[RepoType, str], str | None] = {}
_unreachable: list[str] = []
#: When the hub was last probed by ``unreachable``, and what was found (None: reachable).
_probed: list[tuple[float, str | None]] = []


def offline_reason() -> str | None:
    """Why huggingface_hub will not make requests (its offline switches), or None."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return f"{name} is set"
    return None


def check(repo_id: str, repo_type: RepoType) -> str | None:
    """None when ``repo_id`` exists on the hub; a one-line note when that cannot be checked.

    Raises ModelError or DatasetError (exit 2) when the hub answers that there is no such
    repository, or that it is private or gated and no token lets this machine see it.
    """
    key = (repo_type, repo_id)
    if key not in _checked:
        _checked[key] = _check(repo_id, repo_type)
    return _checked[key]


def _note(repo_id: str, repo_type: RepoType, why: str) -> str:
    return (
        f"cannot check {repo_type} {quote(repo_id)} on the Hugging Face hub ({clip(why)}): "
        "queued unchecked; a worker that cannot load it fails the job"
    )


def _check(repo_id: str, repo_type: RepoType) -> str | None:
    why = offline_reason() or (_unreachable[0] if _unreachable else None)
    if why is not None:
        return _note(repo_id, repo_type, why)
    import httpx2
    from huggingface_hub import constants, get_session, get_token
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    from huggingface_hub.utils import hf_raise_for_status

    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    token = get_token()
    # The library's own session and error mapping, without HfApi's user-agent headers: those
    # fetch a registry from the hub first, which doubles the wait when the hub is silent.
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = get_session().get(
            f"{endpoint}/api/{repo_type}s/{repo_id}", headers=headers, timeout=PROBE_SECONDS
        )
        hf_raise_for_status(response)
    except GatedRepoError:
        return None  # it exists; access is the workers' token's business
    except RepositoryNotFoundError:
        error: type[FtqueueError] = ModelError if repo_type == "model" else DatasetError
        raise error(
            f"no {repo_type} {quote(repo_id)} on the Hugging Face hub at {endpoint} (or it is "
            f"private and no token here can see it): check the id, or give {_INSTEAD[repo_type]}",
            param=_FLAG[repo_type],
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "an error"
        return _note(repo_id, repo_type, f"the hub answered {status}")
    except (httpx2.HTTPError, OSError) as exc:
        # Unreachable (refused, timed out, no route, offline mode set at import): say so once
        # and do not wait again for the other ids of this submit.
        _unreachable.append(f"{endpoint} is unreachable: {type(exc).__name__}")
        return _note(repo_id, repo_type, _unreachable[0])
    return None


def forget() -> None:
    """Check again on next use (tests, long-lived shells)."""
    _checked.clear()
    _unreachable.clear()
    _probed.clear()


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def unreachable() -> str | None:
    """Why the hub cannot be used now (an offline switch set, or "<endpoint> is unreachable:
    <error>" after no answer within PROBE_SECONDS), or None when it answers. The hub is
    probed at most once per REPROBE_SECONDS."""
    why = offline_reason()
    if why is not None:
        return why
    now = time.monotonic()
    if _probed and now - _probed[-1][0] < REPROBE_SECONDS:
        return _probed[-1][1]
    import httpx2
    from huggingface_hub import get_session

    endpoint = _endpoint()
    try:
        get_session().head(endpoint, timeout=PROBE_SECONDS)
        found = None
    except (httpx2.HTTPError, OSError) as exc:
        found = f"{endpoint} is unreachable: {type(exc).__name__}"
    _probed[:] = [(now, found)]
    return found


@contextmanager
def cache_only_if_unreachable() -> Iterator[str | None]:
    """Within: when the hub is unreachable, transformers and datasets read their local cache
    only, instead of retrying the hub for half a minute; yields why, or None.

    It sets the libraries' offline switches for this process, which is safe because a worker
    process runs one job at a time.
    """
    why = unreachable()
    if why is None or offline_reason() is not None:
        yield why
        return
    import sys

    from huggingface_hub import constants

    modules: list[Any] = [constants, sys.modules.get("datasets.config")]
    before = [getattr(m, "HF_HUB_OFFLINE", None) for m in modules]
    for module in modules:
        if module is not None:
            module.HF_HUB_OFFLINE = True
    try:
        yield why
    finally:
        for module, value in zip(modules, before, strict=True):
            if module is not None:
                module.HF_HUB_OFFLINE = value


# --- pushing an exported model ----------------------------------------------------------


class HubError(FtqueueError):
    """Raised when the hub cannot be reached or refuses the upload."""


def check_repo(repo: str) -> None:
    """A valid ``user/name`` repository id and a token to upload with, or SpecError."""
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise SpecError(
            f"--push-to-hub {repo!r} is not a hub repository id ({first_line(exc)}): "
            "use USER/NAME or ORG/NAME",
            param="--push-to-hub",
        ) from None
    if "/" not in repo:
        raise SpecError(
            f"--push-to-hub {repo!r} names no owner: use USER/NAME or ORG/NAME",
            param="--push-to-hub",
        )
    if get_token() is None:
        raise SpecError(
            "--push-to-hub needs a Hugging Face token with write access: run `hf auth login` "
            "or set HF_TOKEN",
            param="--push-to-hub",
        )


def push(directory: Path, repo: str, *, private: bool, message: str) -> str:
    """Create ``repo`` if needed and upload ``directory`` to it; returns the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo, folder_path=str(directory), commit_message=message)
    except Exception as exc:  # httpx, HfHubHTTPError, OSError: all mean "not uploaded"
        raise HubError(
            f"could not upload {directory} to the hub repository {repo} "
            f"({type(exc).__name__}: {first_line(exc)}); the export itself is complete: "
            f"upload it later with `hf upload {repo} {directory}`"
        ) from None
    return str(commit.commit_url)
