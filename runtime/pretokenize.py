r"""GPT-2 pre-tokenization: split text into the pieces that BPE merges never cross.

GPT-2 splits text with this pattern, written for the third-party `regex` module:

    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+

The standard library `re` has no \p{...} classes, so this module spells letters (Unicode
categories L*), numbers (N*) and whitespace as explicit character-class ranges built from
`unicodedata`. The alternation order, greediness and backtracking of `re` are the same as
in `regex`, so the pieces are identical for every character that Python's Unicode database
knows. (Characters added to Unicode after Python's `unicodedata.unidata_version` are
unassigned here and fall into the "other" class.)
"""

import functools
import re
import sys
import unicodedata

GPT2_PATTERN_SOURCE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# `regex`'s \s is the Unicode White_Space property. It is not str.isspace(): the
# separators \x1c-\x1f count as whitespace for Python but not for GPT-2's pattern.
_WHITESPACE_CODEPOINTS = (
    list(range(0x09, 0x0E)) + [0x20, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B))
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)


def _class_body(codepoints):
    """A character-class body (no brackets) matching exactly the sorted `codepoints`."""
    parts = []
    start = prev = None
    for cp in codepoints:
        if prev is not None and cp == prev + 1:
            prev = cp
            continue
        if start is not None:
            parts.append(_range_text(start, prev))
        start = prev = cp
    if start is not None:
        parts.append(_range_text(start, prev))
    return "".join(parts)


def _range_text(first, last):
    if first == last:
        return f"\\U{first:08x}"
    return f"\\U{first:08x}-\\U{last:08x}"


def _codepoints_by_major_category():
    letters, numbers = [], []
    category = unicodedata.category
    for cp in range(sys.maxunicode + 1):
        major = category(chr(cp))[0]
        if major == "L":
            letters.append(cp)
        elif major == "N":
            numbers.append(cp)
    return letters, numbers


@functools.cache
def gpt2_pattern():
    """The compiled stdlib-`re` equivalent of GPT-2's pattern, for text without
    characters outside the Basic Multilingual Plane (see `pretokenize`)."""
    letters, numbers = _codepoints_by_major_category()
    # Only BMP characters: `re` turns those into one bitmap lookup, while every
    # supplementary-plane range would become a linear scan on every failed class test.
    L = _class_body([cp for cp in letters if cp <= 0xFFFF])
    N = _class_body([cp for cp in numbers if cp <= 0xFFFF])
    S = _class_body(_WHITESPACE_CODEPOINTS)
    source = (
        r"'s|'t|'re|'ve|'m|'ll|'d"
        f"| ?[{L}]+"
        f"| ?[{N}]+"
        f"| ?[^{S}{L}{N}]+"
        f"|[{S}]+(?![^{S}])"
        f"|[{S}]+"
    )
    return re.compile(source)


_SUPPLEMENTARY_CHAR = re.compile("[\U00010000-\U0010ffff]")

# BMP characters of the same class (letter, number, other) as the characters they stand
# in for; none of them is a space, an apostrophe or an ASCII letter.
_STAND_IN = {"L": "\u00aa", "N": "\u00b2"}
_STAND_IN_OTHER = "\u00a6"


def _stand_in(match):
    return _STAND_IN.get(unicodedata.category(match.group())[0], _STAND_IN_OTHER)


def pretokenize(text):
    """Split `text` into GPT-2 pre-tokens (a list of str whose concatenation is `text`)."""
    pattern = gpt2_pattern()
    if text.isascii() or _SUPPLEMENTARY_CHAR.search(text) is None:
        return pattern.findall(text)
    # Emoji and other supplementary-plane characters: match on a same-length copy in which
    # each is replaced by a BMP character of its class, then cut the original text.
    stand_in_text = _SUPPLEMENTARY_CHAR.sub(_stand_in, text)
    return [text[m.start():m.end()] for m in pattern.finditer(stand_in_text)]


_WHITESPACE_CHARS = frozenset(map(chr, _WHITESPACE_CODEPOINTS))


def split_for_pretokenizing(text, chunk_chars=1 << 20):
    """Yield consecutive slices of `text`, each about `chunk_chars` long, whose pre-tokens
    are exactly the pre-tokens of `text`.

    A cut just before a whitespace character that follows a non-whitespace character is
    always a pre-token boundary: every alternative that can cover the non-whitespace
    character stops at whitespace, and no alternative looks behind.
    """
    start = 0
    n = len(text)
    while n - start > chunk_chars:
        cut = _find_safe_cut(text, start + chunk_chars)
        if cut < 0:
            break
        yield text[start:cut]
        start = cut
    yield text[start:]


def _find_safe_cut(text, position):
    while True:
        cut = text.find(" ", position)
        if cut < 0:
            return -1
        if text[cut - 1] not in _WHITESPACE_CHARS:
            return cut
        position = cut + 1
