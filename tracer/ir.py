"""The graph IR: A-normal form over static shapes.

A Graph has input Vars, a list of Eqns (each applying one primitive to Vars and
defining new Vars) and output Vars. Eqns are in a valid order (every input defined
before use). Graphs and Eqns are treated as immutable: passes build new ones.
"""
import itertools
from dataclasses import dataclass, field

from . import dtypes

_ids = itertools.count()


class Var:
    """One value: a static shape and a dtype name. Identity is the object itself."""

    __slots__ = ("shape", "dtype", "id")

    def __init__(self, shape, dtype):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtypes.name_of(dtype)
        self.id = next(_ids)

    def __getstate__(self):
        return self.shape, self.dtype

    def __setstate__(self, state):  # an unpickled value gets a fresh id in this process
        self.shape, self.dtype = state
        self.id = next(_ids)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * dtypes.ITEMSIZE[self.dtype]

    @property
    def aval(self) -> str:
        return f"{dtypes.SHORT[self.dtype]}[{','.join(map(str, self.shape))}]"

    def __repr__(self):
        return f"Var#{self.id}:{self.aval}"


@dataclass(frozen=True, eq=False)
class Eqn:
    prim: str
    inputs: tuple
    outputs: tuple
    params: dict
    source: str | None = None
    scope: str = ""

    def replace(self, **changes) -> "Eqn":
        fields = dict(prim=self.prim, inputs=self.inputs, outputs=self.outputs,
                      params=self.params, source=self.source, scope=self.scope)
        fields.update(changes)
        return Eqn(**fields)


@dataclass(eq=False)
class Graph:
    inputs: list
    eqns: list
    outputs: list
    in_tree: tuple | None = None   # pytree structure of the inputs (see pytree.py)
    out_tree: tuple | None = None
    provenance: list = field(default_factory=list)

    def __str__(self):
        from .printer import format_graph
        return format_graph(self)

    def with_eqns(self, eqns, outputs=None, record=None) -> "Graph":
        prov = list(self.provenance) + ([record] if record else [])
        return Graph(list(self.inputs), list(eqns),
                     list(self.outputs if outputs is None else outputs),
                     self.in_tree, self.out_tree, prov)

    def producers(self) -> dict:
        """Var -> the Eqn that defines it."""
        return {v: e for e in self.eqns for v in e.outputs}

    def consumers(self) -> dict:
        """Var -> list of Eqns reading it."""
        out = {}
        for e in self.eqns:
            for v in e.inputs:
                out.setdefault(v, []).append(e)
        return out

    def op_counts(self) -> dict:
        counts = {}
        for e in self.eqns:
            counts[e.prim] = counts.get(e.prim, 0) + 1
        return counts


def subgraphs_of(eqn: Eqn):
    """Graphs held in an eqn's params (custom_vjp, checkpoint)."""
    return [v for v in eqn.params.values() if isinstance(v, Graph)]
