"""Simplifying index expressions when the loop variables' ranges are known.

An index expression is treated as an affine form sum(coeff * atom) + const, where atoms are
loop variables, divisions and remainders. Given 0 <= atom ranges, division and remainder by
m split off the terms that are multiples of m exactly (floor semantics):

    (M*m + R) // m == M + R // m        (M*m + R) % m == R % m

and drop R // m, or keep R for R % m, when R's range lies in [0, m). So after a flat loop
index o is rewritten as oh*L + ol (0 <= ol < L), `o % L` becomes ol and `(o // L) % 8`
becomes `oh % 8`, which no longer varies in the inner loop.
"""
import math

from .kernel_ir import Node, replace_leaves

_INDEX_OPS = ("iadd", "imul", "idiv", "imod")


def _const(v):
    return Node("iconst", (), "int64", (int(v),))


class IndexSimplifier:
    def __init__(self, var_ranges):
        self.var_ranges = var_ranges  # ivar name -> (lo, hi), inclusive
        self.memo = {}

    def __call__(self, node: Node) -> Node:
        if node not in self.memo:
            self.memo[node] = self._simplify(node)
        return self.memo[node]

    def _simplify(self, node):
        if node.op in ("iadd", "imul"):
            return self._build(*self._affine(node))
        if node.op in ("idiv", "imod") and node.args[1].op == "iconst" and node.args[1].attr[0] > 0:
            terms, const = self._affine(self(node.args[0]))
            m = node.args[1].attr[0]
            whole = {a: c // m for a, c in terms.items() if c % m == 0}
            rest = {a: c for a, c in terms.items() if c % m != 0}
            q, rem = divmod(const, m)
            lo, hi = self._range(rest, rem)
            fits = lo is not None and 0 <= lo and hi < m
            if fits:
                return self._build(rest, rem) if node.op == "imod" else self._build(whole, q)
            scaled = self._factor_out(rest, rem, m)
            if scaled is not None:  # rest == g * y + small with 0 <= small < g, g | m
                g, y, small = scaled
                if node.op == "imod":
                    t, c = self._affine(self(Node("imod", (y, _const(m // g)), "int64")))
                    t = {a: v * g for a, v in t.items()}
                    for a, v in small[0].items():
                        t[a] = t.get(a, 0) + v
                    return self._build(t, c * g + small[1])
                t, c = self._affine(self(Node("idiv", (y, _const(m // g)), "int64")))
            else:
                left = Node(node.op, (self._build(rest, rem), _const(m)), "int64")
                if node.op == "imod":
                    return left
                t, c = {left: 1}, 0  # an atom as it is: simplifying it again would recurse
            for a, v in t.items():
                whole[a] = whole.get(a, 0) + v
            return self._build(whole, q + c)
        if not node.args:
            return node
        return Node(node.op, tuple(self(a) for a in node.args), node.dtype, node.attr)

    def _factor_out(self, terms, const, m):
        """(g, y, (small terms, small const)) with terms + const == g * y + small,
        1 < g dividing m and small's range inside [0, g): the terms with the largest
        coefficients go into y. None if no such split exists."""
        order = sorted(terms, key=lambda a: -abs(terms[a]))
        for k in range(len(order), 0, -1):
            g = m
            for a in order[:k]:
                g = math.gcd(g, terms[a])
            if g <= 1:
                continue
            small = ({a: terms[a] for a in order[k:]}, const)
            lo, hi = self._range(*small)
            if lo is not None and 0 <= lo and hi < g:
                return g, self._build({a: terms[a] // g for a in order[:k]}, 0), small
        return None

    def _affine(self, node):
        """(atom -> coefficient, constant) of an already simplified node."""
        if node.op == "iconst":
            return {}, node.attr[0]
        if node.op == "iadd":
            ta, ca = self._affine(self(node.args[0]))
            tb, cb = self._affine(self(node.args[1]))
            terms = dict(ta)
            for a, c in tb.items():
                terms[a] = terms.get(a, 0) + c
            return {a: c for a, c in terms.items() if c}, ca + cb
        if node.op == "imul" and node.args[1].op == "iconst":
            k = node.args[1].attr[0]
            t, c = self._affine(self(node.args[0]))
            return {a: v * k for a, v in t.items() if v * k}, c * k
        return {self(node): 1}, 0

    def _build(self, terms, const):
        out = None
        for atom, c in terms.items():
            term = atom if c == 1 else Node("imul", (atom, _const(c)), "int64")
            out = term if out is None else Node("iadd", (out, term), "int64")
        if out is None:
            return _const(const)
        return out if const == 0 else Node("iadd", (out, _const(const)), "int64")

    def _range(self, terms, const):
        lo = hi = const
        for atom, c in terms.items():
            r = self._atom_range(atom)
            if r is None:
                return None, None
            a, b = c * r[0], c * r[1]
            lo, hi = lo + min(a, b), hi + max(a, b)
        return lo, hi

    def _atom_range(self, atom):
        if atom.op == "ivar":
            return self.var_ranges.get(atom.attr[0])
        if atom.op == "iconst":
            return atom.attr[0], atom.attr[0]
        if atom.op in ("idiv", "imod") and atom.args[1].op == "iconst":
            m = atom.args[1].attr[0]
            inner = self._range(*self._affine(atom.args[0]))
            if atom.op == "imod":
                return 0, m - 1
            if inner[0] is None:
                return None
            return inner[0] // m, inner[1] // m
        if atom.op in _INDEX_OPS:
            return self._range(*self._affine(atom))
        if atom.op == "to_index":
            return 0, atom.attr[0] - 1
        return None


def substitute(node: Node, var: str, replacement: Node, memo=None) -> Node:
    """node with every ivar `var` replaced."""
    return replace_leaves(node, lambda leaf: replacement if leaf.op == "ivar" and leaf.attr[0] == var else None,
                          {} if memo is None else memo)
