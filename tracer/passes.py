"""Graph -> Graph passes. Each is pure and records its name, time and node counts in
the result's provenance: dce, cse, fold (constant folding), simplify (algebra)."""
import time

import numpy as np

from . import dtypes
from .ir import Eqn, Graph
from .registry import get


def _recorded(name):
    def wrap(fn):
        def run(graph: Graph) -> Graph:
            start = time.perf_counter()
            eqns, outputs = fn(graph)
            record = {"pass": name, "seconds": round(time.perf_counter() - start, 6),
                      "eqns_before": len(graph.eqns), "eqns_after": len(eqns)}
            return graph.with_eqns(eqns, outputs, record)
        run.__name__ = name
        run.__doc__ = fn.__doc__
        return run
    return wrap


@_recorded("dce")
def dce(graph):
    """Drop eqns none of whose outputs reach a graph output."""
    live = set(graph.outputs)
    kept = []
    for e in reversed(graph.eqns):
        if any(v in live for v in e.outputs):
            kept.append(e)
            live.update(e.inputs)
    return kept[::-1], graph.outputs


def _param_key(value):
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, Graph):
        return ("graph", id(value))
    if isinstance(value, float):  # by bits: -0.0 and 0.0 differ (1/x), NaN equals itself
        return ("float", value.hex())
    if isinstance(value, tuple):
        return tuple(_param_key(v) for v in value)
    return value


def _substituted(eqn, subst):
    if not any(v in subst for v in eqn.inputs):
        return eqn
    return eqn.replace(inputs=tuple(subst.get(v, v) for v in eqn.inputs))


@_recorded("cse")
def cse(graph):
    """Merge eqns that apply the same primitive with the same params to the same inputs.
    A checkpoint's recomputation in the backward pass (scope remat(...)) is never merged
    into the forward pass's eqns: that would keep the forward values alive instead."""
    seen, subst, kept = {}, {}, []
    for e in graph.eqns:
        e = _substituted(e, subst)
        key = (e.prim, tuple(v.id for v in e.inputs),
               tuple(sorted((k, _param_key(v)) for k, v in e.params.items())), "remat(" in (e.scope or ""))
        if key in seen:
            subst.update(zip(e.outputs, seen[key].outputs))
            continue
        seen[key] = e
        kept.append(e)
    return kept, [subst.get(v, v) for v in graph.outputs]


_FOLD_LIMIT = 4096  # largest non-uniform result kept as a constant


def _value_of(eqn):
    if eqn.prim == "full":
        return np.full(eqn.params["shape"], eqn.params["value"], dtype=dtypes.to_numpy(eqn.params["dtype"]))
    return eqn.params["value"]


@_recorded("fold")
def fold(graph):
    """Evaluate eqns whose inputs are all known constants; uniform results become `full`."""
    from .interpreter import run_eqn
    known, kept = {}, []
    for e in graph.eqns:
        if e.prim in ("full", "constant"):
            known[e.outputs[0]] = e
            kept.append(e)
            continue
        if (e.inputs and all(v in known for v in e.inputs) and len(e.outputs) == 1
                and not any(isinstance(p, Graph) for p in e.params.values())):
            out = e.outputs[0]
            value = run_eqn(get(e.prim), [_value_of(known[v]) for v in e.inputs], e.params, [out.dtype])[0]
            flat = value.reshape(-1)
            if flat.size and (flat == flat[0]).all():
                item = flat[0].item()
                new = Eqn("full", (), e.outputs, {"shape": out.shape, "value": item if out.dtype != "bfloat16" else float(item),
                                                  "dtype": out.dtype}, e.source, e.scope)
            elif value.size <= _FOLD_LIMIT:
                new = Eqn("constant", (), e.outputs, {"value": np.ascontiguousarray(value)}, e.source, e.scope)
            else:
                kept.append(e)
                continue
            known[out] = new
            kept.append(new)
            continue
        kept.append(e)
    return kept, graph.outputs


def _full_value(producers, var):
    e = producers.get(var)
    return e.params["value"] if e is not None and e.prim == "full" else None


