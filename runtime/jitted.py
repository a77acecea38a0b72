"""jit: trace on first call, cache by abstract signature, compile, run.

    step = jit(train_step, backend="cpu", donate_argnums=(0,))
    step(params, batch)                      # traces, optimizes, fuses, compiles, runs
    step.lower(params, batch).dump("ir/")    # every stage, printable

The signature is the pytree structure plus every leaf's shape and dtype; a new signature
retraces, and the log (logger "mlbh.jit", and .retraces) says which argument changed.
Setting MLBH_DUMP_DIR dumps every compile of every jit function there.
"""
import logging
import os
import time

import numpy as np

from mlbh.codegen import program_cache
from mlbh.codegen.fusion import fuse
from mlbh.codegen.memory import plan_memory
from mlbh.codegen.prepare import prepare
from mlbh.tracer import dtypes, pytree
from mlbh.tracer.errors import ConfigError, TraceError
from mlbh.tracer.interpreter import evaluate
from mlbh.tracer.tracing import spec_of, trace_flat

from .executable import Executable, check_not_donated, describe_step

log = logging.getLogger("mlbh.jit")
BACKENDS = ("cpu", "cuda", "reference")


def default_backend() -> str:
    from mlbh.codegen.cuda_device import cuda_available
    return "cuda" if cuda_available() else "cpu"


def make_backend(name):
    if name == "cpu":
        from .cpu_backend import CpuBackend
        return CpuBackend()
    if name == "cuda":
        from .cuda_backend import CudaBackend
        return CudaBackend()
    raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def _signature(leaves, tree):
    specs = []
    for i, leaf in enumerate(leaves):
        try:
            if isinstance(leaf, np.ndarray):  # most leaves of every call: no Spec built
                specs.append((leaf.shape, dtypes.name_of(leaf.dtype)))
            else:
                spec = spec_of(leaf)
                specs.append((spec.shape, spec.dtype))
        except TraceError as err:  # name the argument (paths are built only here: this runs every call)
            raise type(err)(f"{_leaf_paths(tree)[i]}: {err}") from None
    return tree, tuple(specs)


def _leaf_paths(tree, prefix="args"):
    kind = tree[0]
    if kind == "leaf":
        return [prefix]
    if kind == "none":
        return []
    if kind == "dict":
        return [p for k, c in zip(tree[1], tree[2]) for p in _leaf_paths(c, f"{prefix}[{k!r}]")]
    return [p for i, c in enumerate(tree[1]) for p in _leaf_paths(c, f"{prefix}[{i}]")]


def _program_key(traced, backend):
    """The program cache's key for a traced graph, or None: cache off, reference backend
    (which interprets the traced graph), or a graph the serializer cannot write."""
    if backend == "reference" or not program_cache.enabled():
        return None
    try:
        return program_cache.program_key(traced, backend)
    except TypeError:  # a param of a type the JSON form has no encoding for
        return None


def explain_retrace(old, new) -> str:
    if old[0] != new[0]:
        return "the arguments' pytree structure changed"
    for path, a, b in zip(_leaf_paths(new[0]), old[1], new[1]):
        if a != b:
            return f"{path} changed from {a[1]}{list(a[0])} to {b[1]}{list(b[0])}"
    return "the signature changed"


