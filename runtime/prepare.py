"""Tokenize a text corpus into a prepared dataset (format: see mlbh.runtime.data).

Work is resumable: after every shard, out_dir/progress.json records the finished shards,
how many source documents they account for, and the not-yet-sharded tail tokens of each
split (saved beside it). A rerun with the same arguments continues from there; shards are
cut at exact token counts, so the result is byte-identical to an uninterrupted run.
meta.json is written last and marks the dataset complete.

Hugging Face `datasets` is imported only for .parquet files and hub names.
"""

import collections
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

from mlbh.runtime.atomic import atomic_write_json, atomic_writer
from mlbh.runtime.data import FORMAT, META_FILE, TOKEN_DTYPE, VERSION, read_meta
from mlbh.tracer.errors import ConfigError, DataError

DEFAULT_SHARD_TOKENS = 50_000_000  # 100 MB per uint16 shard
PROGRESS_FILE = "progress.json"
TOKENIZER_FILE = "tokenizer.json"
SPLITS = ("train", "val")
FILE_SUFFIXES = (".txt", ".jsonl", ".parquet")
CHUNK_CHARS = 1 << 20  # documents are sent to workers in chunks of about this many characters
CHUNK_DOCUMENTS = 4096
TOKENIZER_PROBE = "Probe: the quick brown fox, 1234 jumps\n\tover ünïcödé — ok?  <end>"


def prepare_dataset(
    source,
    out_dir,
    tokenizer,
    val_fraction=0.005,
    shard_tokens=DEFAULT_SHARD_TOKENS,
    num_proc=None,
    progress=True,
    seed=0,
    separator=None,
    text_field="text",
    hub_split="train",
    streaming=True,
):
    """Tokenize `source` into out_dir and return the dataset's meta dict.

    source: a path or list of paths (.txt: one document per file, or pieces split on
      `separator`; .jsonl: the `text_field` of each line; .parquet: the `text_field` column),
      a directory of such files, an iterable of document strings, or a hub name such as
      "Skylion007/openwebtext" (read with datasets.load_dataset, split `hub_split`).
    tokenizer: any object with encode(text) -> list[int], eot_id and vocab_size (<= 65536);
      encode_batch(texts) is used when present, save(path) stores it beside the data.
    val_fraction: share of documents (not tokens) that go to the val split, chosen by a
      hash of (seed, document index), so the split is the same however the work is divided.
    """
    out_dir = Path(out_dir)
    _check_tokenizer(tokenizer)
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if shard_tokens < 1:
        raise ConfigError(f"shard_tokens must be positive, got {shard_tokens}")
    num_proc = num_proc or _available_cpus()
    kind, value = resolve_source(source)
    fingerprint = {
        "source": describe_source(kind, value),
        "tokenizer": _tokenizer_fingerprint(tokenizer),
        "val_fraction": val_fraction,
        "seed": seed,
        "shard_tokens": shard_tokens,
        "separator": separator,
        "text_field": text_field,
        "hub_split": hub_split,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / META_FILE).exists():
        meta = read_meta(out_dir)
        if meta.get("prepare") != fingerprint:
            raise ConfigError(
                f"{out_dir}: already holds a prepared dataset made from other input or settings; "
                "choose another directory or delete it"
            )
        _remove_progress(out_dir)
        return meta

    run = PreparationState.resume(out_dir, fingerprint, shard_tokens)
    documents = iter_documents(kind, value, separator, text_field, hub_split, streaming)
    documents = itertools.islice(documents, run.documents_done, None)
    chunks = _chunks(documents, run.documents_done)
    chunk_tokenizer = ChunkTokenizer(tokenizer, seed, val_fraction)
    reporter = ProgressLine(enabled=progress, already=run.documents_done)
    for result in _tokenize_in_order(chunks, chunk_tokenizer, num_proc):
        written = 0
        for split in SPLITS:
            written += run.writers[split].add(result.tokens[split], result.documents[split])
        run.documents_done = result.end_index
        if written:
            run.save_progress()
        reporter.update(run)
    for writer in run.writers.values():
        writer.write_last_shard()
    run.save_progress()
    reporter.close(run)

    if val_fraction > 0 and run.writers["val"].documents == 0:
        print(
            f"warning: {out_dir}: the val split got no documents "
            f"({run.writers['train'].documents} documents at val_fraction={val_fraction}); "
            "raise val_fraction or split the text into more documents",
            file=sys.stderr,
        )
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "vocab_size": int(tokenizer.vocab_size),
        "eot_id": int(tokenizer.eot_id),
        "dtype": "uint16",
        "tokenizer": _save_tokenizer(tokenizer, out_dir),
        "splits": {split: writer.summary() for split, writer in run.writers.items()},
        "prepare": fingerprint,
    }
    atomic_write_json(out_dir / META_FILE, meta)
    _remove_progress(out_dir)
    return meta


