"""An Executable runs a fused Program: intermediates live in one arena (see
codegen.memory), the launch list runs in order, and donated inputs may be overwritten in
place by outputs of the same shape and dtype (parameters, optimizer state)."""
import time
import weakref
from dataclasses import replace

import numpy as np

from mlbh.codegen.fusion import DotCall
from mlbh.codegen.indexing import ivar
from mlbh.codegen.kernel_ir import Kernel, iter_nodes, stores_in_place
from mlbh.codegen.memory import plan_memory, step_reads
from mlbh.tracer import dtypes
from mlbh.tracer.errors import MlbhError

_DONATED = {}  # id(array) -> weakref of arrays whose contents a call overwrote


def check_not_donated(arrays, fn_name):
    for i, a in enumerate(arrays):
        ref = _DONATED.get(id(a))
        if ref is not None and ref() is a:
            raise MlbhError(f"{fn_name}: argument {i} was donated to an earlier call, which overwrote it; "
                            "pass the array that call returned instead")


def _mark_donated(array):
    key = id(array)
    try:
        _DONATED[key] = weakref.ref(array, lambda _: _DONATED.pop(key, None))
    except TypeError:
        pass


def to_host(x):
    """A numpy array of x, copied from the GPU when it is a device array."""
    return np.asarray(x.get() if hasattr(x, "get") else x)


def dot_into(xp, out, a, b, dimension_numbers):
    """out[...] = dot_general(a, b): batch axes first, then a's free axes, then b's."""
    a3, b3 = matrix_stacks(xp, a, b, dimension_numbers)
    nb, m, n = a3.shape[0], a3.shape[1], b3.shape[2]
    if nb == 1:
        xp.matmul(a3[0], b3[0], out=out.reshape(m, n))
    else:
        xp.matmul(a3, b3, out=out.reshape(nb, m, n))


def stack_axes(a_ndim, b_ndim, dimension_numbers):
    """dot_general's operand axes grouped as matmul stacks read them: a's (batch, free,
    contracted), b's (batch, contracted, free)."""
    (lc, rc), (lb, rb) = dimension_numbers
    af = [d for d in range(a_ndim) if d not in lc and d not in lb]
    bf = [d for d in range(b_ndim) if d not in rc and d not in rb]
    return (list(lb), af, list(lc)), (list(rb), list(rc), bf)


def matrix_stacks(xp, a, b, dimension_numbers):
    """dot_general's operands as matmul stacks (batch, m, k) and (batch, k, n): views where
    the axes merge, else copies."""
    (lb, af, lc), (rb, rc, bf) = stack_axes(a.ndim, b.ndim, dimension_numbers)

    def size(x, axes):
        return int(np.prod([x.shape[d] for d in axes], dtype=np.int64))
    nb, m, k, n = size(a, lb), size(a, af), size(a, lc), size(b, bf)
    return (xp.transpose(a, [*lb, *af, *lc]).reshape(nb, m, k),
            xp.transpose(b, [*rb, *rc, *bf]).reshape(nb, k, n))


def describe_step(program, step):
    """One line naming a launch-list step: a kernel's loop shape or a GEMM's operands."""
    if isinstance(step, Kernel):
        return f"kernel {step.name} outer={step.outer} inner={step.inner} levels={step.levels}"
    shape = "x".join(map(str, program.buffers[step.out].shape))
    return f"gemm   {step.out}[{shape}] = {step.a} . {step.b} {step.dimension_numbers}"


def apply_view(x, chain, materialize=None):
    """x seen through a DotCall's chain of transposes and reshapes. A reshape numpy can only
    make as a copy reshapes materialize(x) instead, when given (a contiguous array)."""
    for op, params in chain:
        if op == "transpose":
            x = x.transpose(params["permutation"])
            continue
        y = x.reshape(params["shape"])
        if materialize is not None and y.size and not np.may_share_memory(x, y):
            y = materialize(x).reshape(params["shape"])
        x = y
    return x


