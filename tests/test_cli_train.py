"""The main-job commands end to end on a tiny corpus: prepare -> train -> eval, and compile."""
import json

import pytest
from test_cli import make_runner

from mlbh.cli.main import cli
from mlbh.runtime.data import TokenDataset

SMALL = ["--preset", "mini", "--seq-len", "32", "--micro-batch", "2", "--global-batch", "4",
         "--backend", "cpu", "--sample-tokens", "5", "--eval-batches", "2"]


def invoke(*args):
    return make_runner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    files = []
    for i in range(10):
        f = root / f"doc{i}.txt"
        f.write_text(f"Scene {i}. " + "To be, or not to be, that is the question. " * (30 + 3 * i))
        files.append(f)
    out = root / "prepared"
    result = invoke("prepare", *files, "--out", out, "--tokenizer", "train:300", "--val-fraction", "0.2",
                    "--num-proc", "1")
    assert result.exit_code == 0, result.output
    assert "prepared" in result.stdout
    return out


def test_train_writes_metrics_checkpoints_and_a_sample(prepared, tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "--data", prepared, "--out", run, "--max-steps", 4, "--eval-interval", 2, *SMALL)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all({"step", "loss", "lr", "tokens_per_s"} <= set(r) for r in records)
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4]
    assert (run / "latest.json").exists() and (run / "config.json").exists()
    assert "final step 4: val loss" in result.stdout and "--- sample" in result.stdout

    ev = invoke("eval", run, "--data", prepared, "--json", "--seq-len", 32, "--backend", "cpu")
    assert ev.exit_code == 0, ev.output
    report = json.loads(ev.stdout)
    val_tokens = TokenDataset(prepared, "val").num_tokens
    assert report["tokens"] == val_tokens - 1, "every val token after the first is scored exactly once"
    assert report["loss"] > 0 and report["bits_per_byte"] > 0
    assert report["perplexity"] == pytest.approx(2.718281828 ** report["loss"], rel=1e-6)

    checkpoint = run / json.loads((run / "latest.json").read_text())["checkpoint"]
    assert (checkpoint / "tokenizer.json").exists(), "the checkpoint carries its tokenizer"
    ev = invoke("eval", run)
    assert ev.exit_code == 1 and "needs --data PREPARED_DIR, --tasks" in ev.stderr
    ev = invoke("eval", run, "--data", prepared, "--batch-size", 0)
    assert ev.exit_code == 1 and ev.stderr.strip() == "mlbh: error: batch_size must be positive, got 0"

    bigger_vocab = tmp_path / "bigger_vocab"
    sources = sorted(prepared.parent.glob("doc*.txt"))
    assert invoke("prepare", *sources, "--out", bigger_vocab, "--tokenizer", "gpt2", "--num-proc", "1",
                  "--val-fraction", "0.2").exit_code == 0
    ev = invoke("eval", run, "--data", bigger_vocab, "--backend", "cpu")
    assert ev.exit_code == 1 and "split 'val': token id 50256 at (batch 0, position 0) is outside" in ev.stderr


def test_bad_config_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"max_steps": 3, "learning_rate": 1}')
    result = invoke("train", "--config", bad)
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("mlbh: error:") and "learning_rate" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    result = invoke("train", "--global-batch", 6, "--micro-batch", 4)
    assert result.exit_code == 1 and "not divisible" in result.stderr


def test_compile_gpt2_for_cuda_needs_no_gpu():
    from mlbh.codegen.nvrtc import cubin_supported
    if not cubin_supported():
        pytest.skip(cubin_supported().reason)
    result = invoke("compile", "gpt2", "--preset", "mini", "--seq-len", 32, "--micro-batch", 2, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    step = report["functions"]["micro_step"]
    assert step["kernels"] > 0 and step["library_calls"] > 0
    assert step["optimized_eqns"] < step["traced_eqns"]
    assert step["arena_bytes"] < step["naive_bytes"]
    assert step["seconds"]["spill_bytes"] == 0
