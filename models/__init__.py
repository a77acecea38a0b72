"""mlbh.models: model functions, configs and presets, checkpoint-name maps."""
from .config import PRESETS, GPT2Config, preset  # noqa: F401
from .gpt2 import GPT2, forward, from_preset, init_params, loss, num_params, param_shapes  # noqa: F401

from mlbh.runtime.model_families import register_family  # noqa: E402

register_family("gpt2", GPT2.from_dict)