class Lowered:
    """Every stage of one compile, each printable: traced graph, optimized graph, fusion
    (launch list), kernel IR, memory plan, generated sources."""

    def __init__(self, fn, args, backend, name):
        self.name = name
        self.backend_name = backend
        self.timings = {}
        t0 = time.perf_counter()
        self.traced, _ = trace_flat(fn, args)
        t1 = time.perf_counter()
        key = _program_key(self.traced, backend)
        cached = program_cache.load(key) if key else None
        t2 = time.perf_counter()
        self.program_cache = "off" if key is None else "hit" if cached else "miss"
        if cached:
            self.program, self.memory = cached
            self.program.cache_key = key  # its renderings are cached beside it
            self.optimized = self.program.graph
            self.timings.update(trace=t1 - t0, program_cache=t2 - t1)
            return
        self.optimized = prepare(self.traced)
        t3 = time.perf_counter()
        self.program = fuse(self.optimized, horizontal=backend != "cpu")
        t4 = time.perf_counter()
        self.memory = plan_memory(self.program)
        t5 = time.perf_counter()
        if key:
            program_cache.store(key, (self.program, self.memory))
            self.program.cache_key = key
        self.timings.update(trace=t1 - t0, program_cache=t2 - t1 + time.perf_counter() - t5,
                            optimize=t3 - t2, fuse=t4 - t3, plan=t5 - t4)

    def fusion_text(self) -> str:
        lines = []
        for i, step in enumerate(self.program.steps):
            if hasattr(step, "describe"):
                lines.append(f"[{i}] kernel {step.name}: outer={step.outer} inner={step.inner} "
                             f"levels={step.levels} reads {[b.name for b in step.inputs]} "
                             f"writes {[b.name for b in step.outputs]}")
            else:
                lines.append(f"[{i}] dot {step.out} = dot_general({step.a}{' view' if step.a_view else ''}, "
                             f"{step.b}{' view' if step.b_view else ''}) {step.dimension_numbers}  # {step.source}")
        return "\n".join(lines)

    def kernels_text(self) -> str:
        return "\n\n".join(k.describe() for k in self.program.kernels)

    def cpu_source(self) -> str:
        from mlbh.codegen.cpu import render_program
        return render_program(self.program.kernels)[0]

    def cuda_sources(self) -> dict:
        from mlbh.codegen.cuda import render_kernel
        return {k.name: render_kernel(k).source for k in self.program.kernels}

    def summary(self) -> dict:
        return {"traced_eqns": len(self.traced.eqns), "optimized_eqns": len(self.optimized.eqns),
                "kernels": len(self.program.kernels),
                "library_calls": len(self.program.steps) - len(self.program.kernels),
                "arena_bytes": self.memory.peak, "naive_bytes": self.memory.naive,
                "program_cache": self.program_cache,
                "seconds": {k: round(v, 4) for k, v in self.timings.items()}}

    def dump(self, directory):
        """Write every stage into `directory`."""
        from mlbh.tracer.serialize import save
        os.makedirs(directory, exist_ok=True)

        def write(name, text):
            with open(os.path.join(directory, name), "w") as f:
                f.write(text if text.endswith("\n") else text + "\n")

        write("01_traced.txt", str(self.traced))
        save(self.traced, os.path.join(directory, "01_traced.json"))
        write("02_optimized.txt", str(self.optimized))
        save(self.optimized, os.path.join(directory, "02_optimized.json"))
        write("03_fusion.txt", self.fusion_text())
        write("04_kernels.txt", self.kernels_text())
        offsets = "\n".join(f"{n}: offset {o} bytes, live steps {self.memory.lifetimes.get(n)}"
                            for n, o in sorted(self.memory.offsets.items(), key=lambda kv: kv[1]))
        write("05_memory.txt", self.memory.summary() + "\n" + offsets)
        write("06_cpu_kernels.ll", self.cpu_source() if _cpu_renderable(self.program) else
              "; float16/bfloat16 program: no CPU rendering\n")
        cuda_dir = os.path.join(directory, "cuda")
        os.makedirs(cuda_dir, exist_ok=True)
        for name, source in self.cuda_sources().items():
            with open(os.path.join(cuda_dir, f"{name}.cu"), "w") as f:
                f.write(source)
        return directory

    def compile(self, donate_argnums=(), cuda_graph=False):
        if self.backend_name == "reference":
            return None
        leaves_per_arg = self._leaves_per_arg()
        donate = [i for a in donate_argnums for i in leaves_per_arg[a]]
        t0 = time.perf_counter()
        exe = Executable(self.program, make_backend(self.backend_name), donate, self.name, self.memory)
        if cuda_graph and self.backend_name == "cuda":
            from .cuda_backend import CudaGraphExecutable
            exe = CudaGraphExecutable(exe)
        self.timings["compile"] = time.perf_counter() - t0
        return exe

    def _leaves_per_arg(self):
        tree = self.traced.in_tree  # ("list", (arg trees...))
        result, start = [], 0
        for sub in tree[1]:
            n = pytree.num_leaves(sub)
            result.append(list(range(start, start + n)))
            start += n
        return result


def _cpu_renderable(program):
    return not any(b.dtype in ("float16", "bfloat16") for b in program.buffers.values())


