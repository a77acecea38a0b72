"""Training configuration: defaults, a TOML/JSON file, flags on top; validated up front."""
import json
import os
import typing
from dataclasses import asdict, dataclass, fields, replace

from mlbh.tracer.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "tiny"
    data: str | None = None          # prepared dataset dir; None = the packaged Shakespeare corpus
    out: str = "runs/shakespeare"
    vocab_size: int = 2048           # BPE vocabulary trained for the default corpus
    seq_len: int = 128
    micro_batch: int = 8             # sequences per micro-step
    global_batch: int = 16           # sequences per optimizer step
    max_steps: int = 300
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 30
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_interval: int = 50
    eval_batches: int = 8
    log_interval: int = 1
    keep_last: int = 2
    seed: int = 0
    backend: str | None = None       # cpu | cuda | reference; None = cuda if available
    compute_dtype: str | None = None  # None: bfloat16 on cuda, float32 on cpu
    remat_attention: bool = False     # recompute attention in the backward pass (models.config)
    sample_tokens: int = 200
    resume: bool = False
    world_size: int = 1

    def validate(self):
        check_setting_types(self.to_dict(), "setting")
        if self.micro_batch < 1 or self.global_batch < 1 or self.world_size < 1:
            raise ConfigError("micro_batch, global_batch and world_size must be positive")
        per_step = self.micro_batch * self.world_size
        if self.global_batch % per_step:
            raise ConfigError(f"global_batch {self.global_batch} is not divisible by micro_batch x world_size "
                              f"= {self.micro_batch} x {self.world_size}")
        if self.max_steps < 1 or self.seq_len < 1:
            raise ConfigError("max_steps and seq_len must be positive")
        if self.eval_interval < 1 or self.eval_batches < 1 or self.log_interval < 1:
            raise ConfigError("eval_interval, eval_batches and log_interval must be positive")
        if self.warmup_steps < 0 or self.sample_tokens < 0 or self.keep_last < 1:
            raise ConfigError("warmup_steps and sample_tokens must be >= 0, keep_last >= 1")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError(f"weight_decay and grad_clip must be >= 0 (grad_clip 0 = off), got "
                              f"{self.weight_decay} and {self.grad_clip}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"AdamW needs 0 <= beta1, beta2 < 1, got {self.beta1} and {self.beta2}")
        if self.backend not in (None, "cpu", "cuda", "reference"):
            raise ConfigError(f"backend must be cpu, cuda or reference, got {self.backend!r}")
        return self

    @property
    def grad_accum(self) -> int:
        return self.global_batch // (self.micro_batch * self.world_size)

    def to_dict(self):
        return asdict(self)

    def with_overrides(self, **flags):
        """Flags that were given (not None) replace the values."""
        given = {k: v for k, v in flags.items() if v is not None}
        unknown = sorted(set(given) - {f.name for f in fields(self)})
        if unknown:
            raise ConfigError(f"unknown training settings: {', '.join(unknown)}")
        return replace(self, **given)


def load_config_file(path) -> dict:
    """Settings from a .toml or .json file (every TrainConfig field may appear)."""
    if not os.path.exists(path):
        raise ConfigError(f"{path}: no such config file")
    try:
        if path.endswith(".toml"):
            import tomllib
            with open(path, "rb") as f:
                data = tomllib.load(f)
        else:
            with open(path) as f:
                data = json.load(f)
    except (ValueError, OSError) as err:
        raise ConfigError(f"{path}: cannot parse config ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a table/object of settings")
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{path}: unknown settings {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    check_setting_types(data, f"{path}: setting")
    return data


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def check_setting_types(settings: dict, where: str):
    """Each value has its TrainConfig field's type (an integer is a fine float; a bool is not
    an integer, though Python says it is)."""
    types = {f.name: f.type for f in fields(TrainConfig)}
    for name, value in settings.items():
        allowed = typing.get_args(types[name]) or (types[name],)
        if value is None and type(None) in allowed:
            continue
        kind = bool if isinstance(value, bool) else type(value)
        if kind in allowed or (kind is int and float in allowed):
            continue
        wanted = " or ".join(_TYPE_NAMES[t] for t in allowed if t in _TYPE_NAMES)
        raise ConfigError(f"{where} {name} must be {wanted}, got {value!r}")
