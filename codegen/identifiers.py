"""Renaming identifiers in generated source, so that kernels which differ only in their
buffer and reduction names render to the same text (and compile once)."""
import re

# a name, not an attribute (blockIdx.x, np.float32) and not the tail of a longer name
_IDENT = re.compile(r"(?<![.\w])[A-Za-z_]\w*")


def by_first_use(items, text: str, name=lambda item: item) -> list:
    """items sorted by where text first mentions name(item) (absent ones last, in order)."""
    first = {}
    for m in _IDENT.finditer(text):
        first.setdefault(m.group(0), m.start())
    return sorted(items, key=lambda item: first.get(name(item), len(text)))


def canonical(text: str, buffers, reductions, buffer_letter: str, prefixes=()) -> str:
    """text with buffers renamed <buffer_letter>0, 1, ... in the given order and reductions
    x0, x1, ... (unless also a buffer), alone or after any of `prefixes` (acc_b3 -> acc_x0)."""
    mapping = {b: f"{buffer_letter}{i}" for i, b in enumerate(buffers)}
    for i, r in enumerate(dict.fromkeys(reductions)):
        mapping.setdefault(r, f"x{i}")

    def one(m):
        word = m.group(0)
        if word in mapping:
            return mapping[word]
        for prefix in prefixes:
            if word.startswith(prefix) and word[len(prefix):] in mapping:
                return prefix + mapping[word[len(prefix):]]
        return word
    return _IDENT.sub(one, text)
