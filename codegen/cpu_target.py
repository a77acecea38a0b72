"""The CPU that mlbh compiles for: the host, with 512-bit vectors where it has AVX-512.

On AVX-512 CPUs LLVM prefers 256-bit vectors (the "prefer-256-bit" tuning, against the
clock throttling of early AVX-512 parts). mlbh's fused kernels run faster with 512-bit
ones: the anchor GPT's micro-step kernels took 25-28 ms against 31-32 ms (alternating
processes, scripts of BENCHMARKS.md). codegen/cpu_jit.py compiles the kernels for
host_features(); the tokenizer's numba code asks numba for the same (use_wide_vectors,
before numba compiles anything: it fixes its target machine then).
MLBH_CPU_VECTOR_BITS=256 keeps LLVM's choice; NUMBA_CPU_NAME or NUMBA_CPU_FEATURES set by
the user are left as they are.
"""
import os


def host_features() -> str:
    """LLVM's feature string for this CPU, without the 256-bit preference on AVX-512."""
    import llvmlite.binding as llvm
    features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" in features.split(",") and os.environ.get("MLBH_CPU_VECTOR_BITS", "512") == "512":
        features += ",-prefer-256-bit"
    return features


def use_wide_vectors() -> bool:
    """Ask numba for host_features(); True if 512-bit vectors are now in effect."""
    import numba
    if numba.config.CPU_FEATURES and "-prefer-256-bit" in numba.config.CPU_FEATURES:
        return True
    if numba.config.CPU_NAME or numba.config.CPU_FEATURES:
        return False
    from numba.core import registry
    if "_toplevel_target_context" in vars(registry.cpu_target):
        return False  # numba has compiled already: its target machine is fixed
    features = host_features()
    if "-prefer-256-bit" not in features:
        return False
    import llvmlite.binding as llvm
    numba.config.CPU_NAME = llvm.get_host_cpu_name()
    numba.config.CPU_FEATURES = features
    return True
