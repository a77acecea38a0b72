"""Kernel IR -> CUDA C: one translation unit per Kernel, compiled to cubin with NVRTC.

    render_kernel(kernel)          -> CudaKernel (source, params, launch shape)
    render_program(program)        -> [CudaKernel] for every Kernel step
    module_source(kernels)         -> one translation unit holding all of them
    compile_program(program, arch) -> [(CudaKernel, CubinResult)] through the compile cache
    kernel_launch_args(kc, arrays) -> the argument tuple for cupy: fn((grid,), (block,), args,
                                      shared_mem=kc.shared_bytes)

Every kernel's source also compiles standalone with `nvcc -cubin -arch=sm_80 file.cu`.
Kernels that differ only in their buffers (the same layer at another depth) render to one
function: parameters are ordered by first use in the body and renamed p0, p1, ...,
reductions x0, x1, ..., and the function is named k_<hash of its text>, so a module
holds it once (headed by the comments of every kernel it serves) and NVRTC compiles it once.
compile_program compiles a program's kernels as a few modules (one per core), in parallel:
NVRTC's fixed cost (headers, startup) is most of a small kernel's compile, so a module per
kernel would be several times slower, and one module for all would use one core.

The parts: cuda_launch (thread mapping: flat / row / col, grid and block), cuda_access
(which index walks memory contiguously), cuda_kernel (signature, stores, flat loop),
cuda_rows (row and col loops, block-wide reductions), cuda_expr (nodes -> statements, CSE
and hoisting), cuda_types (dtypes, conversions, literals), cuda_prelude (device helpers),
cuda_header (the comment stating what a kernel computes).
"""
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import program_cache
from .compile_cache import cached_compile_cubin, count_remembered, toolchain_fingerprint
from .cuda_expr import Scope
from .cuda_header import header_comment
from .cuda_kernel import KernelWriter, identifier, parameters
from .cuda_launch import launch_shape
from .cuda_prelude import prelude
from .identifiers import by_first_use, canonical
from .cuda_rows import row_loops
from .kernel_ir import Kernel
from .nvrtc import NvrtcCompileError, normalize_arch


@dataclass
class CudaKernel:
    name: str            # the extern "C" symbol: k_<hash of the function>, shared by equal kernels
    source: str          # a complete translation unit
    params: list         # this kernel's buffer names, in pointer-argument order
    grid: int
    block: int
    shared_bytes: int    # dynamic shared memory to launch with (reductions use static shared)
    mapping: str = ""    # "flat" | "row" | "col" (cuda_launch)
    text: str = ""       # the source past the common prelude: header comment and kernel
    kernel: str = ""     # the Kernel's own name (k12_softmax)
    header: str = ""     # the comment stating what this kernel computes
    function: str = ""   # the function alone


def render_kernel(kernel: Kernel) -> CudaKernel:
    shape = launch_shape(kernel)
    writer = KernelWriter(kernel, shape)
    root = Scope(indent="    ")  # the kernel body: values that depend on no loop index land here
    body = root.lines + (writer.flat_loop(root) if shape.mapping == "flat" else row_loops(writer, root))
    order = by_first_use(parameters(kernel), "\n".join(body), lambda p: writer.names[p[0].name])
    function = "\n".join([writer.signature(_PLACEHOLDER, order) + " {"] + body + ["}"])
    function = canonical(function, [writer.names[b.name] for b, _ in order],
                         [identifier(r.name) for r in kernel.reductions], "p",
                         ("rv_", "acc_", "arg_", "red_", "redi_"))
    name = "k_" + hashlib.sha256(function.encode()).hexdigest()[:16]
    function = function.replace(_PLACEHOLDER, name)
    header = header_comment(kernel, shape)
    text = header + "\n" + function + "\n"
    source = f"// mlbh generated CUDA kernel {name} ({kernel.name}); what it computes is stated above it.\n" \
             f"{prelude()}\n{text}"
    return CudaKernel(name, source, [b.name for b, _ in order], shape.grid, shape.block, 0,
                      shape.mapping, text, kernel.name, header, function)


_PLACEHOLDER = "MLBH_KERNEL_NAME"


