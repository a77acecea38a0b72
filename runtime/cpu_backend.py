"""The CPU backend: kernels rendered to numba, dot_general through numpy's BLAS."""
import numpy as np

from mlbh.codegen import cpu
from mlbh.tracer import dtypes
from mlbh.tracer.errors import MlbhError

from .blas_threads import limit_blas_threads
from .executable import dot_into


def _array_type(dtype):
    import numba
    return numba.types.Array(numba.from_dtype(dtypes.to_numpy(dtype)), 1, "C")


class CpuBackend:
    name = "cpu"
    xp = np

    def __init__(self):
        limit_blas_threads()

    def compile(self, program, eager=False):
        """Load the numba module; eager=True also compiles every kernel now (otherwise numba
        compiles each on its first call)."""
        source, names = cpu.render_program(program.kernels)
        module = cpu.load_program(source)
        funcs = {k.name: (getattr(module, names[k.name][0]), names[k.name][1]) for k in program.kernels}
        if eager:
            done = set()
            for k in program.kernels:
                fn, params = funcs[k.name]
                signature = tuple(_array_type(program.buffers[p].dtype) for p in params)
                if (names[k.name][0], signature) not in done:
                    done.add((names[k.name][0], signature))
                    fn.compile(signature)
        return {"source": source, "functions": funcs}

    def storage_dtype(self, dtype):
        return dtypes.to_numpy(dtype)

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
