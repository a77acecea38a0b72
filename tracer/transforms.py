"""The user-facing transformations: vjp, grad, value_and_grad, jvp, checkpoint, custom_vjp.

Each is implemented for traced arguments only: it traces the function into a Graph and
emits the transformed computation into the current trace. Called on plain numpy arrays,
a transformed function is traced on their specs and run by the reference interpreter,
so grad(f)(x) returns numpy arrays and transformations compose (grad of grad, jvp of grad).
"""
import functools

from . import lax, pytree
from .autodiff import backward, differentiable
from .errors import TraceError
from .ir import Graph
from .tracing import Tracer, current_builder, inline, relative_scopes, spec_of, trace_flat


def _eager_or_traced(traced_fn):
    """Run traced_fn inside the current trace, or trace-and-evaluate on concrete args."""
    @functools.wraps(traced_fn)
    def run(*args, **kwargs):
        if current_builder() is not None:
            return traced_fn(*args, **kwargs)
        from .interpreter import evaluate
        graph, _ = trace_flat(traced_fn, args, kwargs)
        return evaluate(graph, *args)
    return run


def _flat_graph(graph):
    return Graph(graph.inputs, graph.eqns, graph.outputs, None, None, graph.provenance)


def _vjp_traced(fn, primals, has_aux=False):
    graph, captured = trace_flat(fn, primals)
    leaves, in_tree = pytree.flatten(list(primals))
    outs, env = inline(graph, leaves + captured)
    out_tree = graph.out_tree
    aux = None
    if has_aux:
        if out_tree[0] != "tuple" or len(out_tree[1]) != 2:
            raise TraceError("has_aux=True needs the function to return (output, aux)")
        out_pair = pytree.unflatten(out_tree, outs)
        out, aux = out_pair
        n_out = pytree.num_leaves(out_tree[1][0])
        out_tree = out_tree[1][0]
    else:
        out = pytree.unflatten(out_tree, outs)
        n_out = len(outs)

    def vjp_fn(cotangent):
        ct_leaves, ct_tree = pytree.flatten(cotangent)
        if ct_tree != out_tree:
            raise TraceError("vjp: the cotangent's structure does not match the output's")
        cts = ct_leaves + [None] * (len(graph.outputs) - n_out)
        in_cts = backward(graph, env, cts)[:len(leaves)]
        filled = [None if not differentiable(v) else (c if c is not None else lax.zeros_like(env[v]))
                  for v, c in zip(graph.inputs, in_cts)]
        return tuple(pytree.unflatten(in_tree, filled))

    return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)


def vjp(fn, *primals, has_aux=False):
    """(out, vjp_fn): vjp_fn(cotangent) returns the cotangents of the primals as a tuple."""
    if current_builder() is not None:
        return _vjp_traced(fn, primals, has_aux)
    from .interpreter import evaluate
    graph, _ = trace_flat(fn, primals)
    result = evaluate(graph, *primals)
    out, aux = result if has_aux else (result, None)

    def vjp_fn(cotangent):
        g, _ = trace_flat(lambda p, c: _vjp_traced(fn, p, has_aux)[1](c), (list(primals), cotangent))
        return tuple(evaluate(g, list(primals), cotangent))

    return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)


