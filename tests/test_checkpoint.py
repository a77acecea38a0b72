import json
import os

import ml_dtypes
import numpy as np
import pytest

from mlbh.runtime import atomic, checkpoint, safetensors_io
from mlbh.runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from mlbh.runtime.checkpoint import best_checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from mlbh.runtime.safetensors_io import load_safetensors, save_safetensors
from mlbh.tracer.errors import CheckpointError

ALL_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def sample_tensors():
    rng = np.random.default_rng(0)
    tensors = {f"t_{code}": (rng.standard_normal((3, 5)) * 50).astype(dtype) for code, dtype in ALL_DTYPES.items()}
    tensors["scalar"] = np.array(2.5, np.float32)
    tensors["empty"] = np.zeros((0, 4), np.float32)
    tensors["odd_bytes"] = np.arange(3, dtype=np.uint8)  # forces padding decisions downstream
    return tensors


def assert_same_tensors(expected, actual):
    assert sorted(expected) == sorted(actual)
    for name in expected:
        assert actual[name].dtype == np.asarray(expected[name]).dtype, name
        assert actual[name].shape == np.asarray(expected[name]).shape, name
        assert actual[name].tobytes() == np.asarray(expected[name]).tobytes(), name


# ---------------------------------------------------------------- atomic writes


def test_atomic_writes_replace_content_and_leave_no_temporaries(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "a.txt", "héllo")
    atomic_write_json(tmp_path / "a.json", {"x": [1, 2]})
    atomic_write_json(tmp_path / "a.json", {"x": 3})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.json", "a.txt"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    atomic_write_json(target, {"old": True})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_json(target, {"old": False})
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


# ---------------------------------------------------------------- safetensors


def test_safetensors_round_trip_every_dtype(tmp_path):
    tensors = sample_tensors()
    path = tmp_path / "t.safetensors"
    save_safetensors(path, tensors, {"step": "7"})
    loaded, metadata = load_safetensors(path)
    assert metadata == {"step": "7"}
    assert_same_tensors(tensors, loaded)
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_len % 8 == 0


def test_safetensors_accepts_big_endian_and_noncontiguous_input(tmp_path):
    data = np.arange(12, dtype=">f4").reshape(3, 4).T
    save_safetensors(tmp_path / "t.safetensors", {"x": data})
    loaded, _ = load_safetensors(tmp_path / "t.safetensors")
    np.testing.assert_array_equal(loaded["x"], data)
    assert loaded["x"].dtype == np.float32


def test_safetensors_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(CheckpointError, match="complex64"):
        save_safetensors(tmp_path / "t.safetensors", {"x": np.zeros(2, np.complex64)})


def test_files_we_write_load_in_the_reference_library(tmp_path):
    safetensors = pytest.importorskip("safetensors")
    from safetensors.numpy import load_file

    tensors = sample_tensors()
    path = tmp_path / "ours.safetensors"
    save_safetensors(path, tensors, {"who": "mlbh"})
    without_bf16 = {k: v for k, v in tensors.items() if v.dtype != ml_dtypes.bfloat16}
    save_safetensors(tmp_path / "nobf16.safetensors", without_bf16)
    assert_same_tensors(without_bf16, load_file(tmp_path / "nobf16.safetensors"))

    # safetensors.numpy has no bfloat16; its raw deserializer checks the whole file.
    raw = dict(safetensors.deserialize(path.read_bytes()))
    assert raw["t_BF16"]["dtype"] in ("BF16", "bfloat16")
    assert bytes(raw["t_BF16"]["data"]) == tensors["t_BF16"].tobytes()
    with safetensors.safe_open(str(tmp_path / "nobf16.safetensors"), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(without_bf16)
    with safetensors.safe_open(str(path), framework="numpy") as f:
        assert f.metadata() == {"who": "mlbh"}


def test_files_the_reference_library_writes_load_here(tmp_path):
    safetensors = pytest.importorskip("safetensors")
    from safetensors.numpy import save_file

    tensors = {k: v for k, v in sample_tensors().items() if v.dtype != ml_dtypes.bfloat16}
    save_file(tensors, tmp_path / "theirs.safetensors", metadata={"a": "b"})
    loaded, metadata = load_safetensors(tmp_path / "theirs.safetensors")
    assert metadata == {"a": "b"}
    assert_same_tensors(tensors, loaded)

    bf16 = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
    if hasattr(safetensors, "TensorSpec"):  # safetensors >= 0.8
        spec = safetensors.TensorSpec(dtype="bfloat16", shape=[2, 3], data_ptr=bf16.ctypes.data, data_len=bf16.nbytes)
    else:
        spec = {"dtype": "bfloat16", "shape": [2, 3], "data": bf16.tobytes()}
    (tmp_path / "bf16.safetensors").write_bytes(safetensors.serialize({"w": spec}))
    loaded, _ = load_safetensors(tmp_path / "bf16.safetensors")
    assert loaded["w"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(loaded["w"], bf16)


def write_raw_safetensors(path, header, data):
    header_bytes = json.dumps(header).encode()
    path.write_bytes(len(header_bytes).to_bytes(8, "little") + header_bytes + data)


@pytest.mark.parametrize(
    "header, data, problem",
    [
        ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "outside"),
        ({"x": {"dtype": "C128", "shape": [1], "data_offsets": [0, 16]}}, b"\0" * 16, "unknown dtype"),
        ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12 bytes"),
        ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "gap"),
        (
            {
                "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "y": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            },
            b"\0" * 8,
            "overlaps",
        ),
        ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8, "cover 4 bytes"),
        ({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "bad shape"),
        ({"__metadata__": {"a": 1}}, b"", "__metadata__"),
    ],
)
def test_corrupt_safetensors_raise_checkpoint_error_naming_the_file(tmp_path, header, data, problem):
    path = tmp_path / "bad.safetensors"
    write_raw_safetensors(path, header, data)
    with pytest.raises(CheckpointError, match=problem) as info:
        load_safetensors(path)
    assert str(path) in str(info.value)


def test_truncated_and_garbage_safetensors(tmp_path):
    path = tmp_path / "t.safetensors"
    with pytest.raises(CheckpointError, match="not found"):
        load_safetensors(path)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="truncated"):
        load_safetensors(path)
    path.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="header length"):
        load_safetensors(path)
    path.write_bytes((4).to_bytes(8, "little") + b"{{{{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_safetensors(path)
    save_safetensors(path, {"x": np.ones(100, np.float32)})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=str(path).replace("\\", "\\\\")):
        load_safetensors(path)


