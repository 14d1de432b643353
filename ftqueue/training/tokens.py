"""Tokenized splits cached on disk, and length-bucketed, dynamically padded batches."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ftqueue.core.files import atomic_write
from ftqueue.inputs.labelled import LoadedData
from ftqueue.specs import SPLITS

#: Bumped when the cache layout changes, so old files are simply not found.
CACHE_VERSION = 1
#: Training batches are sorted by length inside windows of this many batches, then shuffled:
#: nearly all the padding saving of a full sort, while each epoch still mixes lengths.
BUCKET_WINDOW = 50
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "merges.txt", "spiece.model", "vocab.json")


@dataclass
class Tokens:
    """One split as ragged token ids (``ids[offsets[i]:offsets[i+1]]``) and labels; for
    sentence pairs, the token type ids (segment 0 or 1) beside the ids, where the tokenizer
    makes them."""

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    type_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def tokenizer_identity(name: str, path: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """Content hash of a local tokenizer's vocabulary files, else the model id and its class."""
    digest = hashlib.sha256(f"{type(tokenizer).__name__}:{tokenizer.model_max_length}".encode())
    files = [Path(path) / f for f in _TOKENIZER_FILES if (Path(path) / f).is_file()]
    if files:
        for file in files:
            digest.update(file.read_bytes())
    else:
        digest.update(name.encode())
    return digest.hexdigest()[:24]


def cache_path(cache_dir: Path, tokenizer_id: str, fingerprint: str, max_length: int) -> Path:
    key = hashlib.sha256(f"{CACHE_VERSION}:{tokenizer_id}:{fingerprint}:{max_length}".encode())
    return cache_dir / "tokens" / f"{key.hexdigest()[:32]}.npz"


def encode(
    texts: list[str],
    labels: list[int],
    tokenizer: PreTrainedTokenizerBase,
    n: int,
    pairs: list[str] | None = None,
) -> Tokens:
    """Token ids of ``texts`` (with ``pairs``: of each text and its pair, the longer one cut
    first) cut at ``n`` tokens, packed end to end."""
    if pairs is None:
        encoded = tokenizer(texts, truncation=True, max_length=n)
    else:
        encoded = tokenizer(texts, pairs, truncation="longest_first", max_length=n)
    rows = encoded["input_ids"]
    lengths = np.fromiter((len(x) for x in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    count = int(offsets[-1])
    ids = np.fromiter((t for x in rows for t in x), dtype=np.int32, count=count)
    type_ids = None
    if pairs is not None and "token_type_ids" in encoded:
        types = encoded["token_type_ids"]
        type_ids = np.fromiter((t for x in types for t in x), dtype=np.int8, count=count)
    return Tokens(ids, offsets, np.asarray(labels, dtype=np.int64), type_ids)


_ARRAYS = ("ids", "offsets", "labels")


def tokenize_splits(
    data: LoadedData,
    tokenizer: PreTrainedTokenizerBase,
    tokenizer_id: str,
    max_length: int,
    cache_dir: Path,
) -> tuple[dict[str, Tokens], bool]:
    """All three splits tokenized, from the cache when present; also whether it was a hit."""
    path = cache_path(cache_dir, tokenizer_id, data.fingerprint, max_length)
    if path.is_file():
        try:
            with np.load(path) as npz:
                return {
                    s: Tokens(
                        npz[f"{s}_ids"],
                        npz[f"{s}_offsets"],
                        npz[f"{s}_labels"],
                        npz[f"{s}_type_ids"] if f"{s}_type_ids" in npz.files else None,
                    )
                    for s in SPLITS
                }, True
        except (OSError, ValueError, KeyError):
            pass  # unreadable or stale: rebuild and overwrite it below
    splits = {
        s: encode(
            data.split(s).texts, data.split(s).labels, tokenizer, max_length, data.split(s).pairs
        )
        for s in SPLITS
    }
    arrays = {f"{s}_{k}": getattr(t, k) for s, t in splits.items() for k in _ARRAYS}
    arrays.update(
        {f"{s}_type_ids": t.type_ids for s, t in splits.items() if t.type_ids is not None}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)
    return splits, False


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    rows: np.ndarray  # the split's row indices, to put predictions back in order
    #: Sentence pairs only: which segment each token is in (None: the model's default, all 0).
    token_type_ids: torch.Tensor | None = None
    #: Fixed-shape batches only: 1 for a real row, 0 for a filler row (see training/shapes.py).
    weights: torch.Tensor | None = None


def collate(
    tokens: Tokens,
    rows: np.ndarray,
    pad_id: int,
    device: torch.device,
    *,
    width: int | None = None,
) -> Batch:
    """``rows`` padded to their longest (or to ``width``), on ``device``."""
    lengths = tokens.lengths[rows]
    width = int(lengths.max()) if width is None else width
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = None if tokens.type_ids is None else np.zeros((len(rows), width), dtype=np.int64)
    for i, (row, n) in enumerate(zip(rows, lengths, strict=True)):
        start = tokens.offsets[row]
        ids[i, :n] = tokens.ids[start : start + n]
        mask[i, :n] = 1
        if types is not None and tokens.type_ids is not None:
            types[i, :n] = tokens.type_ids[start : start + n]
    non_blocking = device.type == "cuda"
    return Batch(
        torch.from_numpy(ids).to(device, non_blocking=non_blocking),
        torch.from_numpy(mask).to(device, non_blocking=non_blocking),
        torch.from_numpy(tokens.labels[rows]).to(device, non_blocking=non_blocking),
        rows,
        None if types is None else torch.from_numpy(types).to(device, non_blocking=non_blocking),
    )


def train_batches(tokens: Tokens, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's batches: shuffled, length-sorted within windows, batch order shuffled."""
    order = rng.permutation(len(tokens))
    lengths = tokens.lengths
    window = batch_size * BUCKET_WINDOW
    batches: list[np.ndarray] = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(tokens: Tokens, batch_size: int) -> list[np.ndarray]:
    """Batches of rows sorted by length: the least padding there can be."""
    order = np.argsort(tokens.lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def batches(
    tokens: Tokens, plan: list[np.ndarray], pad_id: int, device: torch.device
) -> Iterator[Batch]:
    for rows in plan:
        yield collate(tokens, rows, pad_id, device)
