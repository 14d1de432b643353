"""Uploading an exported model to the Hugging Face hub, through huggingface_hub (torch-free).

Everything that can be checked without the hub is checked before the (long) export starts:
the repository id and that a token is there to upload with.
"""

from __future__ import annotations

from pathlib import Path

from ftqueue.errors import FtqueueError, SpecError, first_line


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
