"""Tracing: running a Python function on Tracers records a Graph.

bind(prim, *args, **params) is the one door into the IR. With no active trace and
no Tracer arguments it runs the primitive's numpy impl directly (eager mode).
Tracers of an enclosing trace used inside a nested trace are captured as extra
inputs of the nested graph (closure conversion), which is what lets transformed
functions be traced and composed.
"""
import contextlib
from dataclasses import dataclass

import numpy as np

from . import dtypes, pytree
from .errors import ConcretizationError, TraceError
from .ir import Eqn, Graph, Var
from .registry import get
from .source import user_source


@dataclass(frozen=True)
class Spec:
    """An abstract array argument: shape and dtype, no data."""
    shape: tuple
    dtype: str

    def __init__(self, shape, dtype="float32"):
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        object.__setattr__(self, "dtype", dtypes.name_of(dtype))

    @property
    def ndim(self):
        return len(self.shape)


class Builder:
    def __init__(self):
        self.inputs = []
        self.eqns = []
        self.captured = {}  # outer Tracer -> Var of this builder

    def new_input(self, shape, dtype):
        var = Var(shape, dtype)
        self.inputs.append(var)
        return Tracer(var, self)


_STACK: list = []
_SCOPE: list = []


def current_builder():
    return _STACK[-1] if _STACK else None


@contextlib.contextmanager
def name_scope(name):
    """Names the eqns made inside (composite ops), so dumps stay readable."""
    _SCOPE.append(name)
    try:
        yield
    finally:
        _SCOPE.pop()


@contextlib.contextmanager
def relative_scopes():
    """Traces a graph an eqn holds (checkpoint, custom_vjp) with scopes relative to that
    eqn: whoever inlines it prefixes the eqn's own scope, which would otherwise appear twice."""
    saved = _SCOPE[:]
    _SCOPE.clear()
    try:
        yield
    finally:
        _SCOPE[:] = saved


class Tracer:
    """A traced array. Operators and methods build eqns through mlbh.tracer.ops."""
    __slots__ = ("var", "builder")
    __array_priority__ = 1000
    __array_ufunc__ = None  # numpy defers to our reflected operators

    def __init__(self, var, builder):
        self.var = var
        self.builder = builder

    shape = property(lambda self: self.var.shape)
    dtype = property(lambda self: self.var.dtype)
    ndim = property(lambda self: len(self.var.shape))
    size = property(lambda self: self.var.size)

    def __repr__(self):
        return f"Tracer<{self.var.aval}>"

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d traced array")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def _concrete(self, what):
        raise ConcretizationError(
            f"{what} of a traced array {self.var.aval}: its value is unknown while tracing; "
            "Python control flow cannot depend on traced values (use ops.where instead)",
            user_source())

    def __bool__(self):
        self._concrete("bool()")

    def __int__(self):
        self._concrete("int()")

    def __float__(self):
        self._concrete("float()")

    def __index__(self):
        self._concrete("using as an index")

    def __hash__(self):
        return id(self)


def _install_operators():
    from . import ops
    binary = {"add": ops.add, "sub": ops.subtract, "mul": ops.multiply, "truediv": ops.divide,
              "pow": ops.power, "matmul": ops.matmul}
    for name, fn in binary.items():
        setattr(Tracer, f"__{name}__", lambda a, b, fn=fn: fn(a, b))
        setattr(Tracer, f"__r{name}__", lambda a, b, fn=fn: fn(b, a))
    for name, fn in {"lt": ops.less, "le": ops.less_equal, "gt": ops.greater,
                     "ge": ops.greater_equal, "eq": ops.equal, "ne": ops.not_equal}.items():
        setattr(Tracer, f"__{name}__", lambda a, b, fn=fn: fn(a, b))
    Tracer.__neg__ = lambda a: ops.negative(a)
    Tracer.__pos__ = lambda a: a
    Tracer.__abs__ = lambda a: ops.abs(a)
    Tracer.__getitem__ = lambda a, idx: ops.getitem(a, idx)
    Tracer.T = property(lambda a: ops.transpose(a))
    Tracer.astype = lambda a, dtype: ops.astype(a, dtype)
    Tracer.reshape = lambda a, *shape: ops.reshape(a, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)
    Tracer.sum = lambda a, axis=None, keepdims=False: ops.sum(a, axis, keepdims)
    Tracer.mean = lambda a, axis=None, keepdims=False: ops.mean(a, axis, keepdims)
    Tracer.max = lambda a, axis=None, keepdims=False: ops.max(a, axis, keepdims)
    Tracer.transpose = lambda a, *axes: ops.transpose(a, axes if axes else None)


def is_tracer(x) -> bool:
    return isinstance(x, Tracer)


