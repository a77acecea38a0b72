"""The data that defines a byte-level BPE tokenizer, checked for consistency.

A vocabulary is three things:
  token_bytes     token_bytes[id] is the bytes of token `id` (for a special token, the
                  UTF-8 of its text); ids run from 0 to len(token_bytes) - 1.
  merges          (left id, right id, result id) in rank order (rank 0 applies first).
  special_tokens  {text: id}.
"""

from mlbh.tracer.errors import DataError


class Vocabulary:
    def __init__(self, token_bytes, merges, special_tokens):
        """Raises DataError (without a file name; loaders add theirs) when the parts do
        not form a usable byte-level BPE vocabulary."""
        self.token_bytes = list(token_bytes)
        self.merges = [tuple(m) for m in merges]
        self.special_tokens = dict(special_tokens)
        self.special_ids = frozenset(self.special_tokens.values())
        self._check_special_tokens()
        self.byte_ids = self._find_byte_ids()
        self._check_merges()

    def __len__(self):
        return len(self.token_bytes)

    def _check_special_tokens(self):
        size = len(self.token_bytes)
        seen = {}
        for text, token_id in self.special_tokens.items():
            if not isinstance(text, str) or not text:
                raise DataError(f"special token {text!r} is not a non-empty string")
            if not _is_id(token_id) or not 0 <= token_id < size:
                raise DataError(f"special token {text!r} has id {token_id!r}, outside 0..{size - 1}")
            if token_id in seen:
                raise DataError(f"special tokens {seen[token_id]!r} and {text!r} share id {token_id}")
            seen[token_id] = text
            if self.token_bytes[token_id] != text.encode("utf-8"):
                raise DataError(f"token {token_id} should hold the text of special token {text!r}")

    def _find_byte_ids(self):
        byte_ids = [None] * 256
        for token_id, data in enumerate(self.token_bytes):
            if not isinstance(data, bytes) or not data:
                raise DataError(f"token {token_id} is empty or not bytes")
            if len(data) == 1 and token_id not in self.special_ids:
                if byte_ids[data[0]] is not None:
                    raise DataError(f"byte 0x{data[0]:02x} is both token {byte_ids[data[0]]} and token {token_id}")
                byte_ids[data[0]] = token_id
        missing = [b for b in range(256) if byte_ids[b] is None]
        if missing:
            raise DataError(f"{len(missing)} of the 256 single-byte tokens are missing (first: byte 0x{missing[0]:02x})")
        return byte_ids

    def _check_merges(self):
        size = len(self.token_bytes)
        available = set(self.byte_ids)
        seen_pairs = set()
        for rank, merge in enumerate(self.merges):
            if len(merge) != 3 or not all(_is_id(x) and 0 <= x < size for x in merge):
                raise DataError(f"merge {rank} is not three token ids in 0..{size - 1}: {list(merge)!r}")
            left, right, result = merge
            if result in self.special_ids or left in self.special_ids or right in self.special_ids:
                raise DataError(f"merge {rank} involves a special token")
            # Encoding relies on every merge's operands existing before it (bpe_encode).
            if left not in available or right not in available:
                raise DataError(f"merge {rank} uses a token that no earlier merge creates")
            if self.token_bytes[result] != self.token_bytes[left] + self.token_bytes[right]:
                raise DataError(f"merge {rank}: token {result} is not token {left} followed by token {right}")
            if (left, right) in seen_pairs:
                raise DataError(f"merge {rank} repeats the pair ({left}, {right})")
            seen_pairs.add((left, right))
            available.add(result)


def _is_id(value):
    return isinstance(value, int) and not isinstance(value, bool)
