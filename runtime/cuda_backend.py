"""The CUDA backend: generated kernels compiled by NVRTC into one module per program,
dot_general through cuBLAS (cupy.matmul), buffers in one device arena.

CuPy has no bfloat16 dtype, so bfloat16 buffers are stored as uint16 bit patterns on the
device (kernels see raw pointers and do not care); a bfloat16 GEMM calls cuBLAS's bf16
GEMM with fp32 accumulation on those bits directly (cublas_gemm).

CudaGraphExecutable captures a call's whole launch list into a CUDA graph once and then
replays it: inputs are copied into fixed device buffers first, so every replay sees the
same addresses.
"""
import numpy as np

from mlbh.codegen.cuda import compile_program
from mlbh.codegen.cuda_device import device_arch, get_function, load_module
from mlbh.tracer import dtypes
from mlbh.tracer.errors import MlbhError

from .cublas_gemm import gemm_bf16
from .executable import Executable, dot_into, matrix_stacks


class CudaBackend:
    name = "cuda"

    def __init__(self):
        import cupy
        self.xp = cupy
        self.arch = device_arch()

    def compile(self, program):
        pairs = compile_program(program, self.arch)
        modules, functions = {}, {}
        for kc, result in pairs:
            key = id(result)
            if key not in modules:
                modules[key] = load_module(result.cubin)
            if kc.name not in functions:  # kernels of the same code share one function
                functions[kc.name] = get_function(modules[key], kc.name)
        by_kernel = {k.name: (functions[kc.name], kc) for k, (kc, _) in zip(program.kernels, pairs)}
        return {"functions": by_kernel, "modules": list(modules.values())}

    def storage_dtype(self, dtype):
        return np.dtype(np.uint16) if dtype == "bfloat16" else dtypes.to_numpy(dtype)

    def to_device(self, array):
        return self.xp.asarray(array)

    def as_input(self, arg, buffer):
        if isinstance(arg, np.ndarray) and buffer.dtype == "bfloat16" and arg.dtype == dtypes.to_numpy("bfloat16"):
            arg = arg.view(np.uint16)
        arr = self.xp.asarray(arg)
        want = self.storage_dtype(buffer.dtype)
        if arr.shape != tuple(buffer.shape) or arr.dtype != want:
            raise MlbhError(f"input {buffer.name}: expected {buffer.dtype}{list(buffer.shape)}, "
                            f"got {arr.dtype}{list(arr.shape)}")
        return self.xp.ascontiguousarray(arr).reshape(-1)

    def run_kernel(self, compiled, kernel, bufs):
        fn, kc = compiled["functions"][kernel.name]
        fn((kc.grid,), (kc.block,), tuple(bufs[p] for p in kc.params), shared_mem=kc.shared_bytes)

    def dot(self, out, a, b, dimension_numbers, dtype):
        """dtype: the operands' dtype in the program; bfloat16's uint16 bits go to cuBLAS's
        bf16 GEMM, genuine uint16 ones to cupy.matmul like every other dtype."""
        if dtype == "bfloat16":
            gemm_bf16(self.xp, out, *matrix_stacks(self.xp, a, b, dimension_numbers))
        else:
            dot_into(self.xp, out, a, b, dimension_numbers)

    def synchronize(self):
        self.xp.cuda.get_current_stream().synchronize()


class CudaGraphExecutable:
    """Replays one captured CUDA graph per call. Returned outputs are fresh copies.

    Everything runs on one private stream: the inputs are copied into fixed buffers, a
    warm-up call loads the modules and cuBLAS's workspace, then a second call is captured.
    Memory allocated while capturing (outputs, GEMM temporaries) comes from a pool kept
    with the graph, so no later allocation can take an address a replay writes to. A
    donated input is updated in place by the warm-up, so the inputs are copied in again
    before every replay, the first included."""

    def __init__(self, executable: Executable):
        import cupy
        self.exe = executable
        self.program = executable.program
        self.cupy = cupy
        prog = executable.program
        storage = executable.backend.storage_dtype  # bfloat16 lives as uint16 bits: CuPy has no bfloat16
        self.inputs = [cupy.empty(prog.buffers[n].shape, dtype=storage(prog.buffers[n].dtype)) for n in prog.inputs]
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()
        self.graph = None
        self.outputs = None

    def _load_inputs(self, flat_args):
        backend = self.exe.backend
        for dst, src, name in zip(self.inputs, flat_args, self.program.inputs):
            dst[...] = backend.as_input(src, self.program.buffers[name]).reshape(dst.shape)

    def __call__(self, flat_args, step_seconds=None):
        if step_seconds is not None:  # profiling times each launch, so it runs them one by one
            return self.exe(flat_args, step_seconds=step_seconds)
        cupy = self.cupy
        # the caller's arrays were written on its stream: this one waits for them
        self.stream.wait_event(cupy.cuda.get_current_stream().record())
        with self.stream:
            if self.graph is None:
                with cupy.cuda.using_allocator(self.pool.malloc):
                    self._load_inputs(flat_args)
                    self.exe(self.inputs)
                    self.stream.begin_capture()
                    self.outputs = self.exe(self.inputs)
                    self.graph = self.stream.end_capture()
            self._load_inputs(flat_args)
            self.graph.launch()
            results = [o.copy() for o in self.outputs]
        self.stream.synchronize()
        return results