# ---------------------------------------------------------------- sources


def resolve_source(source):
    """Classify `source` as ("files", [Path]), ("hub", name) or ("documents", iterable).

    A str or path names one file, a directory (its .txt/.jsonl/.parquet files, sorted) or,
    when no such path exists and it has no file suffix, a hub dataset. A list whose items
    are all paths, or single-line strings ending in a known suffix, is a file list; any
    other iterable yields the documents themselves.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in FILE_SUFFIXES)
            if not files:
                raise DataError(f"{path}: directory has no {', '.join(FILE_SUFFIXES)} files")
            return "files", files
        if path.exists() or isinstance(source, os.PathLike) or path.suffix in FILE_SUFFIXES:
            return "files", [path]
        return "hub", str(source)
    if isinstance(source, (list, tuple)) and source and all(map(_names_a_file, source)):
        return "files", [Path(p) for p in source]
    return "documents", source


def describe_source(kind, value):
    """A JSON-able fingerprint of the source, so a resumed run can refuse different input."""
    if kind == "files":
        described = []
        for path in value:
            stat = _stat(path)
            described.append({"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
        return {"files": described}
    if kind == "hub":
        return {"hub": value}
    if isinstance(value, (list, tuple)):
        digest = hashlib.sha256()
        for document in value:
            digest.update(str(document).encode("utf-8", "surrogatepass") + b"\0")
        return {"documents": len(value), "sha256": digest.hexdigest()}
    return {"iterable": type(value).__name__}  # a one-shot iterable cannot be fingerprinted


def iter_documents(kind, value, separator=None, text_field="text", hub_split="train", streaming=True):
    """Yield the document strings of a source classified by resolve_source."""
    if kind == "files":
        for path in value:
            yield from _file_documents(path, separator, text_field)
    elif kind == "hub":
        datasets = _import_datasets(f"hub dataset {value!r}")
        try:
            rows = datasets.load_dataset(value, split=hub_split, streaming=streaming)
        except Exception as e:  # datasets raises many unrelated types for a bad name
            raise DataError(f"hub dataset {value!r}: cannot load split {hub_split!r}: {e}") from e
        yield from _row_texts(rows, text_field, f"hub dataset {value!r}")
    else:
        for index, document in enumerate(value):
            if not isinstance(document, str):
                raise DataError(f"document #{index} is a {type(document).__name__}, not str")
            yield document


def _names_a_file(item):
    if isinstance(item, os.PathLike):
        return True
    return isinstance(item, str) and "\n" not in item and len(item) < 4096 and Path(item).suffix in FILE_SUFFIXES


def _stat(path):
    try:
        return path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: source file not found") from None


def _file_documents(path, separator, text_field):
    _stat(path)
    if path.suffix == ".txt":
        text = _read_utf8(path)
        pieces = text.split(separator) if separator else [text]
        yield from (piece for piece in pieces if piece.strip())
    elif path.suffix == ".jsonl":
        yield from _jsonl_documents(path, text_field)
    elif path.suffix == ".parquet":
        datasets = _import_datasets(str(path))
        try:
            rows = datasets.load_dataset("parquet", data_files=str(path), split="train", streaming=True)
            yield from _row_texts(rows, text_field, str(path))
        except DataError:
            raise
        except Exception as e:  # pyarrow and datasets raise many types for a broken file
            raise DataError(f"{path}: cannot read it as parquet ({e})") from e
    else:
        raise DataError(f"{path}: unsupported source file type (expected {', '.join(FILE_SUFFIXES)})")


def _read_utf8(path):
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None


def _jsonl_documents(path, text_field):
    for line_number, line in enumerate(_read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{line_number}: invalid JSON ({e.msg})") from None
        text = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise DataError(f"{path}:{line_number}: no string field {text_field!r}")
        yield text


def _row_texts(rows, text_field, where):
    for index, row in enumerate(rows):
        text = row.get(text_field)
        if not isinstance(text, str):
            raise DataError(f"{where}: row {index} has no string column {text_field!r}")
        yield text


def _import_datasets(purpose):
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            f"{purpose}: reading parquet files and hub datasets needs Hugging Face `datasets` "
            "(pip install datasets, or pip install 'mlbh[data]')"
        ) from None
    return datasets


# ---------------------------------------------------------------- tokenization


class ChunkTokens:
    """Token streams of one chunk of documents, already split into train and val."""

    def __init__(self, end_index, tokens, documents):
        self.end_index = end_index  # index of the first document after this chunk
        self.tokens = tokens  # split -> uint16 array
        self.documents = documents  # split -> number of documents


class ChunkTokenizer:
    """Turns (first_index, [documents]) into ChunkTokens; picklable for worker processes."""

    def __init__(self, tokenizer, seed, val_fraction):
        self.tokenizer = tokenizer
        self.seed = seed
        self.val_fraction = val_fraction

    def __call__(self, chunk):
        first_index, texts = chunk
        encode_batch = getattr(self.tokenizer, "encode_batch", None)
        encoded = encode_batch(texts) if encode_batch else [self.tokenizer.encode(t) for t in texts]
        eot = np.array([self.tokenizer.eot_id], np.int64)
        pieces = {split: [] for split in SPLITS}
        for index, ids in enumerate(encoded, first_index):
            if len(ids) == 0:  # an empty document would add a lone end-of-text token
                continue
            split = "val" if is_val_document(index, self.seed, self.val_fraction) else "train"
            pieces[split] += [eot, np.asarray(ids, np.int64)]
        tokens = {}
        for split in SPLITS:
            ids = np.concatenate(pieces[split]) if pieces[split] else np.zeros(0, np.int64)
            bad = np.flatnonzero((ids < 0) | (ids >= self.tokenizer.vocab_size))
            if len(bad):
                raise DataError(
                    f"tokenizer produced id {int(ids[bad[0]])}, outside vocab_size {self.tokenizer.vocab_size}, "
                    f"in documents {first_index}..{first_index + len(texts) - 1}"
                )
            tokens[split] = ids.astype(TOKEN_DTYPE)
        documents = {split: len(pieces[split]) // 2 for split in SPLITS}
        return ChunkTokens(first_index + len(texts), tokens, documents)


def is_val_document(index, seed, val_fraction):
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < val_fraction * 2**64


def _chunks(documents, first_index):
    index = first_index
    while True:
        texts, chars = [], 0
        for text in documents:
            texts.append(text)
            chars += len(text)
            if chars >= CHUNK_CHARS or len(texts) >= CHUNK_DOCUMENTS:
                break
        if not texts:
            return
        yield index, texts
        index += len(texts)


_worker_tokenizer = None


def _start_worker(chunk_tokenizer):
    global _worker_tokenizer
    _worker_tokenizer = chunk_tokenizer


def _run_worker(chunk):
    return _worker_tokenizer(chunk)


def _tokenize_in_order(chunks, chunk_tokenizer, num_proc):
    """Yield ChunkTokens in source order, with at most 2 chunks per worker in flight."""
    if num_proc <= 1:
        yield from map(chunk_tokenizer, chunks)
        return
    with multiprocessing.Pool(num_proc, initializer=_start_worker, initargs=(chunk_tokenizer,)) as pool:
        in_flight = collections.deque()
        for chunk in chunks:
            in_flight.append(pool.apply_async(_run_worker, (chunk,)))
            if len(in_flight) >= 2 * num_proc:
                yield in_flight.popleft().get()
        while in_flight:
            yield in_flight.popleft().get()


def _available_cpus():
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check_tokenizer(tokenizer):
    for attribute in ("encode", "eot_id", "vocab_size"):
        if not hasattr(tokenizer, attribute):
            raise ConfigError(f"tokenizer {type(tokenizer).__name__} has no {attribute!r}")
    if not 0 < tokenizer.vocab_size <= 65536:
        raise ConfigError(f"vocab_size {tokenizer.vocab_size} does not fit uint16 tokens (at most 65536)")
    if not 0 <= tokenizer.eot_id < tokenizer.vocab_size:
        raise ConfigError(f"eot_id {tokenizer.eot_id} is outside vocab_size {tokenizer.vocab_size}")


def _tokenizer_fingerprint(tokenizer):
    probe = np.asarray(tokenizer.encode(TOKENIZER_PROBE), np.int64)
    return {
        "class": type(tokenizer).__qualname__,
        "vocab_size": int(tokenizer.vocab_size),
        "eot_id": int(tokenizer.eot_id),
        "probe_sha256": hashlib.sha256(probe.tobytes()).hexdigest(),
    }


def _save_tokenizer(tokenizer, out_dir):
    if not hasattr(tokenizer, "save"):
        return None
    final = out_dir / TOKENIZER_FILE
    temporary = out_dir / f".{TOKENIZER_FILE}.tmp-{os.getpid()}.json"
    tokenizer.save(str(temporary))
    os.replace(temporary, final)
    return TOKENIZER_FILE


# ---------------------------------------------------------------- shards and progress


class SplitWriter:
    """Cuts one split's token stream into shards of exactly shard_tokens (the last may be short)."""

    def __init__(self, out_dir, split, shard_tokens, shards=(), documents=0, pending=None):
        self.out_dir = out_dir
        self.split = split
        self.shard_tokens = shard_tokens
        self.shards = list(shards)
        self.documents = documents
        self.buffer = [] if pending is None or len(pending) == 0 else [pending]
        self.buffered = sum(len(b) for b in self.buffer)

    def add(self, tokens, documents):
        """Append tokens; write every full shard. Returns how many shards were written."""
        self.buffer.append(tokens)
        self.buffered += len(tokens)
        self.documents += documents
        written = 0
        while self.buffered >= self.shard_tokens:
            stream = self.pending_tokens()
            self._write_shard(stream[: self.shard_tokens])
            rest = stream[self.shard_tokens :]
            self.buffer, self.buffered = [rest], len(rest)
            written += 1
        return written

    def write_last_shard(self):
        if self.buffered:
            self._write_shard(self.pending_tokens())
            self.buffer, self.buffered = [], 0

    def pending_tokens(self):
        return np.concatenate(self.buffer) if self.buffer else np.zeros(0, TOKEN_DTYPE)

    def summary(self):
        return {
            "shards": self.shards,
            "tokens": sum(s["tokens"] for s in self.shards),
            "documents": self.documents,
        }

    def _write_shard(self, tokens):
        name = f"{self.split}_{len(self.shards):06d}.bin"
        tokens = np.ascontiguousarray(tokens, TOKEN_DTYPE)
        with atomic_writer(self.out_dir / name) as f:
            f.write(memoryview(tokens).cast("B"))
        sha256 = hashlib.sha256(memoryview(tokens).cast("B")).hexdigest()
        self.shards.append({"file": name, "tokens": int(len(tokens)), "sha256": sha256})


