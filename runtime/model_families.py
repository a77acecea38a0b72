"""Model families: how the model dict a checkpoint stores becomes a model object.

The runtime knows models only as objects (forward, loss, prefill, ...), never their modules.
A family registers a constructor here; mlbh.models registers GPT-2 when it is imported,
and load_model imports it on first need, so a checkpoint path is enough to get a model.
"""
import importlib

from mlbh.tracer.errors import CheckpointError

from .checkpoint import check_tensors, load_checkpoint

DEFAULT_FAMILY = "gpt2"
_FAMILIES = {}


def register_family(name, from_dict):
    """from_dict(model_dict) -> model object, for checkpoints whose model dict says family=name."""
    _FAMILIES[name] = from_dict


def model_from_dict(spec, where="model"):
    spec = dict(spec)
    family = spec.pop("family", DEFAULT_FAMILY)
    if family not in _FAMILIES:
        importlib.import_module("mlbh.models")  # the built-in families register on import
    if family not in _FAMILIES:
        raise CheckpointError(f"{where}: unknown model family {family!r} (known: {sorted(_FAMILIES)})")
    return _FAMILIES[family](spec)


def load_model(path):
    """(checkpoint, model object) for a run directory or a checkpoint directory; its
    parameters are checked against the model's names and shapes."""
    ck = load_checkpoint(path)
    spec = (ck.state or {}).get("model")
    if not isinstance(spec, dict):
        raise CheckpointError(f"{ck.path}: no model config in state.json")
    model = model_from_dict(spec, f"{ck.path}/state.json")
    check_tensors(ck.params, model.param_shapes(), f"{ck.path}: parameter")
    return ck, model
