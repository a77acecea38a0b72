"""Compiling a CPU module's LLVM IR to machine code with llvmlite, cached on disk.

The module is optimized as clang -O3 would (loop and SLP vectorization) for this CPU and
emitted as one object file, which MCJIT loads and links (libm's erff, expm1... resolve
from the process). The target is the host CPU (cpu_target.py: 512-bit vectors on AVX-512).

Object files are cached under <cache dir>/cpu/, keyed by a sha256 of (IR, LLVM version,
CPU name and features), sealed with a checksum as compile_cache seals cubins: a corrupt
entry is deleted and recompiled, never loaded.
"""
import functools
import hashlib
import os
import warnings

from .compile_cache import cache_dir, read_sealed, seal, unseal, write_atomically
from .cpu_target import host_features

MAGIC = b"MLBHCPUOBJ1\n"

_ENGINES = {}  # object key -> (engine, the object bytes it was loaded from): its code lives as long as they do
_PINNED = {}  # the same for the runtime's own modules (worker loops run their code until the process ends)


@functools.lru_cache(maxsize=None)
def _llvm():
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    # A fused kernel reads and writes many arrays; where LLVM cannot prove two apart it
    # checks at run time, and it gives up vectorizing a loop that needs more than 8 checks.
    for option in ("-runtime-memory-check-threshold=4096", "-vectorize-memory-check-threshold=4096"):
        llvm.set_option("mlbh", option)
    return llvm


def _new_machine():
    """LLVM's target machine for this CPU (a fresh one for each MCJIT engine: an engine
    owns its machine and deletes it with itself)."""
    llvm = _llvm()
    return llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=host_features(), opt=3, reloc="default", codemodel="jitdefault")


@functools.lru_cache(maxsize=None)
def _target():
    """(the target machine that compiles, a text naming the target for cache keys)."""
    llvm, machine = _llvm(), _new_machine()
    return machine, f"{llvm.llvm_version_info}\0{machine.triple}\0{llvm.get_host_cpu_name()}\0{host_features()}"


def object_key(source: str) -> str:
    return hashlib.sha256(f"{_target()[1]}\0{source}".encode()).hexdigest()


def compile_object(source: str) -> bytes:
    """Optimize the module's IR and emit machine code (an object file)."""
    llvm, tm = _llvm(), _target()[0]
    module = llvm.parse_assembly(source)
    module.triple = tm.triple
    module.data_layout = str(tm.target_data)
    module.verify()
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = True
    tuning.slp_vectorization = True
    builder = llvm.create_pass_builder(tm, tuning)
    builder.getModulePassManager().run(module, builder)
    return tm.emit_object(module)


def load_module(source: str, function_names, pinned=False) -> dict:
    """{function name: address} of the module's functions, compiled (or loaded from the
    cache) and linked into this process; a pinned module is never unloaded."""
    return load_modules([source], function_names, pinned)


def load_modules(sources, function_names, pinned=False, ahead=()) -> dict:
    """load_module over several modules at once: those neither loaded nor cached compile
    side by side, one in this process and each other in a forked child. ahead: sources of
    modules this process loads later, compiled into the cache alongside when missing."""
    engines = _PINNED if pinned else _ENGINES
    keys = [object_key(source) for source in sources]
    objects = {key: read_sealed(_path(key), lambda data: unseal(MAGIC, data))
               for key in dict.fromkeys(keys) if key not in engines}
    missing = {key: source for key, source in zip(keys, sources) if key in objects and objects[key] is None}
    later = {object_key(source): source for source in ahead}
    missing.update({key: source for key, source in later.items()
                    if key not in _PINNED and key not in _ENGINES and not os.path.exists(_path(key))})
    for key, obj in _compile_side_by_side(missing).items():
        write_atomically(_path(key), seal(MAGIC, obj))
        if key in objects:
            objects[key] = obj
    llvm = _llvm()
    for key, obj in objects.items():
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _new_machine())
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
        engines[key] = (engine, obj)
    found = {}
    for key in keys:
        engine = engines[key][0]
        for name in function_names:
            found[name] = found.get(name) or engine.get_function_address(name)
    return found


def _path(key: str) -> str:
    return os.path.join(cache_dir(), "cpu", key[:2], key + ".o")


def _compile_side_by_side(sources: dict) -> dict:
    """{key: object file} of {key: module source}: the first compiled here, each other in a
    forked child that sends its object back through a pipe (llvmlite serializes every call
    on one lock, so threads would take turns). A child that fails leaves its module to this
    process. Serial where fork is missing."""
    items = list(sources.items())
    children = []  # (key, source, pid, read end)
    if hasattr(os, "fork") and len(items) > 1:
        _target()  # LLVM set up once, before the children copy this process
        for key, source in items[1:]:
            children.append((key, source, *_fork_compile(source)))
        items = items[:1]
    objects = {key: compile_object(source) for key, source in items}
    for key, source, pid, fd in children:
        with os.fdopen(fd, "rb") as pipe:
            obj = pipe.read()
        _, status = os.waitpid(pid, 0)
        objects[key] = obj if status == 0 and obj else compile_object(source)
    return objects


def _fork_compile(source: str):
    """(pid, read end of a pipe) of a child that writes compile_object(source) into the
    pipe and exits without running this process's exit handlers."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # the child runs LLVM alone and exits: no lock of another thread is needed
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(compile_object(source))
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end
