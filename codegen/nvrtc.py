"""Compile CUDA C to a cubin with NVRTC, without needing a GPU.

NVRTC is reached through CuPy's thin Cython bindings
(`cupy_backends.cuda.libs.nvrtc`), which load libnvrtc but never touch the driver,
so this works on a machine with no device. ptxas runs inside NVRTC with `-v`; its
report gives per-kernel registers, spills and static shared memory.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field

from mlbh.tracer.errors import CompileError

# Always passed; callers' options come after these so they can add to them.
BASE_OPTIONS = ("-std=c++17", "-default-device")
PTXAS_VERBOSE = "--ptxas-options=-v"

_ARCH_PATTERN = re.compile(r"^(?:sm_)?(\d{2,3})([af]?)$")
_HEADER_PROBE = "cuda_bf16.h"


@dataclass(frozen=True)
class CubinResult:
    """A compiled cubin plus what NVRTC/ptxas said about it."""

    cubin: bytes
    log: str
    # kernel name (as ptxas prints it: mangled unless extern "C") -> resource usage:
    # {"registers", "spill_stores", "spill_loads", "shared", "stack_frame"}; bytes except registers.
    kernels: dict = field(default_factory=dict)


class NvrtcCompileError(CompileError):
    """NVRTC refused the source; `.log` holds its full log, `.arch` the target."""

    def __init__(self, message, log="", arch=""):
        self.log = log
        self.arch = arch
        super().__init__(message)


class Availability:
    """Truthy when cubins can be built here; `.reason` says why not otherwise."""

    def __init__(self, ok: bool, reason: str = ""):
        self.ok = ok
        self.reason = reason

    def __bool__(self):
        return self.ok

    def __repr__(self):
        return f"Availability(ok={self.ok}, reason={self.reason!r})"


# --------------------------------------------------------------------------- bindings

@functools.lru_cache(maxsize=None)
def _load_bindings():
    """(module, None) or (None, reason). Importing loads libnvrtc, which may fail."""
    try:
        from cupy_backends.cuda.libs import nvrtc as bindings
        bindings.getVersion()
    except Exception as exc:  # ImportError, OSError from dlopen, CUDA errors...
        return None, f"NVRTC bindings unavailable ({type(exc).__name__}: {exc})"
    return bindings, None


def _bindings():
    bindings, reason = _load_bindings()
    if bindings is None:
        raise CompileError(reason)
    return bindings


def nvrtc_version() -> tuple:
    """(major, minor) of the libnvrtc that CuPy loaded."""
    return tuple(_bindings().getVersion())


def supported_archs() -> tuple:
    """Compute capabilities this NVRTC can target, as ints (80, 90, ...)."""
    return tuple(int(a) for a in _bindings().getSupportedArchs())


# ----------------------------------------------------------------------- CUDA headers

def _runtime_version_of(include_dir: str):
    """CUDART_VERSION major of the headers in include_dir, or None if unreadable."""
    try:
        with open(os.path.join(include_dir, "cuda_runtime_api.h"), encoding="utf-8",
                  errors="replace") as header:
            match = re.search(r"#define\s+CUDART_VERSION\s+(\d+)", header.read())
    except OSError:
        return None
    return int(match.group(1)) // 1000 if match else None


def _candidate_include_dirs():
    """Places the CUDA headers may live, in order of preference."""
    candidates = []
    try:
        import nvidia  # namespace package from the nvidia-* pip wheels
        for root in nvidia.__path__:
            # CUDA 12 wheels: nvidia/cuda_runtime/include; CUDA 13+: nvidia/cu13/include.
            candidates.append(os.path.join(root, "cuda_runtime", "include"))
            if os.path.isdir(root):
                for name in sorted(os.listdir(root), reverse=True):
                    if re.fullmatch(r"cu\d+", name):
                        candidates.append(os.path.join(root, name, "include"))
    except ImportError:
        pass
    for var in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "include"))
    candidates.append("/usr/local/cuda/include")
    try:
        from cuda.pathfinder import find_nvidia_header_directory  # ships with CuPy 14
        found = find_nvidia_header_directory("cudart")
        if found:
            candidates.append(found)
    except Exception:
        pass
    return candidates


@functools.lru_cache(maxsize=None)
def cuda_include_dir():
    """The CUDA include dir to pass to NVRTC, or None if no headers are found.

    Among the dirs that hold cuda_bf16.h, one whose CUDA major version matches
    NVRTC's is preferred: mixing a 12.x NVRTC with 13.x headers may not compile.
    """
    with_headers = []
    for candidate in _candidate_include_dirs():
        path = os.path.realpath(candidate)
        if os.path.isfile(os.path.join(path, _HEADER_PROBE)) and path not in with_headers:
            with_headers.append(path)
    if not with_headers:
        return None
    bindings, _ = _load_bindings()
    if bindings is not None:
        nvrtc_major = bindings.getVersion()[0]
        for path in with_headers:
            if _runtime_version_of(path) == nvrtc_major:
                return path
    return with_headers[0]


def cubin_supported() -> Availability:
    """Whether compile_cubin can work here (bindings load and headers are found)."""
    bindings, reason = _load_bindings()
    if bindings is None:
        return Availability(False, reason)
    if cuda_include_dir() is None:
        return Availability(False, "CUDA headers (cuda_bf16.h) not found: install "
                                   "nvidia-cuda-runtime-cu12 or set CUDA_PATH")
    return Availability(True)


# ---------------------------------------------------------------------------- compile

def normalize_arch(arch) -> str:
    """'sm_90', '90', 90 or 'sm_90a' -> 'sm_90' / 'sm_90a'."""
    match = _ARCH_PATTERN.match(str(arch).strip())
    if not match:
        raise CompileError(f"not a CUDA architecture: {arch!r} (expected e.g. 'sm_80')")
    return f"sm_{match.group(1)}{match.group(2)}"


def _check_arch_supported(arch: str):
    number = int(_ARCH_PATTERN.match(arch).group(1))
    archs = supported_archs()
    if number not in archs:
        raise CompileError(f"NVRTC {'.'.join(map(str, nvrtc_version()))} cannot target "
                           f"{arch}; it supports sm_{', sm_'.join(map(str, archs))}")


def compile_options(arch: str, options=()) -> tuple:
    """The full NVRTC option list for one compile."""
    full = [f"--gpu-architecture={arch}", *BASE_OPTIONS, PTXAS_VERBOSE]
    include_dir = cuda_include_dir()
    if include_dir:
        full.append(f"--include-path={include_dir}")
        # CUDA 13 moved CCCL's headers (nv/target, which cuda_bf16.h includes) under include/cccl
        if os.path.isdir(os.path.join(include_dir, "cccl")):
            full.append(f"--include-path={os.path.join(include_dir, 'cccl')}")
    full.extend(options)
    return tuple(full)


def compile_cubin(source: str, arch: str = "sm_80", options: tuple = (),
                  name: str = "kernel.cu") -> CubinResult:
    """Compile CUDA C source to a cubin for `arch`; raises CompileError on failure."""
    bindings = _bindings()
    arch = normalize_arch(arch)
    _check_arch_supported(arch)
    full_options = compile_options(arch, tuple(options))
    program = bindings.createProgram(source, name, (), ())
    try:
        try:
            bindings.compileProgram(program, full_options)
        except bindings.NVRTCError as exc:
            log = _clean_log(bindings.getProgramLog(program))
            raise NvrtcCompileError(
                describe_failure(source, name, arch, full_options, log, str(exc)),
                log=log, arch=arch) from None
        log = _clean_log(bindings.getProgramLog(program))
        cubin = bytes(bindings.getCUBIN(program))
    finally:
        bindings.destroyProgram(program)
    return CubinResult(cubin=cubin, log=log, kernels=parse_ptxas_usage(log))


def _clean_log(log) -> str:
    if isinstance(log, bytes):
        log = log.decode("utf-8", errors="replace")
    return log.replace("\x00", "").strip()


# --------------------------------------------------------------------- error messages

_MAX_QUOTED_ERRORS = 8


def describe_failure(source, name, arch, options, log, status) -> str:
    """Error message: the NVRTC log, then the source lines it complains about."""
    parts = [f"NVRTC failed to compile {name} for {arch} ({status})",
             f"options: {' '.join(options)}", "log:", log or "(empty)"]
    quoted = quote_error_lines(source, name, log)
    if quoted:
        parts += ["source:", quoted]
    return "\n".join(parts)


def quote_error_lines(source: str, name: str, log: str, context: int = 1) -> str:
    """Source lines that `log` blames (with `context` lines around), numbered."""
    lines = source.splitlines()
    pattern = re.compile(rf"^{re.escape(name)}\((\d+)\): (?:catastrophic )?error", re.M)
    blamed = []
    for match in pattern.finditer(log):
        number = int(match.group(1))
        if number not in blamed:
            blamed.append(number)
    blamed = blamed[:_MAX_QUOTED_ERRORS]
    shown = sorted({n for b in blamed for n in range(b - context, b + context + 1)
                    if 1 <= n <= len(lines)})
    width = len(str(shown[-1])) if shown else 1
    out, previous = [], None
    for number in shown:
        if previous is not None and number != previous + 1:
            out.append("  " + "." * width)
        marker = ">" if number in blamed else " "
        out.append(f"{marker} {number:>{width}} | {lines[number - 1]}")
        previous = number
    return "\n".join(out)


# ------------------------------------------------------------------ ptxas -v parsing

_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_PROPERTIES = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_usage(log: str) -> dict:
    """Per-kernel resource usage from ptxas -v output.

    Entries are announced by "Compiling entry function"; the "Used N registers" line
    that follows belongs to that entry. Stack/spill figures come in a "Function
    properties for X" block, which ptxas also prints for non-inlined device
    functions; only those naming an entry are kept.
    """
    kernels, frames = {}, {}
    entry = properties_of = None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            entry = m.group(1)
            kernels[entry] = {"registers": 0, "spill_stores": 0, "spill_loads": 0,
                              "shared": 0, "stack_frame": 0}
        elif m := _PROPERTIES.search(line):
            properties_of = m.group(1)
        elif (m := _FRAME.search(line)) and properties_of is not None:
            frames[properties_of] = tuple(int(g) for g in m.groups())
        elif (m := _USED.search(line)) and entry is not None:
            kernels[entry]["registers"] = int(m.group(1))
            if s := _SMEM.search(line):
                kernels[entry]["shared"] = int(s.group(1))
    for kernel, usage in kernels.items():
        if kernel in frames:
            usage["stack_frame"], usage["spill_stores"], usage["spill_loads"] = frames[kernel]
    return kernels
