"""Reading and writing the tokenizer JSON file (format documented in docs/TOKENIZER.md)."""

import json
import os

from mlbh.runtime.atomic import atomic_write_text, read_json
from mlbh.runtime.bpe_bytes import bytes_to_text, text_to_bytes
from mlbh.runtime.bpe_vocab import Vocabulary
from mlbh.tracer.errors import DataError

FORMAT_NAME = "mlbh-bpe-tokenizer"
FORMAT_VERSION = 1
PRETOKENIZER = "gpt2"


def vocabulary_to_json(vocab):
    """The file text: one token and one merge per line, so files diff well."""
    tokens = [None if i in vocab.special_ids else bytes_to_text(data) for i, data in enumerate(vocab.token_bytes)]
    dump = json.dumps
    lines = [
        "{",
        f' "format": {dump(FORMAT_NAME)},',
        f' "version": {FORMAT_VERSION},',
        f' "pretokenizer": {dump(PRETOKENIZER)},',
        f' "special_tokens": {dump(vocab.special_tokens, ensure_ascii=False)},',
        ' "tokens": [',
        ",\n".join("  " + dump(t, ensure_ascii=False) for t in tokens),
        " ],",
        ' "merges": [',
        ",\n".join(f"  [{left}, {right}, {result}]" for left, right, result in vocab.merges),
        " ]",
        "}",
        "",
    ]
    return "\n".join(lines)


def save_vocabulary(vocab, path):
    atomic_write_text(os.fspath(path), vocabulary_to_json(vocab))


def load_vocabulary(path):
    """Read and check a tokenizer file; DataError naming `path` for any problem."""
    path = os.fspath(path)
    document = read_json(path, DataError, "tokenizer file", "not a valid JSON tokenizer file")
    try:
        return vocabulary_from_document(document)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None


def vocabulary_from_document(document):
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise DataError(f'not an mlbh tokenizer file (expected "format": "{FORMAT_NAME}" at the top level)')
    if document.get("version") != FORMAT_VERSION:
        raise DataError(f"unsupported tokenizer file version {document.get('version')!r} (this mlbh reads {FORMAT_VERSION})")
    if document.get("pretokenizer") != PRETOKENIZER:
        raise DataError(f"unknown pretokenizer {document.get('pretokenizer')!r} (supported: {PRETOKENIZER!r})")
    special_tokens = _field(document, "special_tokens", dict)
    tokens = _field(document, "tokens", list)
    merges = _field(document, "merges", list)

    special_by_id = {}
    for text, token_id in special_tokens.items():
        if isinstance(token_id, int) and not isinstance(token_id, bool):
            special_by_id[token_id] = text
    token_bytes = []
    for token_id, text in enumerate(tokens):
        if token_id in special_by_id:
            if text is not None:
                raise DataError(f"tokens[{token_id}] belongs to special token {special_by_id[token_id]!r} and must be null")
            token_bytes.append(special_by_id[token_id].encode("utf-8"))
            continue
        if not isinstance(text, str):
            raise DataError(f"tokens[{token_id}] is {text!r}, expected a string")
        try:
            token_bytes.append(text_to_bytes(text))
        except KeyError as e:
            raise DataError(f"tokens[{token_id}] = {text!r} has character {e.args[0]!r}, "
                            "which is not in GPT-2's byte alphabet") from None
    for rank, merge in enumerate(merges):
        if not isinstance(merge, list):
            raise DataError(f"merges[{rank}] is {merge!r}, expected [left, right, result]")
    return Vocabulary(token_bytes, merges, special_tokens)


def _field(document, name, kind):
    if name not in document:
        raise DataError(f'missing field "{name}"')
    value = document[name]
    if not isinstance(value, kind):
        raise DataError(f'field "{name}" should be a JSON {"object" if kind is dict else "array"}')
    return value
