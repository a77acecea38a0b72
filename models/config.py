"""GPT-2 configurations and presets."""
from dataclasses import asdict, dataclass, replace

from mlbh.tracer.errors import ConfigError


def pad_vocab(vocab_size: int, multiple: int = 64) -> int:
    return (vocab_size + multiple - 1) // multiple * multiple


@dataclass(frozen=True)
class GPT2Config:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024          # context length
    vocab_size: int = 50257
    dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    compute_dtype: str = "float32"  # "bfloat16" for mixed precision on CUDA
    # recompute each layer's attention (q k^T, softmax, probs v) in the backward pass instead
    # of keeping its (batch, heads, seq, seq) probabilities: less memory, two more GEMMs a layer
    remat_attention: bool = False

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if min(self.n_layer, self.n_head, self.n_embd, self.block_size, self.vocab_size) < 1:
            raise ConfigError(f"every GPT2Config size must be positive: {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.compute_dtype not in ("float32", "bfloat16", "float16", "float64"):
            raise ConfigError(f"compute_dtype must be float32, bfloat16, float16 or float64, got {self.compute_dtype!r}")

    @property
    def padded_vocab(self) -> int:
        return pad_vocab(self.vocab_size)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPT2Config":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown GPT2Config fields: {', '.join(unknown)}")
        return cls(**known)

    def replace(self, **changes) -> "GPT2Config":
        return replace(self, **changes)


PRESETS = {
    "gpt2": GPT2Config(12, 12, 768, 1024),
    "gpt2-medium": GPT2Config(24, 16, 1024, 1024),
    "gpt2-large": GPT2Config(36, 20, 1280, 1024),
    "gpt2-xl": GPT2Config(48, 25, 1600, 1024),
    "tiny": GPT2Config(4, 4, 128, 256),
    "mini": GPT2Config(2, 2, 64, 128),
}


def preset(name: str, **overrides) -> GPT2Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides)
