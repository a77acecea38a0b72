"""Random array programs for differential testing of the compiled backends.

A hypothesis strategy draws a Recipe: input shapes and a short chain of steps, each
turning the current value into a new one (elementwise math, broadcasts against new
inputs or earlier values, transposes, reshapes, slices, reductions over random axes,
matmuls, gathers, softmax). Recipe.fn(*inputs) builds the program with mlbh ops; the
shapes are tracked while drawing, so every drawn recipe is valid. Values stay bounded
(exp of tanh, divisions by 1 + x^2) so float32 comparisons stay meaningful.
"""
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from mlbh import tracer as T
from mlbh.tracer import lax, ops, pytree

UNARY = {
    "neg": lambda x: -x,
    "tanh": ops.tanh,
    "erf": ops.erf,
    "exp_tanh": lambda x: ops.exp(ops.tanh(x)),
    "log_1p_sq": lambda x: ops.log(1.0 + x * x),
    "sqrt_1p_sq": lambda x: ops.sqrt(1.0 + x * x),
    "rsqrt_1p_sq": lambda x: ops.rsqrt(1.0 + x * x),
    "gelu": ops.gelu,
    "abs": ops.abs,
}
UNARY_INT = {"neg": lambda x: -x, "abs": ops.abs}
BINARY_INT = {
    "add": ops.add,
    "sub": ops.subtract,
    "mul": ops.multiply,
    "max": ops.maximum,
    "min": ops.minimum,
    "where_lt": lambda a, b: ops.where(a < b, a, -b),
}
INT_KINDS = ("unary", "binary", "broadcast", "transpose", "reshape", "slice", "reduce", "gather")
BINARY = {
    "add": ops.add,
    "sub": ops.subtract,
    "mul": ops.multiply,
    "max": ops.maximum,
    "min": ops.minimum,
    "div_1p_sq": lambda a, b: a / (1.0 + b * b),
    "where_lt": lambda a, b: ops.where(a < b, a, b * 0.5),
}


@dataclass
class Recipe:
    dtype: str = "float32"                       # of the main chain: "float32" | "int32"
    inputs: list = field(default_factory=list)   # [(shape, dtype | ("index", high))]
    steps: list = field(default_factory=list)    # [(kind, params)]
    extra_output: int | None = None              # index of an earlier value also returned

    def arrays(self, seed):
        rng = np.random.default_rng(seed)
        out = []
        for shape, kind in self.inputs:
            if kind == "float32":
                out.append(rng.standard_normal(shape).astype(np.float32))
            elif kind == "int32":
                out.append(rng.integers(-4, 5, shape).astype(np.int32))
            else:
                out.append(rng.integers(0, kind[1], shape).astype(np.int32))
        return out

    def float_argnums(self):
        return tuple(i for i, (_, kind) in enumerate(self.inputs) if kind == "float32")

    def ints_and_bools(self, *args):
        """For integer recipes: the result, its sign as bools, and its argmax (exact values)."""
        out = self.fn(*args)
        out = out[0] if isinstance(out, tuple) else out
        return (out, out > 0) + ((ops.argmax(out, -1),) if len(out.shape) else ())

    def fn(self, *args):
        values = [args[0]]
        for kind, p in self.steps:
            values.append(_apply(kind, p, values, args, self.dtype))
        if self.extra_output is None:
            return values[-1]
        return values[-1], values[self.extra_output]

    def __repr__(self):
        lines = [f"inputs: {self.inputs}"] + [f"  {k} {p}" for k, p in self.steps]
        return "Recipe(\n" + "\n".join(lines) + f"\n  extra output: {self.extra_output})"


def _apply(kind, p, values, args, dtype):
    x = values[-1]
    if kind == "unary":
        return (UNARY if dtype == "float32" else UNARY_INT)[p["op"]](x)
    if kind == "binary":
        other = args[p["input"]] if "input" in p else values[p["value"]]
        fn = (BINARY if dtype == "float32" else BINARY_INT)[p["op"]]
        return fn(x, other) if not p["swap"] else fn(other, x)
    if kind == "broadcast":
        return ops.broadcast_to(x, p["shape"])
    if kind == "transpose":
        return ops.transpose(x, p["perm"])
    if kind == "reshape":
        return ops.reshape(x, p["shape"])
    if kind == "slice":
        return lax.slice(x, p["start"], p["limit"], p["strides"])
    if kind == "reduce":
        fn = {"sum": ops.sum, "max": ops.max, "mean": ops.mean}[p["op"]]
        return fn(x, p["axes"], keepdims=p["keepdims"])
    if kind == "matmul":
        return ops.matmul(x, args[p["input"]])
    if kind == "matmul_self":
        return ops.matmul(x, ops.transpose(x, tuple(range(len(x.shape) - 2)) + (len(x.shape) - 1, len(x.shape) - 2)))
    if kind == "gather":
        return ops.take(x, args[p["input"]], axis=p["axis"])
    if kind == "softmax":
        return ops.softmax(x, -1)
    if kind == "concat_tanh":
        return ops.concatenate([x, ops.tanh(x)], axis=p["axis"])
    raise ValueError(kind)


dims = st.integers(1, 4)