def value_and_grad(fn, argnums=0, has_aux=False):
    """f -> (f(x), df/dx[argnums]); f must return a scalar (or (scalar, aux))."""
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)

    def traced(*args):
        def of_selected(*selected):
            full = list(args)
            for i, s in zip(nums, selected):
                full[i] = s
            return fn(*full)

        res = _vjp_traced(of_selected, tuple(args[i] for i in nums), has_aux)
        out, vjp_fn = res[0], res[1]
        if not isinstance(out, Tracer) or out.shape != ():
            raise TraceError(f"grad needs a function returning a scalar, got "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        grads = vjp_fn(lax.full((), 1.0, out.dtype))
        grads = grads[0] if single else grads
        return ((out, res[2]), grads) if has_aux else (out, grads)

    return _eager_or_traced(functools.wraps(fn)(traced))


def grad(fn, argnums=0, has_aux=False):
    vg = value_and_grad(fn, argnums, has_aux)

    @functools.wraps(fn)
    def grad_fn(*args):
        value, grads = vg(*args)
        return (grads, value[1]) if has_aux else grads
    return grad_fn


def jvp(fn, primals, tangents):
    """(f(primals), J tangents), computed as the transpose of the (linear) VJP."""
    primals, tangents = tuple(primals), tuple(tangents)

    def traced(primals, tangents):
        out, vjp_fn = _vjp_traced(fn, primals)
        zero_ct = pytree.tree_map(lambda o: lax.zeros_like(o), out)
        t_leaves, _ = pytree.flatten(list(tangents))
        keep = [t if differentiable_leaf(t) else None for t in t_leaves]
        _, transpose_fn = _vjp_traced(lambda ct: _drop_none(vjp_fn(ct)), (zero_ct,))
        (jt,) = transpose_fn([x for x in keep if x is not None])
        return out, jt

    return _eager_or_traced(traced)(primals, tangents)


def differentiable_leaf(x) -> bool:
    return spec_of(x).dtype in ("float64", "float32", "float16", "bfloat16")


def _drop_none(tree):
    leaves, _ = pytree.flatten(tree)
    return [x for x in leaves if x is not None]


def checkpoint(fn, name=None):
    """fn whose intermediates are recomputed in the backward pass instead of being saved."""
    label = name or getattr(fn, "__name__", "checkpoint")

    @functools.wraps(fn)
    def wrapped(*args):
        if current_builder() is None:
            return fn(*args)
        from .tracing import bind
        with relative_scopes():
            graph, captured = trace_flat(fn, args)
        leaves, _ = pytree.flatten(list(args))
        outs = bind("checkpoint", *leaves, *captured, graph=_flat_graph(graph), name=label)
        outs = list(outs) if isinstance(outs, tuple) else [outs]
        return pytree.unflatten(graph.out_tree, outs)
    return wrapped


class custom_vjp:  # noqa: N801 (decorator, named like the primitive)
    """A function with a registered forward/backward pair.

        @custom_vjp
        def f(x, y): ...
        f.defvjp(fwd, bwd)   # fwd(x, y) -> (out, residuals); bwd(residuals, ct) -> (ct_x, ct_y)
    """

    def __init__(self, fn, name=None):
        self.fn = fn
        self.name = name or fn.__name__
        self.fwd = self.bwd = None
        self._in_fwd = False
        functools.update_wrapper(self, fn)

    def defvjp(self, fwd, bwd):
        self.fwd, self.bwd = fwd, bwd
        return self

    def __call__(self, *args):
        if self.fwd is None:
            raise TraceError(f"custom_vjp {self.name}: call defvjp(fwd, bwd) first")
        if current_builder() is None or self._in_fwd:
            # eager, or fwd calling the function itself (`return f(x), res`): the primal
            return self.fn(*args)
        from .tracing import bind
        self._in_fwd = True
        try:
            with relative_scopes():
                fwd_graph, cap = trace_flat(lambda *a: _pair(self.fwd(*a), self.name), args)
        finally:
            self._in_fwd = False
        out_tree = fwd_graph.out_tree[1][0]
        res_tree = fwd_graph.out_tree[1][1]
        num_out = pytree.num_leaves(out_tree)
        res_specs = [spec_of(v) for v in fwd_graph.outputs[num_out:]]
        out_specs = [spec_of(v) for v in fwd_graph.outputs[:num_out]]
        arg_leaves, arg_tree = pytree.flatten(list(args))
        with relative_scopes():
            bwd_graph, cap2 = trace_flat(
                lambda res, cts: _aligned_cts(self.name, arg_tree, arg_leaves, self.bwd(
                    pytree.unflatten(res_tree, res), pytree.unflatten(out_tree, cts))),
                (res_specs, out_specs))
        if cap or cap2:
            raise TraceError(f"custom_vjp {self.name}: fwd and bwd must not close over traced values; "
                             "pass them as arguments")
        leaves, _ = pytree.flatten(list(args))
        outs = bind("custom_vjp", *leaves, name=self.name, fwd=_flat_graph(fwd_graph),
                    bwd=_flat_graph(bwd_graph), num_out=num_out)
        outs = list(outs) if isinstance(outs, tuple) else [outs]
        return pytree.unflatten(out_tree, outs[:num_out])


def _aligned_cts(name, arg_tree, arg_leaves, in_cts):
    """bwd's result (one cotangent pytree per argument, None for zero) as a flat list with
    exactly one array per argument leaf, so cotangents cannot shift onto the wrong input."""
    leaves = iter(arg_leaves)
    out = []

    def walk(td, ct):
        kind = td[0]
        if kind == "leaf":
            spec = spec_of(next(leaves))
            if ct is None:
                out.append(lax.full(spec.shape, 0, spec.dtype))
                return
            if tuple(getattr(ct, "shape", ())) != spec.shape:
                raise TraceError(f"custom_vjp {name}: bwd returned a cotangent of shape "
                                 f"{list(getattr(ct, 'shape', ()))} for an argument of shape {list(spec.shape)}")
            out.append(ct)
            return
        if kind == "none":
            return
        keys, kids = (td[1], td[2]) if kind == "dict" else (None, td[1])
        if ct is None:
            vals = [None] * len(kids)
        elif keys is not None and isinstance(ct, dict) and sorted(ct) == list(keys):
            vals = [ct[k] for k in keys]
        elif keys is None and isinstance(ct, (tuple, list)) and len(ct) == len(kids):
            vals = list(ct)
        else:
            raise TraceError(f"custom_vjp {name}: bwd must return one cotangent per argument, "
                             "each shaped like its argument (or None)")
        for kid, val in zip(kids, vals):
            walk(kid, val)

    walk(arg_tree, list(in_cts) if isinstance(in_cts, (tuple, list)) else in_cts)
    return out


def _pair(result, name):
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TraceError(f"custom_vjp {name}: fwd must return (output, residuals)")
    return result
