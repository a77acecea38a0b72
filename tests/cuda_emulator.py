"""Runs the generated CUDA kernels on the host (cuda_emulator.h), for tests without a GPU.

EmulatedKernels compiles CudaKernels with the host C++ compiler (the emulator header, the
common prelude once, then each kernel's text) into shared libraries, in background
processes so the caller can do other work meanwhile. EmulatedCudaBackend has the runtime's
backend interface (that of runtime.cpu_backend.CpuBackend), so a fused Program runs through
runtime.executable.Executable as it would on the GPU: same buffers, same launch list,
kernels launched with the renderer's grid and block.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess

from mlbh.codegen import cuda
from mlbh.codegen.cuda_prelude import prelude
from mlbh.runtime.cpu_backend import CpuBackend

HERE = os.path.dirname(os.path.abspath(__file__))
HOST_COMPILER = shutil.which("g++") or shutil.which("clang++")

# void* -> the kernel's I-th parameter type, so the wrappers need no dtype table
_PARAM_TYPE = r"""#include <tuple>
template <int I, typename R, typename... A> auto mlbh_param_t(R (*)(A...)) {
    return (typename std::tuple_element<I, std::tuple<A...>>::type)nullptr;
}
"""


def host_compiler_reason() -> str:
    """'' when kernels can be emulated here, else why not."""
    return "" if HOST_COMPILER else "no host C++ compiler (g++ or clang++) on PATH"


def _launcher(kc) -> str:
    casts = ", ".join(f"(decltype(mlbh_param_t<{i}>(&{kc.name})))a[{i}]" for i in range(len(kc.params)))
    return (f'extern "C" void mlbh_emu_body_{kc.name}(void** a) {{ {kc.name}({casts}); }}\n'
            f'extern "C" int mlbh_emu_run_{kc.name}(void** a, unsigned int grid, unsigned int block) '
            f'{{ return emu::launch(mlbh_emu_body_{kc.name}, a, grid, block); }}\n')


def translation_unit(kernels) -> str:
    """Each distinct function once (kernels of the same code share one), with its launcher."""
    parts = ['#include "cuda_emulator.h"', _PARAM_TYPE, prelude()]
    for kc in {kc.name: kc for kc in kernels}.values():
        parts += [kc.text, _launcher(kc)]
    return "\n".join(parts)


class EmulatedKernels:
    """Host builds of CudaKernels, `jobs` compiler processes."""

    def __init__(self, kernels, workdir, jobs=2):
        self.kernels = list({kc.name: kc for kc in kernels}.values())
        os.makedirs(workdir, exist_ok=True)
        stubs = os.path.join(workdir, "stub_include")
        os.makedirs(stubs, exist_ok=True)
        for name in ("cuda_bf16.h", "cuda_fp16.h"):  # the emulator header defines their types
            open(os.path.join(stubs, name), "w").close()
        self._libs, self._pending, self._where = [], [], {}
        chunks = [self.kernels[i::jobs] for i in range(jobs) if self.kernels[i::jobs]]
        for chunk in chunks:
            source = translation_unit(chunk)
            path = os.path.join(workdir, f"emu_{hashlib.sha256(source.encode()).hexdigest()[:20]}")
            with open(path + ".cpp", "w") as f:
                f.write(source)
            cmd = [HOST_COMPILER, "-std=c++17", "-O0", "-w", "-shared", "-fPIC", f"-I{HERE}", f"-I{stubs}",
                   path + ".cpp", "-o", path + ".so"]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self._pending.append((proc, path + ".so", chunk))

    def wait(self):
        for proc, lib_path, chunk in self._pending:
            _, err = proc.communicate()
            if proc.returncode:
                raise RuntimeError(f"host compile of emulated kernels failed:\n{err[-8000:]}")
            lib = ctypes.CDLL(lib_path)
            for kc in chunk:
                self._where[kc.name] = lib
        self._pending = []
        return self

    def launch(self, kc, bufs):
        self.wait()
        args = cuda.kernel_launch_args(kc, bufs)
        pointers = (ctypes.c_void_p * max(1, len(args)))(*[a.ctypes.data for a in args])
        run = getattr(self._where[kc.name], f"mlbh_emu_run_{kc.name}")
        if run(pointers, ctypes.c_uint(kc.grid), ctypes.c_uint(kc.block)):
            raise RuntimeError(f"kernel {kc.name} deadlocked at a barrier in the emulator")


class EmulatedCudaBackend(CpuBackend):
    """CpuBackend's buffers and dot products; the kernels are the CUDA renderer's, emulated."""
    name = "cuda-emulated"
    launch_list = None  # every kernel goes through run_kernel, the emulated launch

    def __init__(self, library: EmulatedKernels, kernels_by_name: dict):
        super().__init__()
        self.library = library
        self.kernels_by_name = kernels_by_name   # Kernel.name -> CudaKernel

    def compile(self, program):
        missing = [k.name for k in program.kernels if k.name not in self.kernels_by_name]
        if missing:
            raise KeyError(f"kernels not in the emulated library: {missing}")
        return None

    def run_kernel(self, compiled, kernel, bufs):
        self.library.launch(self.kernels_by_name[kernel.name], bufs)
