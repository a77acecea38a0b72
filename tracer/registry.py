"""The primitive registry: one entry per primitive.

An entry holds everything mlbh knows about a primitive:
  shape(*avals, **params) -> [(shape, dtype), ...]   avals have .shape and .dtype
  impl(*arrays, **params) -> array or tuple           numpy; low-precision floats arrive as float32
  vjp(cts, ins, outs, **params) -> [ct or None, ...]  written with primitives (via ops), so
                                                      the set is closed under differentiation
  emit: renderers keyed by target ("expr" for the kernel IR), added by codegen.
"""
from dataclasses import dataclass, field


@dataclass
class Primitive:
    name: str
    shape: callable
    impl: callable
    vjp: callable = None
    kind: str = "other"  # elementwise | reduction | movement | dot | index | other
    emit: dict = field(default_factory=dict)

    def __repr__(self):
        return f"Primitive({self.name})"


REGISTRY: dict = {}


def register(name, *, shape, impl, vjp=None, kind="other") -> Primitive:
    if name in REGISTRY:
        raise ValueError(f"primitive {name!r} registered twice")
    prim = Primitive(name, shape, impl, vjp, kind)
    REGISTRY[name] = prim
    return prim


def get(name) -> Primitive:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown primitive {name!r}") from None
