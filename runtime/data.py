"""The prepared-dataset format and its loader.

A prepared directory holds raw little-endian uint16 token shards and a meta.json:

    {"format": "mlbh-tokens", "version": 1, "vocab_size": V, "eot_id": E, "dtype": "uint16",
     "tokenizer": "tokenizer.json" | null,          # relative to the directory
     "splits": {"train": {"shards": [{"file", "tokens", "sha256"}], "tokens", "documents"},
                "val": {...}}}

A split is one token stream: its shards concatenated in order. Every document starts
with the end-of-text token, so the stream reads E doc E doc ...
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from mlbh.tracer.errors import DataError

FORMAT = "mlbh-tokens"
VERSION = 1
META_FILE = "meta.json"
TOKEN_DTYPE = np.dtype("<u2")
IGNORE_INDEX = -100  # target value that the loss must skip


def read_meta(directory):
    """Parse and sanity-check directory/meta.json."""
    meta_path = Path(directory) / META_FILE
    if not meta_path.exists():
        raise DataError(f"{meta_path}: missing — {directory} is not a prepared dataset")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{meta_path}: unreadable ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: not a JSON object")
    if meta.get("format") != FORMAT:
        raise DataError(f"{meta_path}: format {meta.get('format')!r} is not {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise DataError(f"{meta_path}: version {meta.get('version')!r} is not supported (expected {VERSION})")
    if meta.get("dtype") != "uint16":
        raise DataError(f"{meta_path}: token dtype {meta.get('dtype')!r} is not supported (expected 'uint16')")
    for key in ("vocab_size", "eot_id"):
        if not isinstance(meta.get(key), int) or meta[key] < 0:
            raise DataError(f"{meta_path}: missing or invalid {key!r}")
    if not 0 < meta["vocab_size"] <= 65536 or meta["eot_id"] >= meta["vocab_size"]:
        raise DataError(f"{meta_path}: vocab_size {meta['vocab_size']} / eot_id {meta['eot_id']} do not fit uint16 tokens")
    if not isinstance(meta.get("splits"), dict):
        raise DataError(f"{meta_path}: missing 'splits'")
    return meta


class TokenDataset:
    """One split of a prepared dataset, memory-mapped.

    `verify=True` also hashes every shard against meta.json and checks every token id is
    below vocab_size (reads the whole split).
    """

    def __init__(self, directory, split="train", verify=False):
        self.directory = Path(directory)
        self.split = split
        self.meta = read_meta(self.directory)
        meta_path = self.directory / META_FILE
        if split not in self.meta["splits"]:
            raise DataError(f"{meta_path}: no split {split!r} (has: {', '.join(self.meta['splits'])})")
        info = self.meta["splits"][split]
        shard_entries = _shard_entries(meta_path, split, info)
        self.vocab_size = self.meta["vocab_size"]
        self.eot_id = self.meta["eot_id"]
        self.documents = info.get("documents")
        self.shard_paths = []
        self.shards = []
        for shard in shard_entries:
            path = self.directory / shard["file"]
            self.shard_paths.append(path)
            self.shards.append(_map_shard(path, shard["tokens"]))
            if verify:
                _verify_shard(path, self.shards[-1], shard.get("sha256"), self.vocab_size)
        lengths = [len(s) for s in self.shards]
        # shard_starts[i] is the stream position of shard i's first token.
        self.shard_starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        self.num_tokens = int(self.shard_starts[-1])
        if info.get("tokens") != self.num_tokens:
            raise DataError(
                f"{meta_path}: split {split!r} declares {info.get('tokens')} tokens but its shards hold {self.num_tokens}"
            )

    @property
    def tokenizer_path(self):
        """Absolute path of the tokenizer saved with the data, or None."""
        relative = self.meta.get("tokenizer")
        return self.directory / relative if relative else None

    def __len__(self):
        return self.num_tokens

    def read(self, start, length):
        """Tokens [start, start+length) of the split's stream, across shard boundaries."""
        if start < 0 or start + length > self.num_tokens:
            raise DataError(f"{self.directory}: read of [{start}, {start + length}) outside the {self.num_tokens}-token {self.split} split")
        if length == 0:
            return np.zeros(0, TOKEN_DTYPE)
        first = int(np.searchsorted(self.shard_starts, start, side="right")) - 1
        offset = start - int(self.shard_starts[first])
        if offset + length <= len(self.shards[first]):
            return np.asarray(self.shards[first][offset : offset + length])
        pieces, remaining, shard = [], length, first
        while remaining > 0:
            piece = self.shards[shard][offset : offset + remaining]
            pieces.append(piece)
            remaining -= len(piece)
            shard, offset = shard + 1, 0
        return np.concatenate(pieces)

    def get_batch(self, step, micro_step, batch_size, seq_len, seed=0):
        """Random training windows: (tokens, targets), both int32 [batch_size, seq_len].

        The windows depend only on (seed, step, micro_step) and the data, never on what
        was drawn before, so a resumed run sees exactly the batches of an uninterrupted one.
        targets[b, t] is the token after tokens[b, t].
        """
        if self.num_tokens < seq_len + 1:
            raise DataError(
                f"{self.directory}: {self.split} split has {self.num_tokens} tokens; "
                f"a window of seq_len {seq_len} needs at least {seq_len + 1}"
            )
        rng = batch_rng(seed, step, micro_step)
        starts = rng.integers(0, self.num_tokens - seq_len, size=batch_size)
        windows = np.stack([self.read(int(s), seq_len + 1) for s in starts]).astype(np.int32)
        return windows[:, :-1], windows[:, 1:].copy()

    def num_eval_windows(self, seq_len, max_tokens=None):
        covered = self.num_tokens if max_tokens is None else min(self.num_tokens, max_tokens)
        return -(-covered // seq_len)

    def iter_eval_batches(self, batch_size, seq_len, max_tokens=None):
        """Non-overlapping windows that cover the split exactly once, in order.

        The stream's first M = min(num_tokens, max_tokens) positions are cut into
        ceil(M / seq_len) windows of seq_len inputs each; the target of position i is
        token i+1. Where there is no such token (the very last token of the split) or
        no input at all (past M in the final window), the target is -100 and the input
        is eot_id. Thus every real next-token prediction inside the first M positions is
        scored exactly once: min(M, num_tokens - 1) targets in all.

        Every batch is a full (tokens, targets) pair of int32 [batch_size, seq_len]; rows of
        the last batch beyond the final window are all padding (targets -100), so a
        compiled eval step sees one shape.
        """
        covered = self.num_tokens if max_tokens is None else min(self.num_tokens, max_tokens)
        num_windows = self.num_eval_windows(seq_len, max_tokens)
        for first_window in range(0, num_windows, batch_size):
            tokens = np.full((batch_size, seq_len), self.eot_id, np.int32)
            targets = np.full((batch_size, seq_len), IGNORE_INDEX, np.int32)
            for row in range(min(batch_size, num_windows - first_window)):
                start = (first_window + row) * seq_len
                n_inputs = min(seq_len, covered - start)
                n_targets = min(n_inputs, self.num_tokens - 1 - start)
                window = self.read(start, max(n_inputs, n_targets + 1))
                tokens[row, :n_inputs] = window[:n_inputs]
                targets[row, :n_targets] = window[1 : n_targets + 1]
            yield tokens, targets


def batch_rng(seed, step, micro_step):
    """A generator that is a pure function of (seed, step, micro_step)."""
    for name, value in (("seed", seed), ("step", step), ("micro_step", micro_step)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise DataError(f"get_batch: {name} must be a non-negative int, got {value!r}")
    key = np.random.SeedSequence([int(seed), int(step), int(micro_step)]).generate_state(2, np.uint64)
    return np.random.Generator(np.random.Philox(key=key))


def _shard_entries(meta_path, split, info):
    shards = info.get("shards") if isinstance(info, dict) else None
    if not isinstance(shards, list):
        raise DataError(f"{meta_path}: split {split!r} has no 'shards' list")
    for index, shard in enumerate(shards):
        if not (
            isinstance(shard, dict)
            and isinstance(shard.get("file"), str)
            and isinstance(shard.get("tokens"), int)
            and shard["tokens"] >= 0
        ):
            raise DataError(f"{meta_path}: split {split!r} shard #{index} needs 'file' and 'tokens'")
    return shards


def _map_shard(path, expected_tokens):
    if not path.exists():
        raise DataError(f"{path}: shard listed in {META_FILE} is missing")
    size = path.stat().st_size
    if size != expected_tokens * TOKEN_DTYPE.itemsize:
        raise DataError(
            f"{path}: {size} bytes, but {META_FILE} says {expected_tokens} tokens "
            f"({expected_tokens * TOKEN_DTYPE.itemsize} bytes); the shard is truncated or stale"
        )
    if size == 0:
        return np.zeros(0, TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r")


def _verify_shard(path, tokens, expected_sha256, vocab_size, chunk=1 << 22):
    digest = hashlib.sha256()
    for begin in range(0, len(tokens), chunk):
        block = np.asarray(tokens[begin : begin + chunk])
        digest.update(block.tobytes())
        bad = np.flatnonzero(block >= vocab_size)
        if len(bad):
            offset = begin + int(bad[0])
            raise DataError(
                f"{path}: token id {int(block[bad[0]])} at token offset {offset} (byte {2 * offset}) "
                f"is not below vocab_size {vocab_size}"
            )
    if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
        raise DataError(f"{path}: sha256 {digest.hexdigest()} does not match {META_FILE} ({expected_sha256})")
