"""The CPU backend: kernels rendered to numba, dot_general through numpy's BLAS."""
import numpy as np

from mlbh.codegen import cpu, program_cache
from mlbh.codegen.cpu_compile import compile_kernels
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
        """Load the numba module and compile every kernel (on several cores when many are
        not in numba's cache yet: codegen/cpu_compile.py)."""
        source, names = program_cache.remembered(program, "cpu",
                                                 lambda: cpu.render_program(program.kernels, headers=False))
        module = cpu.load_program(source)
        funcs = {k.name: (getattr(module, names[k.name][0]), names[k.name][1]) for k in program.kernels}
        jobs = [(fname, tuple(program.buffers[p].dtype for p in params)) for fname, params in names.values()]
        sizes = {fname: len(getattr(module, fname).py_func.__code__.co_code) for fname, _ in jobs}
        compile_kernels(module, jobs, sizes)
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