# ---------------------------------------------------------------- checkpoints


def training_state(step):
    params = {"wte": np.full((4, 3), step, np.float32), "ln.g": np.ones(3, ml_dtypes.bfloat16)}
    opt_state = {"m.wte": np.zeros((4, 3), np.float32), "t": np.array(step, np.int64)}
    state = {"config": {"n_layer": 2}, "data": {"seed": 1, "step": step}, "rng": [1, 2, 3], "loss": 1.5}
    return params, opt_state, state


def ckpt_names(run):
    return sorted(p.name for p in run.iterdir() if p.name.startswith("ckpt_"))


def test_save_and_load_round_trip(tmp_path):
    run = tmp_path / "run"
    params, opt_state, state = training_state(10)
    directory = save_checkpoint(run, 10, params, opt_state, state)
    assert directory == run / "ckpt_00000010"
    assert sorted(p.name for p in directory.iterdir()) == ["optimizer.safetensors", "params.safetensors", "state.json"]
    for source in (run, directory):
        loaded = load_checkpoint(source)
        assert loaded.step == 10
        assert loaded.state == state
        assert loaded.path == directory
        assert_same_tensors(params, loaded.params)
        assert_same_tensors(opt_state, loaded.opt_state)
    assert latest_checkpoint(run) == directory
    assert json.loads((run / "latest.json").read_text())["checkpoint"] == "ckpt_00000010"
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_the_tokenizer_is_saved_inside_the_checkpoint(tmp_path):
    source = tmp_path / "tok.json"
    source.write_text('{"tokenizer": 1}')
    params, opt_state, state = training_state(3)
    directory = save_checkpoint(tmp_path / "run", 3, params, opt_state, state, tokenizer=source)
    source.unlink()  # the checkpoint does not depend on the original file
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded.tokenizer_path == directory / "tokenizer.json"
    assert loaded.tokenizer_path.read_text() == '{"tokenizer": 1}'
    assert load_checkpoint(save_checkpoint(tmp_path / "bare", 1, params, opt_state, state)).tokenizer_path is None
    with pytest.raises(CheckpointError, match="cannot read the tokenizer"):
        save_checkpoint(tmp_path / "run", 4, params, opt_state, state, tokenizer=tmp_path / "missing.json")
    assert latest_checkpoint(tmp_path / "run") == directory


def test_retention_keeps_last_n_and_the_best(tmp_path):
    run = tmp_path / "run"
    metrics = {100: 3.0, 200: 1.0, 300: 2.0, 400: 2.5, 500: 1.5}
    for step, metric in metrics.items():
        save_checkpoint(run, step, *training_state(step), keep_last=2, best_metric=metric)
    assert ckpt_names(run) == ["ckpt_00000200", "ckpt_00000400", "ckpt_00000500"]
    assert best_checkpoint(run) == (run / "ckpt_00000200", 1.0)
    assert load_checkpoint(run).step == 500
    assert load_checkpoint(run / "ckpt_00000200").metric == 1.0
    save_checkpoint(run, 600, *training_state(600), keep_last=2)
    assert ckpt_names(run) == ["ckpt_00000200", "ckpt_00000500", "ckpt_00000600"]
    save_checkpoint(run, 700, *training_state(700), keep_last=None)
    assert len(ckpt_names(run)) == 4


def test_saving_an_existing_step_replaces_it(tmp_path):
    run = tmp_path / "run"
    params, opt_state, state = training_state(5)
    save_checkpoint(run, 5, params, opt_state, state)
    params["wte"][:] = 42
    save_checkpoint(run, 5, params, opt_state, {"new": True})
    loaded = load_checkpoint(run)
    assert loaded.state == {"new": True}
    assert (loaded.params["wte"] == 42).all()
    assert ckpt_names(run) == ["ckpt_00000005"]
    assert not [p for p in run.iterdir() if p.name.startswith(".ckpt")]