@_recorded("simplify")
def simplify(graph):
    """Algebraic identities: x+0, x-0, x*1, x/1, --x, select(p,x,x), converts and movement
    ops that do nothing, transpose of transpose, reshape of reshape, broadcast of a full,
    broadcast of a broadcast, and transpose(dot(a, b)) = dot(b, a) where the transpose
    swaps the two free parts (the product is then written in the layout it is read in)."""
    subst, producers, kept = {}, {}, []
    uses = _use_counts(graph)

    def alias(e, var):
        subst[e.outputs[0]] = var

    for e in graph.eqns:
        e = _substituted(e, subst)
        ins, p = e.inputs, e.params
        out = e.outputs[0] if e.outputs else None
        src = producers.get(ins[0]) if ins else None
        if e.prim in ("add", "sub") and _full_value(producers, ins[1]) == 0:
            alias(e, ins[0]); continue
        if e.prim == "add" and _full_value(producers, ins[0]) == 0:
            alias(e, ins[1]); continue
        if e.prim in ("mul", "div") and _full_value(producers, ins[1]) == 1:
            alias(e, ins[0]); continue
        if e.prim == "mul" and _full_value(producers, ins[0]) == 1:
            alias(e, ins[1]); continue
        if e.prim == "neg" and src is not None and src.prim == "neg":
            alias(e, src.inputs[0]); continue
        if e.prim == "select" and ins[1] is ins[2]:
            alias(e, ins[1]); continue
        if e.prim == "convert" and ins[0].dtype == out.dtype:
            alias(e, ins[0]); continue
        if e.prim in ("reshape", "broadcast_in_dim") and ins[0].shape == out.shape:
            alias(e, ins[0]); continue
        if e.prim == "transpose":
            perm = p["permutation"]
            if src is not None and src.prim == "dot_general" and uses.get(ins[0], 0) == 1:
                swapped = _swapped_dot(src, perm)
                if swapped is not None:
                    e = Eqn("dot_general", src.inputs[::-1], e.outputs, {"dimension_numbers": swapped},
                            e.source, e.scope)
                    for v in e.outputs:
                        producers[v] = e
                    kept.append(e)
                    continue
            if src is not None and src.prim == "transpose":
                perm = tuple(src.params["permutation"][i] for i in perm)
                e = e.replace(inputs=src.inputs, params={"permutation": perm})
            if perm == tuple(range(len(perm))):
                alias(e, e.inputs[0]); continue
        if e.prim == "reshape" and src is not None and src.prim == "reshape":
            e = e.replace(inputs=src.inputs)
            if e.inputs[0].shape == out.shape:
                alias(e, e.inputs[0]); continue
        if e.prim == "broadcast_in_dim" and src is not None:
            if src.prim == "full":
                e = Eqn("full", (), e.outputs, {"shape": out.shape, "value": src.params["value"],
                                                "dtype": out.dtype}, e.source, e.scope)
            elif src.prim == "broadcast_in_dim":
                inner_dims = src.params["broadcast_dimensions"]
                dims = p["broadcast_dimensions"]
                e = e.replace(inputs=src.inputs,
                              params={"shape": p["shape"],
                                      "broadcast_dimensions": tuple(dims[d] for d in inner_dims)})
        for v in e.outputs:
            producers[v] = e
        kept.append(e)
    return kept, [subst.get(v, v) for v in graph.outputs]


def _use_counts(graph):
    uses = {}
    for v in [v for e in graph.eqns for v in e.inputs] + list(graph.outputs):
        uses[v] = uses.get(v, 0) + 1
    return uses


def _swapped_dot(dot, perm):
    """dimension_numbers of dot(b, a) when transpose(dot(a, b), perm) equals it, else None.
    A dot's output axes are batch, then a's free axes, then b's."""
    (lc, rc), (lb, rb) = dot.params["dimension_numbers"]
    a, b = dot.inputs
    nb, na = len(lb), len(a.shape) - len(lc) - len(lb)
    nf = len(b.shape) - len(rc) - len(rb)
    if na == 0 or nf == 0:
        return None
    want = (*range(nb), *range(nb + na, nb + na + nf), *range(nb, nb + na))
    return ((rc, lc), (rb, lb)) if tuple(perm) == want else None


def optimize(graph: Graph, rounds: int = 3) -> Graph:
    """simplify, fold, cse, dce until nothing changes (at most `rounds` times)."""
    for _ in range(rounds):
        before = len(graph.eqns)
        graph = dce(cse(fold(simplify(graph))))
        if len(graph.eqns) == before:
            break
    return graph


PASSES = {"dce": dce, "cse": cse, "fold": fold, "simplify": simplify}