def module_source(kernels) -> str:
    """One translation unit with every distinct function of `kernels` once, headed by the
    comments of the kernels it serves."""
    functions, headers = {}, {}
    for kc in kernels:
        if functions.setdefault(kc.name, kc.function) != kc.function:
            raise ValueError(f"module_source: two different functions named {kc.name}")
        headers.setdefault(kc.name, []).append(kc.header)
    head = [f"// mlbh generated CUDA module: {len(functions)} functions for {len(kernels)} kernels", prelude()]
    parts = []
    for name, function in functions.items():
        served = headers[name]
        shown = served[:4] + ([f"// ... and {len(served) - 4} more kernels of the same code"] if len(served) > 4 else [])
        parts.append("\n".join(shown + [function]) + "\n")
    return "\n".join(head + parts)


def render_program(program) -> list:
    return program_cache.remembered(program, "cuda", lambda: [render_kernel(k) for k in program.kernels])


MIN_KERNELS_PER_MODULE = 8  # below this, NVRTC's fixed cost per module outweighs a thread


def compile_program(program, arch: str = "sm_80", options: tuple = (), separate: bool = False,
                    modules: int | None = None) -> list:
    """[(CudaKernel, CubinResult)]; result.kernels[kc.name] has its registers and spills.

    The kernels are split into `modules` translation units (default: one per CPU core, at
    least MIN_KERNELS_PER_MODULE kernels each) compiled side by side in threads (NVRTC
    releases the GIL); pairs of one module share its CubinResult (load its cubin once).
    separate=True compiles each kernel's own source instead. The split depends only on
    the kernel list and the module count, so a warm cache hits every module.
    Compile errors raise NvrtcCompileError (its message quotes the offending lines).
    A cached program (one with a cache_key) remembers its module cubins beside it, keyed
    by arch, options and the toolchain's fingerprint: a warm start neither loads NVRTC
    nor looks a module up.
    """
    if separate or modules is not None or program.cache_key is None:
        return _compile_modules(program, arch, options, separate, modules)
    built = []

    def build():
        pairs = _compile_modules(program, arch, options)
        results = list({id(r): r for _, r in pairs}.values())
        index = {id(r): i for i, r in enumerate(results)}
        built.append(True)
        return {"results": results, "owner": [index[id(r)] for _, r in pairs]}

    what = f"cubins {normalize_arch(arch)} {list(options)} {toolchain_fingerprint()}"
    cubins = program_cache.remembered(program, what, build)
    if not built:
        count_remembered(len(cubins["results"]))
    return [(kc, cubins["results"][i]) for kc, i in zip(render_program(program), cubins["owner"])]


def _compile_modules(program, arch, options, separate=False, modules=None) -> list:
    kernels = render_program(program)
    if not kernels:
        return []
    if separate:
        return [(kc, _compile(kc.source, arch, options, f"kernel {kc.kernel}")) for kc in kernels]
    distinct = list({kc.name: kc for kc in kernels}.values())
    if modules is None:
        modules = min(os.cpu_count() or 1, -(-len(distinct) // MIN_KERNELS_PER_MODULE))
    modules = max(1, min(modules, len(distinct)))
    groups = [distinct[i::modules] for i in range(modules)]

    def build(group):
        return _compile(module_source(group), arch, options, f"{len(group)}-function module")

    if len(groups) == 1:
        results = [build(groups[0])]
    else:
        with ThreadPoolExecutor(len(groups)) as pool:
            results = list(pool.map(build, groups))
    owner = {kc.name: result for group, result in zip(groups, results) for kc in group}
    return [(kc, owner[kc.name]) for kc in kernels]


def _compile(source, arch, options, what):
    try:
        return cached_compile_cubin(source, arch, options)
    except NvrtcCompileError as exc:
        raise NvrtcCompileError(f"{what}: {exc}", log=exc.log, arch=exc.arch) from None


def kernel_launch_args(kernel_cuda: CudaKernel, arrays_by_name: dict) -> tuple:
    """The kernel's pointer arguments (device arrays) in parameter order."""
    missing = [n for n in kernel_cuda.params if n not in arrays_by_name]
    if missing:
        raise KeyError(f"kernel {kernel_cuda.name} needs buffers {missing}")
    return tuple(arrays_by_name[n] for n in kernel_cuda.params)