@pytest.mark.parametrize("failing_file", ["params.safetensors", "optimizer.safetensors", "state.json"])
def test_failure_mid_save_leaves_latest_on_the_previous_checkpoint(tmp_path, monkeypatch, failing_file):
    run = tmp_path / "run"
    save_checkpoint(run, 1, *training_state(1))
    real_writer = atomic.atomic_writer

    def writer_that_dies_midway(path):
        if path.name != failing_file:
            return real_writer(path)

        class HalfWritten:
            def __enter__(self):
                self.inner = real_writer(path)
                self.f = self.inner.__enter__()
                return self

            def write(self, data):
                self.f.write(bytes(data)[: len(data) // 2])
                raise OSError("simulated crash")

            def __exit__(self, *exc):
                return self.inner.__exit__(*exc)

        return HalfWritten()

    monkeypatch.setattr(safetensors_io, "atomic_writer", writer_that_dies_midway)
    monkeypatch.setattr(atomic, "atomic_writer", writer_that_dies_midway)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(run, 2, *training_state(2))
    monkeypatch.undo()

    assert load_checkpoint(run).step == 1
    assert ckpt_names(run) == ["ckpt_00000001"]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]
    save_checkpoint(run, 2, *training_state(2))
    assert load_checkpoint(run).step == 2


def test_failure_writing_latest_json_keeps_the_old_pointer(tmp_path, monkeypatch):
    run = tmp_path / "run"
    save_checkpoint(run, 1, *training_state(1))

    def broken_json(path, obj, indent=2):
        raise OSError("simulated crash")

    monkeypatch.setattr(checkpoint, "atomic_write_json", broken_json)
    with pytest.raises(OSError):
        save_checkpoint(run, 2, *training_state(2))
    monkeypatch.undo()
    assert load_checkpoint(run).step == 1
    assert load_checkpoint(run / "ckpt_00000002").step == 2  # complete, just not yet published


def test_killed_process_leftovers_are_ignored_and_cleaned(tmp_path, monkeypatch):
    run = tmp_path / "run"
    save_checkpoint(run, 1, *training_state(1))
    # A process killed mid-save leaves its staging directory behind (no cleanup runs).
    monkeypatch.setattr(checkpoint.shutil, "rmtree", lambda *a, **k: None)
    monkeypatch.setattr(checkpoint, "fsync_directory", lambda path: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(run, 2, *training_state(2))
    monkeypatch.undo()
    assert [p.name for p in run.iterdir() if p.name.startswith(".ckpt_00000002.tmp")]
    assert load_checkpoint(run).step == 1
    save_checkpoint(run, 3, *training_state(3))
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_crash_while_replacing_an_existing_step(tmp_path, monkeypatch):
    run = tmp_path / "run"
    save_checkpoint(run, 5, *training_state(5))
    real_rename = os.rename
    calls = []

    def rename_dies_second_time(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # old directory moved aside, new one not yet in place
            raise KeyboardInterrupt()
        real_rename(src, dst)

    monkeypatch.setattr(checkpoint.os, "rename", rename_dies_second_time)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(run, 5, *training_state(5)[:2], {"second": True})
    monkeypatch.undo()
    assert load_checkpoint(run).state == {"second": True}  # latest.json names the staged copy

    # Crash after the staged copy was renamed into place, before latest.json names it.
    save_checkpoint(run, 5, *training_state(5)[:2], {"clean": True})
    monkeypatch.setattr(checkpoint, "atomic_write_json", _fail_on_second_call(checkpoint.atomic_write_json))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(run, 5, *training_state(5)[:2], {"third": True})
    monkeypatch.undo()
    stale = json.loads((run / "latest.json").read_text())["checkpoint"]
    assert stale.startswith(".ckpt_00000005.tmp") and not (run / stale).exists()
    assert load_checkpoint(run).state == {"third": True}
    save_checkpoint(run, 6, *training_state(6))
    assert ckpt_names(run) == ["ckpt_00000005", "ckpt_00000006"]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def _fail_on_second_call(function):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt()
        return function(*args, **kwargs)

    return wrapper


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither a run directory"):
        load_checkpoint(tmp_path / "empty")

    run = tmp_path / "run"
    directory = save_checkpoint(run, 3, *training_state(3))
    (directory / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match="optimizer.safetensors: file not found"):
        load_checkpoint(run)
    (directory / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="state.json: corrupt JSON"):
        load_checkpoint(directory)
    (run / "latest.json").write_text('{"checkpoint": "../../etc"}')
    with pytest.raises(CheckpointError, match="latest.json: invalid"):
        load_checkpoint(run)


def test_state_must_be_json(tmp_path):
    params, opt_state, _ = training_state(1)
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path / "run", 1, params, opt_state, {"bad": object()})
    assert not (tmp_path / "run" / "latest.json").exists()
    assert not list((tmp_path / "run").iterdir())
