"""Reverse-mode differentiation of a Graph, emitted into the current trace.

backward() walks a graph's eqns in reverse, calling each primitive's VJP rule with the
cotangents of its outputs and accumulating the cotangents of its inputs. VJP rules are
written with primitives, so the result is itself a traceable, differentiable graph.
"""
from . import dtypes, lax
from .registry import get


def differentiable(var) -> bool:
    return dtypes.is_float(var.dtype)


def backward(graph, env, out_cts):
    """Cotangents of graph.inputs (None where zero) given cotangents of graph.outputs.

    env maps the graph's Vars to their (traced) values in the current trace.
    """
    cts = {}
    active = set(graph.inputs)  # only values that depend on an input need a cotangent
    for eqn in graph.eqns:
        if any(v in active for v in eqn.inputs):
            active.update(eqn.outputs)

    def accumulate(var, ct):
        if ct is None or var not in active or not differentiable(var):
            return
        if ct.dtype != var.dtype:
            ct = lax.convert(ct, var.dtype)
        cts[var] = ct if var not in cts else lax.add(cts[var], ct)

    for var, ct in zip(graph.outputs, out_cts):
        accumulate(var, ct)
    for eqn in reversed(graph.eqns):
        eqn_cts = [cts.pop(v, None) for v in eqn.outputs]
        if all(c is None for c in eqn_cts):
            continue
        rule = get(eqn.prim).vjp
        if rule is None:
            continue  # no inputs to differentiate (full, iota, constant)
        ins = [env[v] for v in eqn.inputs]
        outs = [env[v] for v in eqn.outputs]
        if len(eqn_cts) > 1 or any(c is None for c in eqn_cts):
            eqn_cts = [c if c is not None else lax.zeros_like(o) for c, o in zip(eqn_cts, outs)]
        from .tracing import name_scope
        with name_scope(f"vjp({eqn.scope or eqn.prim})"):
            in_cts = rule(eqn_cts, ins, outs, **eqn.params)
        for var, ct in zip(eqn.inputs, in_cts):
            accumulate(var, ct)
    return [cts.get(v) for v in graph.inputs]
