"""Compile a model's train step and optimizer update without training, and report every
stage: graph sizes, kernels, memory, compile times, cache hits (`mlbh compile gpt2`)."""
import time

from mlbh.tracer.tracing import Spec

from .jitted import jit
from .optim import AdamWConfig, make_update
from .train_step import make_micro_step


def compile_model(model, micro_batch=8, seq_len=1024, backend="cuda", dump_dir=None, arch="sm_90", log=print):
    """model: any object with param_shapes() and loss(...) (e.g. models.gpt2.GPT2)."""
    shapes = model.param_shapes()
    params = {k: Spec(s, "float32") for k, s in shapes.items()}
    tokens = Spec((micro_batch, seq_len), "int32")
    report = {"model": model.describe(), "params": sum(_size(s) for s in shapes.values()), "backend": backend,
              "micro_batch": micro_batch, "seq_len": seq_len, "functions": {}}
    functions = {
        "micro_step": (jit(make_micro_step(model), backend=backend), (params, params, tokens, tokens)),
        "adamw_update": (jit(make_update(AdamWConfig()), backend=backend),
                         (params, params, params, params, Spec((3,), "float32"))),
    }
    for name, (fn, args) in functions.items():
        t0 = time.perf_counter()
        lowered = fn.lower(*args)
        entry = lowered.summary()
        entry["seconds"]["lower_total"] = round(time.perf_counter() - t0, 3)
        entry["seconds"].update(_compile_kernels(lowered, backend, arch))
        if dump_dir:
            lowered.dump(f"{dump_dir}/{name}")
        report["functions"][name] = entry
        log(_format_entry(name, entry))
    return report


def _size(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def _compile_kernels(lowered, backend, arch):
    """Generate and compile every kernel (NVRTC cubin for cuda, LLVM object code for cpu); no GPU needed."""
    t0 = time.perf_counter()
    if backend == "cuda":
        from mlbh.codegen.compile_cache import cache_stats
        from mlbh.codegen.cuda import compile_program
        before = dict(cache_stats())
        pairs = compile_program(lowered.program, arch)
        after = cache_stats()
        regs = [r.kernels.get(kc.name, {}).get("registers", 0) for kc, r in pairs]
        spills = sum(r.kernels.get(kc.name, {}).get("spill_stores", 0) for kc, r in pairs)
        return {"codegen_compile": round(time.perf_counter() - t0, 3), "cache_hits":
                after["hits"] - before["hits"], "cache_misses": after["misses"] - before["misses"],
                "max_registers": max(regs, default=0), "spill_bytes": spills}
    if backend == "cpu":
        from .cpu_backend import CpuBackend
        CpuBackend().compile(lowered.program)
        return {"codegen_compile": round(time.perf_counter() - t0, 3)}
    return {}


def _format_entry(name, e):
    s = e["seconds"]
    lines = [f"{name}: {e['traced_eqns']} traced eqns -> {e['optimized_eqns']} after passes -> "
             f"{e['kernels']} kernels + {e['library_calls']} GEMM calls",
             f"  arena {e['arena_bytes'] / 2**20:.1f} MiB (naive {e['naive_bytes'] / 2**20:.1f} MiB); "
             f"program cache {e['program_cache']}",
             "  seconds: " + ", ".join(f"{k} {v}" for k, v in s.items() if isinstance(v, float))]
    extra = {k: v for k, v in s.items() if not isinstance(v, float)}
    if extra:
        lines.append("  " + ", ".join(f"{k} {v}" for k, v in extra.items()))
    return "\n".join(lines)