def _as_var(builder, x):
    if isinstance(x, Tracer):
        if x.builder is builder:
            return x.var
        if x.builder in _STACK:  # a value of an enclosing trace: capture it as an input
            if x not in builder.captured:
                builder.captured[x] = Var(x.shape, x.dtype)
            return builder.captured[x]
        raise TraceError("a traced value was used outside the trace that made it "
                         "(did a Tracer escape through a global or a closure?)", user_source())
    if isinstance(x, Var):
        return x
    if np.ndim(x) == 0:  # a scalar: a readable `full`, not an opaque constant
        name = dtypes.name_of(np.asarray(x).dtype)
        value = np.asarray(x).item()
        return bind("full", shape=(), value=value if name != "bfloat16" else float(value), dtype=name).var
    return constant(x).var


def constant(value):
    """A numpy array or scalar as a `constant` eqn of the current trace."""
    arr = np.asarray(value)
    if arr.dtype == np.float64 and not isinstance(value, np.ndarray):
        arr = arr.astype(np.float32)
    name = dtypes.name_of(arr.dtype)
    return bind("constant", value=np.array(arr, dtype=dtypes.to_numpy(name)))


def bind(prim_name, *args, _source=None, _scope=None, **params):
    """Apply a primitive: record an eqn while tracing, else compute eagerly."""
    prim = get(prim_name)
    builder = current_builder()
    if builder is None:
        if any(isinstance(a, Tracer) for a in args):
            raise TraceError(f"{prim_name}: a traced value was used after its trace ended",
                             user_source())
        from .interpreter import apply_eager
        return apply_eager(prim, [np.asarray(a) for a in args], params)
    source = _source if _source is not None else user_source()
    in_vars = [_as_var(builder, a) for a in args]
    try:
        out_avals = prim.shape(*in_vars, **params)
    except TraceError as err:
        if err.source is None:
            raise type(err)(str(err), source) from None
        raise
    outs = [Var(s, d) for s, d in out_avals]
    scope = "/".join(_SCOPE)
    if _scope:
        scope = f"{scope}/{_scope}" if scope else _scope
    builder.eqns.append(Eqn(prim_name, tuple(in_vars), tuple(outs), params, source, scope))
    tracers = [Tracer(v, builder) for v in outs]
    return tracers[0] if len(tracers) == 1 else tuple(tracers)


def spec_of(x) -> Spec:
    if isinstance(x, Spec):
        return x
    if isinstance(x, Tracer):
        return Spec(x.shape, x.dtype)
    if isinstance(x, bool):
        return Spec((), "bool")
    if isinstance(x, int):
        return Spec((), "int32")
    if isinstance(x, float):
        return Spec((), "float32")
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return Spec(x.shape, x.dtype)
    raise TraceError(f"cannot trace an argument of type {type(x).__name__}; "
                     "pass numpy arrays, Spec(shape, dtype) or pytrees of them")


def trace_flat(fn, args, kwargs=None):
    """Trace fn(*args) where args are pytrees of specs/arrays/tracers.

    Returns (graph, captured): captured lists the enclosing-trace Tracers that the
    graph's trailing inputs stand for.
    """
    leaves, in_tree = pytree.flatten(list(args))
    builder = Builder()
    _STACK.append(builder)
    try:
        in_tracers = [builder.new_input(s.shape, s.dtype) for s in map(spec_of, leaves)]
        out = fn(*pytree.unflatten(in_tree, in_tracers), **(kwargs or {}))
        out_leaves, out_tree = pytree.flatten(out)
        out_vars = [_as_var(builder, x) for x in out_leaves]
    finally:
        _STACK.pop()
    captured = list(builder.captured)
    inputs = builder.inputs + [builder.captured[t] for t in captured]
    return Graph(inputs, builder.eqns, out_vars, in_tree, out_tree), captured


def trace(fn, *args, **kwargs) -> Graph:
    """Trace fn on pytrees of numpy arrays or Specs into a Graph."""
    graph, captured = trace_flat(fn, args, kwargs)
    if captured:
        raise TraceError("trace(): the function closes over values of an enclosing trace; "
                         "use the transformations (grad, vjp, ...) inside a trace instead")
    return graph


def inline(graph, flat_args, scope=None):
    """Replay a graph's eqns in the current trace with the given input values."""
    env = dict(zip(graph.inputs, flat_args))
    for e in graph.eqns:
        outs = bind(e.prim, *[env[v] for v in e.inputs], _source=e.source or "",
                    _scope=scope if not e.scope else (f"{scope}/{e.scope}" if scope else e.scope),
                    **e.params)
        outs = outs if isinstance(outs, tuple) else (outs,)
        env.update(zip(e.outputs, outs))
    return [env[v] for v in graph.outputs], env
