"""Job specs: frozen dataclasses whose fields declare their own checks (torch-free).

A field made with ``param(...)`` carries a ``Param``: its range or choices, its help text,
whether the command line expands a comma list of it into a grid, and whether reports treat it
as a hyper-parameter. The spec checks every such field on construction, the CLI builds its
flags from the same ``Param`` (cli/options.py), and reports read the hyper-parameter list from
it, so a range is written once. Each job kind's spec lives in its module under ``kinds/``.
"""

from ftqueue.inputs.weights import MODEL_ALIASES, is_local_model, model_max_length, resolve_model
from ftqueue.specs.base import (
    BIASES,
    DATASET_ALIASES,
    MAX_CLASS_NAMES,
    MAX_LENGTH_CAP,
    NOT_CONFIG,
    POOLINGS,
    SELECT_EPOCHS,
    SPLITS,
    DataSpec,
    JobSpec,
    ModelSpec,
    Spec,
    canonical_json,
    config_hash,
    digest,
    eval_batch_size_field,
    max_length_field,
    model_fingerprint_field,
    seed_field,
    validate_against_model,
)
from ftqueue.specs.params import Param, ParamKind, field_param, flag, param, required, spec_params

__all__ = [
    "BIASES",
    "DATASET_ALIASES",
    "MAX_CLASS_NAMES",
    "MAX_LENGTH_CAP",
    "MODEL_ALIASES",
    "NOT_CONFIG",
    "POOLINGS",
    "SELECT_EPOCHS",
    "SPLITS",
    "DataSpec",
    "JobSpec",
    "ModelSpec",
    "Param",
    "ParamKind",
    "Spec",
    "canonical_json",
    "config_hash",
    "digest",
    "eval_batch_size_field",
    "field_param",
    "flag",
    "is_local_model",
    "max_length_field",
    "model_fingerprint_field",
    "model_max_length",
    "param",
    "required",
    "resolve_model",
    "seed_field",
    "spec_params",
    "validate_against_model",
]