class Jitted:
    def __init__(self, fn, backend=None, donate_argnums=(), cuda_graph=False, warn_on_retrace=True):
        self.fn = fn
        self.warn_on_retrace = warn_on_retrace
        self.backend = backend or default_backend()
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        self.donate_argnums = tuple(donate_argnums)
        self.cuda_graph = cuda_graph
        self.name = getattr(fn, "__name__", "fn")
        self.cache = {}
        self.retraces = []
        self._last_sig = None
        self._profile = None  # executable -> per-step seconds, while profiling

    def start_profile(self):
        """Time every launch-list step of later calls: on the CPU by a clock inside the native
        launch list, on CUDA by synchronizing after each step (slower)."""
        self._profile = {}

    def profile_rows(self):
        """[(mean ms per call, step description)] of the calls since start_profile, slowest first."""
        rows = []
        for exe, (seconds, calls) in (self._profile or {}).items():
            rows += [(1e3 * s / calls[0], describe_step(exe.program, step))
                     for step, s in zip(exe.program.steps, seconds)]
        return sorted(rows, key=lambda r: -r[0])

    def lower(self, *args) -> Lowered:
        return Lowered(self.fn, args, self.backend, self.name)

    def device_put(self, tree):
        """tree with its numpy arrays on this function's device, for arguments passed to many
        calls (a model's parameters): on cuda CuPy arrays, uploaded once here instead of in
        every call; elsewhere tree as it is. bfloat16 arrays stay on the host (CuPy has no
        bfloat16 dtype; each call uploads their bits)."""
        if self.backend != "cuda":
            return tree
        from mlbh.codegen.cuda_device import require_cupy
        cupy, bf16 = require_cupy(), dtypes.to_numpy("bfloat16")
        return pytree.tree_map(lambda x: cupy.asarray(x) if isinstance(x, np.ndarray) and x.dtype != bf16 else x,
                               tree)

    def _compiled(self, args, leaves, tree):
        sig = _signature(leaves, tree)
        entry = self.cache.get(sig)
        if entry is None:
            if self._last_sig is not None:
                reason = explain_retrace(self._last_sig, sig)
                self.retraces.append(reason)
                log.log(logging.WARNING if self.warn_on_retrace else logging.DEBUG,
                        "jit(%s): retracing because %s", self.name, reason)
            lowered = self.lower(*args)
            dump_root = os.environ.get("MLBH_DUMP_DIR")
            if dump_root:
                lowered.dump(os.path.join(dump_root, f"{self.name}_{len(self.cache)}"))
            entry = (lowered, lowered.compile(self.donate_argnums, self.cuda_graph))
            self.cache[sig] = entry
        self._last_sig = sig
        return entry

    def __call__(self, *args):
        leaves, tree = pytree.flatten(list(args))
        check_not_donated(leaves, self.name)
        lowered, exe = self._compiled(args, leaves, tree)
        if exe is None:
            return evaluate(lowered.traced, *args)
        step_seconds = None
        if self._profile is not None:
            step_seconds, calls = self._profile.setdefault(exe, ([0.0] * len(exe.program.steps), [0]))
            calls[0] += 1
        outs = exe([_python_scalar_as_array(x) for x in leaves], step_seconds=step_seconds)
        return pytree.unflatten(lowered.traced.out_tree, outs)


def _python_scalar_as_array(x):
    """A Python scalar argument as the array its trace assumed (2.0 is float32, as in
    spec_of), not numpy's default float64 / int64."""
    if isinstance(x, (int, float, bool)):
        return np.asarray(x, dtype=dtypes.to_numpy(spec_of(x).dtype))
    return x


def jit(fn=None, backend=None, donate_argnums=(), cuda_graph=False, warn_on_retrace=True):
    """Compile fn for a backend ("cpu", "cuda", "reference"; default cuda when a device is
    visible). cuda_graph=True replays each call's launch list as one captured CUDA graph.
    A call with new shapes or dtypes compiles again and logs why, as a warning unless
    warn_on_retrace=False (for callers that vary shapes on purpose)."""
    if fn is None:
        return lambda f: Jitted(f, backend, donate_argnums, cuda_graph, warn_on_retrace)
    return Jitted(fn, backend, donate_argnums, cuda_graph, warn_on_retrace)
