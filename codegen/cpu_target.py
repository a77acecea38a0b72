"""The CPU that numba compiles for.

On AVX-512 CPUs LLVM prefers 256-bit vectors (the "prefer-256-bit" tuning, against the
clock throttling of early AVX-512 parts). mlbh's fused kernels run faster with 512-bit
ones: the anchor GPT's micro-step kernels took 25-28 ms against 31-32 ms (alternating
processes, scripts of BENCHMARKS.md). numba fixes its target machine when it compiles its
first function, so this must run before that: codegen.cpu and the tokenizer's numba code
call it on import. MLBH_CPU_VECTOR_BITS=256 keeps LLVM's choice; NUMBA_CPU_NAME or
NUMBA_CPU_FEATURES set by the user are left as they are.
"""
import os

import numba


def use_wide_vectors() -> bool:
    """Ask numba for 512-bit vectors where the CPU has AVX-512; True if now in effect."""
    if numba.config.CPU_FEATURES and "-prefer-256-bit" in numba.config.CPU_FEATURES:
        return True
    if (os.environ.get("MLBH_CPU_VECTOR_BITS", "512") != "512" or numba.config.CPU_NAME
            or numba.config.CPU_FEATURES):
        return False
    from numba.core import registry
    if "_toplevel_target_context" in vars(registry.cpu_target):
        return False  # numba has compiled already: its target machine is fixed
    import llvmlite.binding as llvm
    features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" not in features.split(","):
        return False
    numba.config.CPU_NAME = llvm.get_host_cpu_name()
    numba.config.CPU_FEATURES = features + ",-prefer-256-bit"
    return True


def worker_environment() -> dict:
    """os.environ plus this process's numba target, for processes whose compiled code this
    one loads from numba's cache (the cache is keyed by the target)."""
    env = dict(os.environ)
    if numba.config.CPU_NAME:
        env["NUMBA_CPU_NAME"] = numba.config.CPU_NAME
    if numba.config.CPU_FEATURES:
        env["NUMBA_CPU_FEATURES"] = numba.config.CPU_FEATURES
    return env