class PreparationState:
    """What is done so far: documents consumed, shards written, and the unsharded tails."""

    def __init__(self, out_dir, fingerprint, writers, documents_done=0, generation=0):
        self.out_dir = out_dir
        self.fingerprint = fingerprint
        self.writers = writers
        self.documents_done = documents_done
        self.generation = generation

    @classmethod
    def resume(cls, out_dir, fingerprint, shard_tokens):
        progress_path = out_dir / PROGRESS_FILE
        if not progress_path.exists():
            writers = {split: SplitWriter(out_dir, split, shard_tokens) for split in SPLITS}
            return cls(out_dir, fingerprint, writers)
        try:
            record = json.loads(progress_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{progress_path}: unreadable ({e}); delete {out_dir} to start over") from None
        if record.get("prepare") != fingerprint:
            raise ConfigError(
                f"{progress_path}: an interrupted preparation with other input or settings is here; "
                "rerun it with the same arguments, or delete the directory"
            )
        try:
            writers = {}
            for split in SPLITS:
                saved = record["splits"][split]
                pending = _read_pending(out_dir / saved["pending"]["file"], saved["pending"]["tokens"])
                writers[split] = SplitWriter(out_dir, split, shard_tokens, saved["shards"], saved["documents"], pending)
            return cls(out_dir, fingerprint, writers, record["documents_done"], record["generation"])
        except (KeyError, TypeError) as e:
            raise DataError(f"{progress_path}: malformed (missing {e}); delete {out_dir} to start over") from None

    def save_progress(self):
        self.generation += 1
        splits = {}
        for split, writer in self.writers.items():
            pending = writer.pending_tokens()
            name = f".pending-{split}-{self.generation:08d}.bin"
            with atomic_writer(self.out_dir / name) as f:
                f.write(memoryview(np.ascontiguousarray(pending)).cast("B"))
            splits[split] = {
                "shards": writer.shards,
                "documents": writer.documents,
                "pending": {"file": name, "tokens": int(len(pending))},
            }
        record = {
            "prepare": self.fingerprint,
            "documents_done": self.documents_done,
            "generation": self.generation,
            "splits": splits,
        }
        atomic_write_json(self.out_dir / PROGRESS_FILE, record)
        keep = {s["pending"]["file"] for s in splits.values()}
        _remove_pending(self.out_dir, keep)


def _read_pending(path, tokens):
    if not path.exists() or path.stat().st_size != tokens * TOKEN_DTYPE.itemsize:
        raise DataError(f"{path}: missing or wrong size for {tokens} pending tokens; delete {path.parent} to start over")
    return np.fromfile(path, dtype=TOKEN_DTYPE)


def _remove_pending(out_dir, keep=()):
    for entry in out_dir.glob(".pending-*.bin"):
        if entry.name not in keep:
            entry.unlink(missing_ok=True)


def _remove_progress(out_dir):
    (out_dir / PROGRESS_FILE).unlink(missing_ok=True)
    _remove_pending(out_dir)


# ---------------------------------------------------------------- progress display


class ProgressLine:
    """A throttled one-line status on stderr (a carriage-return line on a terminal)."""

    def __init__(self, enabled=True, already=0, interval=0.5):
        self.enabled = enabled
        self.interval = interval
        self.started = self.last = time.monotonic()
        self.already = already
        self.terminal = sys.stderr.isatty()

    def update(self, run, final=False):
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < self.interval * (1 if self.terminal else 20)):
            return
        self.last = now
        tokens = sum(w.buffered + sum(s["tokens"] for s in w.shards) for w in run.writers.values())
        rate = (run.documents_done - self.already) / max(now - self.started, 1e-9)
        line = f"prepare: {run.documents_done:,} documents, {tokens:,} tokens, {rate:,.0f} documents/s"
        print(("\r" if self.terminal else "") + line, end="" if self.terminal and not final else "\n", file=sys.stderr, flush=True)

    def close(self, run):
        self.update(run, final=True)
