"""mlbh.tracer: the graph IR, tracing, symbolic autodiff, passes and the reference interpreter."""
from . import prims_elementwise, prims_index, prims_reduce, prims_structure, prims_subgraph  # noqa: F401  (register)
from . import ops  # noqa: F401
from .errors import MlbhError, TraceError, ShapeError, DTypeError  # noqa: F401
from .interpreter import evaluate  # noqa: F401
from .ir import Eqn, Graph, Var  # noqa: F401
from .tracing import Spec, Tracer, _install_operators, name_scope, trace  # noqa: F401
from .transforms import checkpoint, custom_vjp, grad, jvp, value_and_grad, vjp  # noqa: F401

_install_operators()
from .passes import cse, dce, fold, optimize, simplify  # noqa: F401,E402
from .serialize import load, save  # noqa: F401,E402
