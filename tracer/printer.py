"""Readable, jaxpr-like text for a Graph: one equation a line with shapes, dtypes and source."""
import numpy as np

from .ir import Graph


def _names():
    letters = "abcdefghijklmnopqrstuvwxyz"
    n = 0
    while True:
        s, k = "", n
        while True:
            s = letters[k % 26] + s
            k = k // 26 - 1
            if k < 0:
                break
        yield s
        n += 1


def _fmt_param(value) -> str:
    if isinstance(value, Graph):
        return f"<graph {len(value.inputs)}->{len(value.outputs)}, {len(value.eqns)} eqns>"
    if isinstance(value, np.ndarray):
        if value.size <= 4:
            return f"array({value.tolist()})"
        return f"array<{value.dtype}{list(value.shape)}>"
    if isinstance(value, tuple):
        return "(" + ",".join(_fmt_param(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def format_graph(graph: Graph, indent: str = "", show_source: bool = True) -> str:
    gen = _names()
    names = {}

    def name(v, define=False):
        if v not in names:
            names[v] = next(gen)
        return f"{names[v]}:{v.aval}" if define else names[v]

    args = " ".join(name(v, True) for v in graph.inputs)
    lines = [f"{indent}{{ lambda {args} ."]
    body = []
    for e in graph.eqns:
        outs = " ".join(name(v, True) for v in e.outputs)
        params = " ".join(f"{k}={_fmt_param(v)}" for k, v in sorted(e.params.items()))
        call = f"{e.prim}[{params}]" if params else e.prim
        ins = " ".join(name(v) for v in e.inputs)
        text = f"{outs} = {call} {ins}".rstrip()
        where = " ".join(x for x in (e.source if show_source else None,
                                     f"({e.scope})" if e.scope else None) if x)
        body.append((text, where))
    width = min(max((len(t) for t, _ in body), default=0), 100)
    for text, where in body:
        lines.append(f"{indent}    {text.ljust(width)}" + (f"  # {where}" if where else ""))
    outs = " ".join(name(v) for v in graph.outputs)
    lines.append(f"{indent}  in ({outs}) }}")
    return "\n".join(lines)