def _divisor_shapes(size):
    """Shapes of rank 1..3 with `size` elements."""
    result = [(size,)]
    for a in range(1, size + 1):
        if size % a == 0:
            result.append((a, size // a))
            for b in range(1, size // a + 1):
                if (size // a) % b == 0:
                    result.append((a, b, size // a // b))
    return result


@st.composite
def recipes(draw, max_steps=6, dtype="float32"):
    r = Recipe(dtype)
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(dims, min_size=rank, max_size=rank)))
    r.inputs.append((shape, dtype))
    shapes = [shape]
    unary, binary = (UNARY, BINARY) if dtype == "float32" else (UNARY_INT, BINARY_INT)

    def new_input(s, kind=dtype):
        r.inputs.append((tuple(s), kind))
        return len(r.inputs) - 1

    for _ in range(draw(st.integers(2, max_steps))):
        cur = shapes[-1]
        n = len(cur)
        options = ["unary", "binary", "broadcast", "softmax", "matmul"]
        if n >= 1:
            options += ["transpose", "reshape", "slice", "reduce", "gather", "concat_tanh"]
        if n >= 2:
            options += ["matmul_self"]
        if n == 0:
            options = ["unary", "binary", "broadcast"]
        if dtype != "float32":
            options = [k for k in options if k in INT_KINDS]
        kind = draw(st.sampled_from(options))
        p = {}
        out = cur
        if kind == "unary":
            p["op"] = draw(st.sampled_from(sorted(unary)))
        elif kind == "binary":
            p["op"] = draw(st.sampled_from(sorted(binary)))
            p["swap"] = draw(st.booleans())
            earlier = [i for i, s in enumerate(shapes[:-1]) if _broadcasts_into(s, cur)]
            if earlier and draw(st.booleans()):
                p["value"] = draw(st.sampled_from(earlier))
            else:
                lead = draw(st.integers(0, n))
                partner = tuple(1 if draw(st.booleans()) else d for d in cur[lead:])
                p["input"] = new_input(partner)
        elif kind == "broadcast":
            out = (draw(st.integers(2, 3)),) + tuple(draw(dims) if d == 1 else d for d in cur)
            p["shape"] = out
        elif kind == "transpose":
            p["perm"] = tuple(draw(st.permutations(range(n))))
            out = tuple(cur[i] for i in p["perm"])
        elif kind == "reshape":
            out = draw(st.sampled_from(_divisor_shapes(int(np.prod(cur)))))
            p["shape"] = out
        elif kind == "slice":
            start, limit, strides = [], [], []
            for d in cur:
                lo = draw(st.integers(0, d - 1))
                hi = draw(st.integers(lo + 1, d))
                start.append(lo), limit.append(hi), strides.append(draw(st.integers(1, 2)))
            p.update(start=tuple(start), limit=tuple(limit), strides=tuple(strides))
            out = tuple(-(-(hi - lo) // s) for lo, hi, s in zip(start, limit, strides))
        elif kind == "reduce":
            p["op"] = draw(st.sampled_from(["sum", "max", "mean"] if dtype == "float32" else ["sum", "max"]))
            axes = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
            p["axes"] = tuple(sorted(axes))
            p["keepdims"] = draw(st.booleans())
            out = tuple(1 if i in axes else d for i, d in enumerate(cur)) if p["keepdims"] else \
                tuple(d for i, d in enumerate(cur) if i not in axes)
        elif kind == "matmul":
            if n == 0:
                continue
            k = draw(dims)
            p["input"] = new_input((cur[-1], k))
            out = cur[:-1] + (k,)
        elif kind == "matmul_self":
            out = cur[:-1] + (cur[-2],)
        elif kind == "gather":
            p["axis"] = draw(st.integers(0, n - 1))
            idx_shape = tuple(draw(st.lists(dims, min_size=1, max_size=2)))
            p["input"] = new_input(idx_shape, ("index", cur[p["axis"]]))
            out = cur[:p["axis"]] + idx_shape + cur[p["axis"] + 1:]
        elif kind == "softmax":
            if n == 0:
                continue
        elif kind == "concat_tanh":
            p["axis"] = draw(st.integers(0, n - 1))
            out = tuple(2 * d if i == p["axis"] else d for i, d in enumerate(cur))
        r.steps.append((kind, p))
        shapes.append(tuple(out))
    if len(shapes) > 1 and draw(st.booleans()):
        r.extra_output = draw(st.integers(0, len(shapes) - 2))
    return r


def _broadcasts_into(small, big):
    if len(small) > len(big):
        return False
    return all(s in (1, b) for s, b in zip(small[::-1], big[::-1]))


def _float_argnums(args):
    return tuple(i for i, a in enumerate(args) if np.asarray(a).dtype.kind == "f")


def with_loss_grads(fn, args):
    """A function returning fn's output and value_and_grad over fn's float arguments of the sum over its float
    outputs of sum(out * weights), with fixed random weights (so every output element gets
    its own cotangent)."""
    outs, _ = pytree.flatten(fn(*args))
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(np.shape(o)).astype(np.float32) for o in outs]

    def loss(*xs):
        total = 0.0
        for o, w in zip(pytree.flatten(fn(*xs))[0], weights):
            if o.dtype == "float32":
                total = total + ops.sum(o * w)
        return total

    argnums = _float_argnums(args)

    def both(*xs):
        return fn(*xs), T.value_and_grad(loss, argnums=argnums)(*xs)
    return both
