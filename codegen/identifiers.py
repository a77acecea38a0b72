"""Renaming identifiers in generated source, so that kernels which differ only in their
buffer and reduction names render to the same text (and compile once)."""
import re

# a name, not an attribute (blockIdx.x, np.float32) and not the tail of a longer name
_IDENT = re.compile(r"(?<![.\w])[A-Za-z_]\w*")


def first_uses(text: str) -> dict:
    """identifier -> offset of its first occurrence in text."""
    first = {}
    for m in _IDENT.finditer(text):
        first.setdefault(m.group(0), m.start())
    return first


def by_first_use(names, text: str) -> list:
    """names sorted by where text first mentions them (absent ones last, in given order)."""
    first = first_uses(text)
    return sorted(names, key=lambda n: first.get(n, len(text)))


def rename(text: str, mapping: dict, prefixes=()) -> str:
    """text with each identifier in mapping replaced, also after any of `prefixes`
    (acc_b3 -> acc_x0 when mapping has b3 -> x0)."""
    def one(m):
        word = m.group(0)
        if word in mapping:
            return mapping[word]
        for prefix in prefixes:
            if word.startswith(prefix) and word[len(prefix):] in mapping:
                return prefix + mapping[word[len(prefix):]]
        return word
    return _IDENT.sub(one, text)
