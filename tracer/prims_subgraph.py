"""Primitives that hold a graph: custom_vjp (a registered forward/backward pair) and
checkpoint (recompute the intermediates in the backward pass instead of saving them)."""
from . import lax
from .autodiff import backward
from .errors import TraceError
from .registry import register


def _graph_outputs(*ins, graph, **_):
    return [(v.shape, v.dtype) for v in graph.outputs]


def _eval_subgraph(graph, args):
    """Subgraphs are stored flat (no pytree structure), so evaluate returns a list."""
    from .interpreter import evaluate, float64_mode
    return tuple(evaluate(graph, *args, float64=float64_mode()))


# custom_vjp: outputs are the forward's outputs followed by its residuals; the VJP rule
# replays the registered backward graph on (residuals, output cotangents).
def _custom_vjp_shape(*ins, name, fwd, bwd, num_out):
    if len(ins) != len(fwd.inputs):
        raise TraceError(f"custom_vjp {name}: expected {len(fwd.inputs)} operands, got {len(ins)}")
    return _graph_outputs(graph=fwd)


def _custom_vjp_vjp(cts, ins, outs, name, fwd, bwd, num_out):
    from .tracing import inline
    residuals = list(outs[num_out:])
    in_cts, _ = inline(bwd, residuals + list(cts[:num_out]), scope=f"{name}.bwd")
    return in_cts


register("custom_vjp", shape=_custom_vjp_shape,
         impl=lambda *args, name, fwd, bwd, num_out: _eval_subgraph(fwd, args),
         vjp=_custom_vjp_vjp)


def _checkpoint_vjp(cts, ins, outs, graph, name):
    from .tracing import inline
    _, env = inline(graph, ins, scope=f"remat({name})")
    return backward(graph, env, cts)


register("checkpoint", shape=lambda *ins, graph, name: _graph_outputs(graph=graph),
         impl=lambda *args, graph, name: _eval_subgraph(graph, args),
         vjp=_checkpoint_vjp)
