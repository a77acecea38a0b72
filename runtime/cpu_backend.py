"""The CPU backend: kernels rendered to numba, dot_general through numpy's BLAS."""
import numpy as np

from mlbh.codegen import cpu
from mlbh.tracer import dtypes
from mlbh.tracer.errors import MlbhError

from .blas_threads import limit_blas_threads
from .executable import dot_into


class CpuBackend:
    name = "cpu"
    xp = np

    def __init__(self):
        limit_blas_threads()

    def compile(self, program):
        source, names = cpu.render_program(program.kernels)
        module = cpu.load_program(source)
        funcs = {k.name: (getattr(module, names[k.name]), cpu.kernel_params(k)) for k in program.kernels}
        return {"source": source, "functions": funcs}

    def to_device(self, array):
        return np.asarray(array)

    def as_input(self, arg, buffer):
        arr = np.asarray(arg)
        want = dtypes.to_numpy(buffer.dtype)
        if arr.shape != tuple(buffer.shape) or arr.dtype != want:
            raise MlbhError(f"input {buffer.name}: expected {buffer.dtype}{list(buffer.shape)}, "
                            f"got {arr.dtype}{list(arr.shape)}")
        return np.ascontiguousarray(arr).reshape(-1)

    def run_kernel(self, compiled, kernel, bufs):
        fn, params = compiled["functions"][kernel.name]
        fn(*[bufs[p] for p in params])

    def dot(self, out, a, b, dimension_numbers):
        dot_into(np, out, a, b, dimension_numbers)

    def synchronize(self):
        pass
