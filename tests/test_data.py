import hashlib
import importlib.util
import json

import numpy as np
import pytest

from mlbh.runtime import prepare
from mlbh.runtime.data import IGNORE_INDEX, TokenDataset
from mlbh.runtime.prepare import is_val_document, prepare_dataset
from mlbh.tracer.errors import ConfigError, DataError


class ByteTokenizer:
    """Stand-in tokenizer: one token per UTF-8 byte, end-of-text is 256."""

    vocab_size = 257
    eot_id = 256

    def __init__(self):
        self.encoded_documents = 0

    def encode(self, text):
        self.encoded_documents += 1
        return list(text.encode("utf-8"))

    def save(self, path):
        with open(path, "w") as f:
            json.dump({"kind": "bytes"}, f)


def make_documents(count=200, seed=0):
    rng = np.random.default_rng(seed)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "ünïcode", "—"]
    return [" ".join(rng.choice(words, size=rng.integers(1, 40))) for _ in range(count)]


def expected_streams(documents, seed=0, val_fraction=0.1):
    streams = {"train": [], "val": []}
    for index, document in enumerate(documents):
        split = "val" if is_val_document(index, seed, val_fraction) else "train"
        streams[split] += [256, *document.encode("utf-8")]
    return {split: np.array(ids, np.uint16) for split, ids in streams.items()}


def full_stream(dataset):
    return dataset.read(0, len(dataset))


def write_dataset(directory, splits, vocab_size=65536, eot_id=0):
    """A prepared dataset written by hand: splits maps name -> list of shard arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    meta_splits = {}
    for split, shards in splits.items():
        entries = []
        for index, shard in enumerate(shards):
            name = f"{split}_{index:06d}.bin"
            data = np.asarray(shard, "<u2")
            (directory / name).write_bytes(data.tobytes())
            entries.append({"file": name, "tokens": len(data), "sha256": hashlib.sha256(data.tobytes()).hexdigest()})
        meta_splits[split] = {"shards": entries, "tokens": sum(e["tokens"] for e in entries), "documents": 1}
    meta = {
        "format": "mlbh-tokens",
        "version": 1,
        "vocab_size": vocab_size,
        "eot_id": eot_id,
        "dtype": "uint16",
        "tokenizer": None,
        "splits": meta_splits,
    }
    (directory / "meta.json").write_text(json.dumps(meta))
    return meta


def counting_dataset(tmp_path, shard_sizes=(100, 37, 0, 250), name="data"):
    """Stream 0, 1, 2, ... cut into shards, so a token's value is its position."""
    bounds = np.cumsum([0, *shard_sizes])
    shards = [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    write_dataset(tmp_path / name, {"train": shards})
    return TokenDataset(tmp_path / name, "train")


# ---------------------------------------------------------------- prepare


def test_prepare_from_strings_matches_the_expected_token_streams(tmp_path):
    documents = make_documents()
    meta = prepare_dataset(
        documents, tmp_path / "out", ByteTokenizer(), val_fraction=0.1, shard_tokens=500, num_proc=1, progress=False
    )
    expected = expected_streams(documents)
    assert meta["format"] == "mlbh-tokens" and meta["vocab_size"] == 257 and meta["eot_id"] == 256
    assert meta["tokenizer"] == "tokenizer.json"
    for split in ("train", "val"):
        dataset = TokenDataset(tmp_path / "out", split, verify=True)
        np.testing.assert_array_equal(full_stream(dataset), expected[split])
        shard_sizes = [s["tokens"] for s in meta["splits"][split]["shards"]]
        assert all(size == 500 for size in shard_sizes[:-1]) and 0 < shard_sizes[-1] <= 500
    assert meta["splits"]["val"]["documents"] + meta["splits"]["train"]["documents"] == len(documents)
    assert 0 < meta["splits"]["val"]["documents"] < 50
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".") or "progress" in p.name) == []


