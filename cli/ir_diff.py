"""Comparing two Graphs: eqn counts, op histograms, input/output signatures, printed text.

Pure functions over Graph data; the caller decides how to print the result.
"""
import difflib

from .ir_stats import leaf_names, op_histogram


def op_deltas(graph_a, graph_b) -> list:
    """[(prim, count_a, count_b)] over the ops of both, biggest change first, ties by name."""
    counts_a, counts_b = dict(op_histogram(graph_a)), dict(op_histogram(graph_b))
    prims = set(counts_a) | set(counts_b)
    rows = [(p, counts_a.get(p, 0), counts_b.get(p, 0)) for p in prims]
    return sorted(rows, key=lambda row: (-abs(row[2] - row[1]), row[0]))


def signature(variables) -> list:
    """Each value as dtype and shape, e.g. "float32[4,8]"."""
    return [f"{v.dtype}[{','.join(map(str, v.shape))}]" for v in variables]


def signature_changes(sig_a: list, sig_b: list, names: list) -> list:
    """[(name, a, b)] where two signatures differ by position; None marks a missing value."""
    changes = []
    for i in range(max(len(sig_a), len(sig_b))):
        a = sig_a[i] if i < len(sig_a) else None
        b = sig_b[i] if i < len(sig_b) else None
        if a != b:
            changes.append((names[i], a, b))
    return changes


def _named_signature(variables, treedef, root):
    return signature(variables), leaf_names(treedef, len(variables), root)


def _compare(vars_a, tree_a, vars_b, tree_b, root):
    sig_a, names_a = _named_signature(vars_a, tree_a, root)
    sig_b, names_b = _named_signature(vars_b, tree_b, root)
    longer = names_a if len(names_a) > len(names_b) else names_b  # names every position
    return signature_changes(sig_a, sig_b, longer)


def graph_diff(graph_a, graph_b) -> dict:
    return {
        "eqns": (len(graph_a.eqns), len(graph_b.eqns)),
        "ops": op_deltas(graph_a, graph_b),
        "inputs": _compare(graph_a.inputs, graph_a.in_tree, graph_b.inputs, graph_b.in_tree, "args"),
        "outputs": _compare(graph_a.outputs, graph_a.out_tree, graph_b.outputs, graph_b.out_tree, "out"),
    }


def is_structurally_equal(diff: dict) -> bool:
    """True when counts, ops and signatures all match (the text may still differ)."""
    count_a, count_b = diff["eqns"]
    return (count_a == count_b and all(a == b for _, a, b in diff["ops"])
            and not diff["inputs"] and not diff["outputs"])


def text_diff(text_a: str, text_b: str, name_a: str, name_b: str) -> str:
    lines = difflib.unified_diff(text_a.splitlines(), text_b.splitlines(),
                                 fromfile=name_a, tofile=name_b, lineterm="")
    return "\n".join(lines)
