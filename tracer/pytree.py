"""Pytrees: nested dict / list / tuple / None containers of array leaves.

A TreeDef is a plain nested tuple so it compares, hashes and serialises simply:
("leaf",), ("none",), ("tuple", children), ("list", children),
("dict", keys, children) with keys sorted.
"""

LEAF = ("leaf",)


def flatten(tree):
    leaves = []

    def walk(node):
        if node is None:
            return ("none",)
        if isinstance(node, dict):
            keys = tuple(sorted(node))
            return ("dict", keys, tuple(walk(node[k]) for k in keys))
        if isinstance(node, tuple) and not hasattr(node, "_fields"):
            return ("tuple", tuple(walk(c) for c in node))
        if isinstance(node, list):
            return ("list", tuple(walk(c) for c in node))
        leaves.append(node)
        return LEAF

    treedef = walk(tree)
    return leaves, treedef


def unflatten(treedef, leaves):
    it = iter(leaves)

    def build(td):
        kind = td[0]
        if kind == "leaf":
            return next(it)
        if kind == "none":
            return None
        if kind == "tuple":
            return tuple(build(c) for c in td[1])
        if kind == "list":
            return [build(c) for c in td[1]]
        return {k: build(c) for k, c in zip(td[1], td[2])}

    out = build(treedef)
    return out


def num_leaves(treedef) -> int:
    kind = treedef[0]
    if kind == "leaf":
        return 1
    if kind == "none":
        return 0
    children = treedef[2] if kind == "dict" else treedef[1]
    return sum(num_leaves(c) for c in children)


def tree_map(fn, tree):
    leaves, td = flatten(tree)
    return unflatten(td, [fn(x) for x in leaves])


def to_json(treedef):
    kind = treedef[0]
    if kind in ("leaf", "none"):
        return [kind]
    if kind == "dict":
        return ["dict", list(treedef[1]), [to_json(c) for c in treedef[2]]]
    return [kind, [to_json(c) for c in treedef[1]]]


def from_json(obj):
    kind = obj[0]
    if kind in ("leaf", "none"):
        return (kind,)
    if kind == "dict":
        return ("dict", tuple(obj[1]), tuple(from_json(c) for c in obj[2]))
    if kind in ("tuple", "list"):
        return (kind, tuple(from_json(c) for c in obj[1]))
    raise ValueError(f"unknown tree node kind {kind!r}")