def test_prepare_with_worker_processes_gives_identical_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "CHUNK_DOCUMENTS", 16)
    documents = make_documents(300)
    for name, num_proc in (("one", 1), ("two", 2)):
        prepare_dataset(documents, tmp_path / name, ByteTokenizer(), val_fraction=0.1, shard_tokens=700, num_proc=num_proc, progress=False)
    for one, two in zip(sorted((tmp_path / "one").glob("*.bin")), sorted((tmp_path / "two").glob("*.bin"))):
        assert one.name == two.name and one.read_bytes() == two.read_bytes()
    assert json.loads((tmp_path / "one" / "meta.json").read_text())["splits"] == json.loads(
        (tmp_path / "two" / "meta.json").read_text()
    )["splits"]


def test_interrupted_prepare_resumes_without_redoing_work(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "CHUNK_DOCUMENTS", 10)
    documents = make_documents(300)
    settings = dict(val_fraction=0.1, shard_tokens=400, num_proc=1, progress=False)
    prepare_dataset(documents, tmp_path / "clean", ByteTokenizer(), **settings)

    real_write = prepare.SplitWriter._write_shard
    written = []

    def dies_on_sixth_shard(self, tokens):
        if len(written) == 5:
            raise KeyboardInterrupt("simulated kill")
        written.append(self.split)
        real_write(self, tokens)

    monkeypatch.setattr(prepare.SplitWriter, "_write_shard", dies_on_sixth_shard)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(documents, tmp_path / "resumed", ByteTokenizer(), **settings)
    monkeypatch.undo()
    monkeypatch.setattr(prepare, "CHUNK_DOCUMENTS", 10)
    assert not (tmp_path / "resumed" / "meta.json").exists()
    assert (tmp_path / "resumed" / "progress.json").exists()

    tokenizer = ByteTokenizer()
    prepare_dataset(documents, tmp_path / "resumed", tokenizer, **settings)
    assert 0 < tokenizer.encoded_documents < len(documents)  # the probe counts as one
    clean = sorted(p.name for p in (tmp_path / "clean").iterdir())
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == clean
    for name in clean:
        if name.endswith(".bin"):
            assert (tmp_path / "clean" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes(), name

    # A finished directory is returned as is; different settings are refused.
    tokenizer = ByteTokenizer()
    prepare_dataset(documents, tmp_path / "resumed", tokenizer, **settings)
    assert tokenizer.encoded_documents == 1
    with pytest.raises(ConfigError, match="already holds"):
        prepare_dataset(documents, tmp_path / "resumed", ByteTokenizer(), **{**settings, "seed": 1})


def test_prepare_reads_txt_and_jsonl_files(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\nSEP\nsecond doc")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "third"}) + "\n\n" + json.dumps({"text": "fourth"}) + "\n")
    sources = [str(tmp_path / "a.txt"), tmp_path / "b.jsonl"]
    meta = prepare_dataset(sources, tmp_path / "out", ByteTokenizer(), val_fraction=0, separator="SEP\n", num_proc=1, progress=False)
    assert meta["splits"]["train"]["documents"] == 4
    stream = full_stream(TokenDataset(tmp_path / "out", "train")).tobytes().decode("utf-16-le")
    assert stream.split("\u0100")[1:] == ["first doc\n\n", "second doc", "third", "fourth"]
    assert meta["splits"]["val"] == {"shards": [], "tokens": 0, "documents": 0}


def test_prepare_source_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: no string field 'text'"):
        prepare_dataset([bad], tmp_path / "out", ByteTokenizer(), num_proc=1, progress=False)
    with pytest.raises(DataError, match="missing.txt: source file not found"):
        prepare_dataset([str(tmp_path / "missing.txt")], tmp_path / "out2", ByteTokenizer(), num_proc=1, progress=False)
    with pytest.raises(DataError, match="document #1"):
        prepare_dataset(iter(["fine", 3]), tmp_path / "out3", ByteTokenizer(), num_proc=1, progress=False)
    with pytest.raises(ConfigError, match="uint16"):
        big = ByteTokenizer()
        big.vocab_size = 70000
        prepare_dataset(["x"], tmp_path / "out4", big, progress=False)


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="needs datasets")
def test_prepare_reads_parquet_and_names_a_broken_one(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": ["alpha", "beta"], "n": [1, 2]}), tmp_path / "good.parquet")
    meta = prepare_dataset([tmp_path / "good.parquet"], tmp_path / "out", ByteTokenizer(), val_fraction=0,
                           num_proc=1, progress=False)
    stream = full_stream(TokenDataset(tmp_path / "out", "train")).tobytes().decode("utf-16-le")
    assert meta["splits"]["train"]["documents"] == 2 and stream.split("\u0100")[1:] == ["alpha", "beta"]
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(DataError, match="broken.parquet: cannot read it as parquet"):
        prepare_dataset([tmp_path / "broken.parquet"], tmp_path / "out2", ByteTokenizer(), num_proc=1,
                        progress=False)


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets is installed")
def test_parquet_and_hub_sources_need_datasets(tmp_path):
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    with pytest.raises(ConfigError, match="pip install datasets"):
        prepare_dataset([tmp_path / "d.parquet"], tmp_path / "out", ByteTokenizer(), num_proc=1, progress=False)
    with pytest.raises(ConfigError, match="pip install datasets"):
        prepare_dataset("Skylion007/openwebtext", tmp_path / "out2", ByteTokenizer(), num_proc=1, progress=False)


# ---------------------------------------------------------------- loading


def test_dataset_validation_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="meta.json: missing"):
        TokenDataset(tmp_path, "train")
    write_dataset(tmp_path / "d", {"train": [np.arange(10), np.arange(5)]})
    with pytest.raises(DataError, match="no split 'val'"):
        TokenDataset(tmp_path / "d", "val")
    (tmp_path / "d" / "train_000001.bin").write_bytes(b"\0" * 8)
    with pytest.raises(DataError, match=r"train_000001.bin: 8 bytes, but meta.json says 5 tokens"):
        TokenDataset(tmp_path / "d", "train")
    (tmp_path / "d" / "train_000001.bin").unlink()
    with pytest.raises(DataError, match="train_000001.bin: shard listed in meta.json is missing"):
        TokenDataset(tmp_path / "d", "train")

    meta = write_dataset(tmp_path / "e", {"train": [np.arange(10)]})
    (tmp_path / "e" / "meta.json").write_text(json.dumps({**meta, "format": "numpy"}))
    with pytest.raises(DataError, match="meta.json: format 'numpy'"):
        TokenDataset(tmp_path / "e", "train")


def test_verify_checks_hashes_and_token_range(tmp_path):
    write_dataset(tmp_path / "d", {"train": [np.arange(10), np.array([1, 2, 3, 300, 4])]}, vocab_size=256)
    TokenDataset(tmp_path / "d", "train")  # cheap checks only
    with pytest.raises(DataError, match=r"train_000001.bin: token id 300 at token offset 3 \(byte 6\)"):
        TokenDataset(tmp_path / "d", "train", verify=True)

    write_dataset(tmp_path / "e", {"train": [np.arange(10)]}, vocab_size=256)
    (tmp_path / "e" / "train_000000.bin").write_bytes(np.arange(1, 11, dtype="<u2").tobytes())
    with pytest.raises(DataError, match="train_000000.bin: sha256"):
        TokenDataset(tmp_path / "e", "train", verify=True)


def test_get_batch_windows_are_contiguous_and_deterministic(tmp_path):
    dataset = counting_dataset(tmp_path)
    tokens, targets = dataset.get_batch(step=3, micro_step=1, batch_size=64, seq_len=16, seed=7)
    assert tokens.shape == targets.shape == (64, 16)
    assert tokens.dtype == targets.dtype == np.int32
    for row_tokens, row_targets in zip(tokens, targets):
        start = row_tokens[0]
        np.testing.assert_array_equal(row_tokens, np.arange(start, start + 16))
        np.testing.assert_array_equal(row_targets, np.arange(start + 1, start + 17))
    assert targets.max() <= len(dataset) - 1
    # Some windows cross the shard boundaries at 100, 137 (and the empty shard).
    assert any(t[0] < 100 < t[-1] or t[0] < 137 < t[-1] for t in targets)

    # A fresh object (a resumed run) draws the same windows; any key change draws others.
    again = counting_dataset(tmp_path, name="data")
    np.testing.assert_array_equal(again.get_batch(3, 1, 64, 16, seed=7)[0], tokens)
    for other in [(4, 1, 7), (3, 0, 7), (3, 1, 8)]:
        step, micro_step, seed = other
        assert not np.array_equal(dataset.get_batch(step, micro_step, 64, 16, seed=seed)[0], tokens)


def test_get_batch_needs_seq_len_plus_one_tokens(tmp_path):
    dataset = counting_dataset(tmp_path, shard_sizes=(5, 4))
    dataset.get_batch(0, 0, batch_size=4, seq_len=8)
    with pytest.raises(DataError, match="needs at least 10"):
        dataset.get_batch(0, 0, batch_size=4, seq_len=9)


@pytest.mark.parametrize("max_tokens", [None, 1, 100, 136, 137, 386, 387, 10_000])
def test_eval_batches_score_every_next_token_once(tmp_path, max_tokens):
    dataset = counting_dataset(tmp_path)  # 387 tokens
    seq_len, batch_size = 16, 5
    scored = []
    inputs_seen = []
    for tokens, targets in dataset.iter_eval_batches(batch_size, seq_len, max_tokens=max_tokens):
        assert tokens.shape == targets.shape == (batch_size, seq_len)
        assert tokens.dtype == targets.dtype == np.int32
        mask = targets != IGNORE_INDEX
        # every scored target is the token right after its input
        np.testing.assert_array_equal(targets[mask], tokens[mask] + 1)
        scored += targets[mask].tolist()
        inputs_seen += tokens[mask].tolist()
    covered = len(dataset) if max_tokens is None else min(len(dataset), max_tokens)
    assert scored == list(range(1, min(covered, len(dataset) - 1) + 1))
    assert len(scored) == min(covered, len(dataset) - 1)


def test_eval_batches_pad_the_final_window_and_batch(tmp_path):
    dataset = counting_dataset(tmp_path, shard_sizes=(10,), name="small")
    batches = list(dataset.iter_eval_batches(batch_size=4, seq_len=4))
    assert len(batches) == 1
    tokens, targets = batches[0]
    np.testing.assert_array_equal(tokens[:3].ravel()[:10], np.arange(10))
    np.testing.assert_array_equal(targets[2], [9, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX])
    np.testing.assert_array_equal(targets[3], [IGNORE_INDEX] * 4)
    assert (tokens[3] == dataset.eot_id).all()


def test_prepared_data_feeds_batches(tmp_path):
    documents = make_documents(100)
    prepare_dataset(documents, tmp_path / "out", ByteTokenizer(), val_fraction=0.2, shard_tokens=300, num_proc=1, progress=False)
    train = TokenDataset(tmp_path / "out", "train")
    tokens, targets = train.get_batch(0, 0, batch_size=8, seq_len=32, seed=0)
    assert tokens.max() < 257 and (tokens[:, 1:] == targets[:, :-1]).all()
    val = TokenDataset(tmp_path / "out", "val")
    assert sum((t != IGNORE_INDEX).sum() for _, t in val.iter_eval_batches(4, 32)) == len(val) - 1
    assert train.tokenizer_path == tmp_path / "out" / "tokenizer.json"