class Executable:
    def __init__(self, program, backend, donate=(), name="fn", memory=None):
        """memory: the program's plan_memory, when the caller has it already."""
        self.program = program
        self.backend = backend
        self.name = name
        self.memory = memory or plan_memory(program)
        self.aliases = self._donation_aliases(set(donate))
        in_place = {out: program.buffers[name] for out, name in self.aliases.items()}
        key = program.cache_key
        if key is not None and self.aliases:  # stores made in place change the kernels and their renderings
            key = f"{key}:in-place {sorted(self.aliases.items())}"
        self.program = program = replace(program, cache_key=key, steps=[
            stores_in_place(s, in_place) if isinstance(s, Kernel) else s for s in program.steps])
        self.compiled = backend.compile(program)
        self.arena = backend.xp.empty(max(self.memory.peak, 1), dtype=np.uint8)
        self.views = {n: self._view(n, off) for n, off in self.memory.offsets.items()}
        self._launch_list = None  # the backend's native launch list, where it has one
        self.constants = {n: backend.to_device(np.ascontiguousarray(v).reshape(-1).view(backend.storage_dtype(
                              dtypes.name_of(v.dtype))))
                          for n, v in program.constants.items()}
        self._plan_outputs()

    def _view(self, name, offset):
        buf = self.program.buffers[name]
        dt = self.backend.storage_dtype(buf.dtype)
        nbytes = buf.size * dt.itemsize
        return self.arena[offset:offset + nbytes].view(dt)

    def _donation_aliases(self, donated_inputs):
        """Output buffer -> donated input buffer it may be written into in place: the output is
        made by an elementwise kernel that reads the input only at the same element, and
        nothing later reads the input."""
        prog = self.program
        aliases, taken = {}, set()
        names = [prog.inputs[i] for i in sorted(donated_inputs) if i < len(prog.inputs)]
        for si, step in enumerate(prog.steps):
            if not isinstance(step, Kernel) or step.inner != 1 or step.reductions or step.serial:
                continue
            for out in step.outputs:
                if out.name not in prog.outputs or out.name in aliases:
                    continue
                for name in names:
                    buf = prog.buffers[name]
                    if (name in taken or buf.shape != out.shape or buf.dtype != out.dtype
                            or name in prog.outputs or step.outer != out.size):
                        continue
                    later = any(name in step_reads(s) for s in prog.steps[si + 1:])
                    if later or not _reads_only_same_element(step, name):
                        continue
                    aliases[out.name] = name
                    taken.add(name)
                    break
        return aliases

    def __call__(self, flat_args, step_seconds=None):
        """Run the program on flat input arrays. step_seconds, a list as long as the launch
        list, gets each step's wall time added (for profiling: a native launch list clocks
        its steps where they run, others are run and synchronized one by one)."""
        prog, xp = self.program, self.backend.xp
        if len(flat_args) != len(prog.inputs):
            raise MlbhError(f"{self.name}: expected {len(prog.inputs)} arrays, got {len(flat_args)}")
        bufs = dict(self.views)
        bufs.update(self.constants)
        for name, arg in zip(prog.inputs, flat_args):
            bufs[name] = self.backend.as_input(arg, prog.buffers[name])
        for name, source in self._outputs_in_place:
            bufs[name] = bufs[source]
        for name, size, dtype in self._outputs_allocated:
            bufs[name] = xp.empty(size, dtype=dtype)
        native = getattr(self.backend, "launch_list", None)
        if native is not None:
            self._launch_list = native(self, bufs, self._launch_list)
            self._launch_list.run(bufs, step_seconds)
        else:
            for i, step in enumerate(prog.steps):
                if step_seconds is not None:
                    self.backend.synchronize()
                    start = time.perf_counter()
                self.run_step(step, bufs)
                if step_seconds is not None:
                    self.backend.synchronize()
                    step_seconds[i] += time.perf_counter() - start
        results = [(bufs[name].copy() if copied else bufs[name]).reshape(shape)
                   for name, shape, copied in self._returns]
        for i in self._donated_positions:
            _mark_donated(flat_args[i])
        return results

    def _plan_outputs(self):
        """What every call does with the outputs, worked out once: (output, the donated
        input it is written into) pairs; (output, size, dtype) of those given a fresh array;
        (output, shape, copied?) of the results, where an input, a constant or an output
        returned twice is copied; and the positions of the inputs written in place."""
        prog = self.program
        inputs = set(prog.inputs)
        present = inputs | set(self.constants) | set(self.views)
        self._outputs_in_place = [(n, self.aliases[n]) for n in prog.outputs if n in self.aliases]
        self._outputs_allocated = []
        for name in dict.fromkeys(prog.outputs):
            if name not in self.aliases and name not in present:
                buf = prog.buffers[name]
                self._outputs_allocated.append((name, buf.size, self.backend.storage_dtype(buf.dtype)))
        self._returns, returned = [], set()
        for name in prog.outputs:
            copied = name in inputs or name in self.constants or name in returned
            self._returns.append((name, prog.buffers[name].shape, copied))
            returned.add(name)
        written = set(self.aliases.values())
        self._donated_positions = [i for i, name in enumerate(prog.inputs) if name in written]

    def run_step(self, step, bufs):
        """One launch-list step: a kernel, or a dot_general through the backend's BLAS."""
        if isinstance(step, Kernel):
            self.backend.run_kernel(self.compiled, step, bufs)
        else:
            out, a, b = self.dot_operands(step, bufs)
            self.backend.dot(out, a, b, step.dimension_numbers, self.program.buffers[step.a].dtype)

    def dot_operands(self, step: DotCall, bufs, materialize=None):
        """(out, a, b) of a dot_general step: its output buffer and its operands' views
        (see apply_view for materialize(operand name, array))."""
        prog = self.program

        def operand(name, chain):
            hook = None if materialize is None else (lambda x: materialize(name, x))
            return apply_view(bufs[name].reshape(prog.buffers[name].shape), chain, hook)
        return bufs[step.out], operand(step.a, step.a_view), operand(step.b, step.b_view)


def _reads_only_same_element(kernel, name):
    """True when every load of buffer `name` in the kernel is at the element being written."""
    same = ivar("o")
    roots = [n for s in kernel.stores for n in (s.value, s.index)]
    return all(n.args[0] == same for n in iter_nodes(*roots) if n.op == "load" and n.attr[0] == name)
