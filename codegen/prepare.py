"""Graph preparation before fusion: flatten graph-holding eqns, then optimize."""
from mlbh.tracer import passes
from mlbh.tracer.ir import Graph, Var


def inline_subgraphs(graph: Graph) -> Graph:
    """Replace custom_vjp and checkpoint eqns by the eqns of their forward graph.

    Autodiff has already emitted their backward parts, so the forward graph is all
    execution needs. Fresh Vars are made for the inlined eqns, and the eqn's outputs are
    substituted by the inlined values in everything after it.
    """
    if not any(e.prim in ("custom_vjp", "checkpoint") for e in graph.eqns):
        return graph
    subst, eqns = {}, []
    for e in graph.eqns:
        e = e.replace(inputs=tuple(subst.get(v, v) for v in e.inputs))
        if e.prim not in ("custom_vjp", "checkpoint"):
            eqns.append(e)
            continue
        inner = inline_subgraphs(e.params["fwd"] if e.prim == "custom_vjp" else e.params["graph"])
        env = dict(zip(inner.inputs, e.inputs))
        for ie in inner.eqns:
            outs = tuple(Var(v.shape, v.dtype) for v in ie.outputs)
            env.update(zip(ie.outputs, outs))
            scope = "/".join(s for s in (e.scope, ie.scope) if s)
            eqns.append(ie.replace(inputs=tuple(env[v] for v in ie.inputs), outputs=outs, scope=scope))
        subst.update(zip(e.outputs, (env[v] for v in inner.outputs)))
    outputs = [subst.get(v, v) for v in graph.outputs]
    return graph.with_eqns(eqns, outputs, record={"pass": "inline_subgraphs", "seconds": 0.0,
                                                  "eqns_before": len(graph.eqns), "eqns_after": len(eqns)})


def prepare(graph: Graph) -> Graph:
    return passes.optimize(inline_subgraphs(graph))
