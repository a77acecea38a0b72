"""Compiling a program's numba kernels in worker processes (codegen/cpu_compile.py)."""
import os
import subprocess
import sys

import numpy as np

from mlbh import tracer as T
from mlbh.codegen import cpu_compile
from mlbh.runtime.cpu_backend import CpuBackend
from mlbh.runtime.jitted import jit

from gpt_block import BlockConfig, block_loss, init_batch, init_params
from jit_compare import assert_same_tree


def test_shares_balance_cost_and_keep_every_job():
    jobs = [(f"k{i}", ("float32",)) for i in range(7)]
    sizes = {f"k{i}": s for i, s in enumerate([90, 10, 50, 40, 30, 20, 60])}
    shares = cpu_compile._shares(jobs, sizes, 3)
    assert sorted(j for s in shares for j in s) == sorted(jobs)
    loads = [sum(sizes[n] for n, _ in s) for s in shares]
    assert max(loads) - min(loads) <= 20, loads  # largest first, each to the lightest share


def test_worker_count_follows_the_cap_and_the_work(monkeypatch):
    monkeypatch.setenv("MLBH_COMPILE_WORKERS", "3")
    assert cpu_compile.compile_workers(100) == 3
    assert cpu_compile.compile_workers(2 * cpu_compile.MIN_JOBS_PER_WORKER) == 2
    assert cpu_compile.compile_workers(cpu_compile.MIN_JOBS_PER_WORKER - 1) == 1
    monkeypatch.setenv("MLBH_COMPILE_WORKERS", "1")
    assert cpu_compile.compile_workers(100) == 1


def test_workers_compile_into_the_cache_and_a_warm_start_spawns_none(tmp_path, monkeypatch):
    monkeypatch.setenv("MLBH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MLBH_COMPILE_WORKERS", "2")
    spawned = []
    real_popen = subprocess.Popen

    def counting_popen(*args, **kwargs):
        spawned.append(args[0])
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(cpu_compile.subprocess, "Popen", counting_popen)
    # a shape no other test uses, so its module is compiled here and nowhere else
    cfg = BlockConfig(batch=2, seq=12, width=24, heads=3, vocab=40)
    params, (x, targets) = init_params(cfg), init_batch(cfg)
    vg = T.value_and_grad(lambda p, x, t: block_loss(p, x, t, cfg.heads), argnums=(0, 1))
    step = jit(vg, backend="cpu")
    out = step(params, x, targets)
    assert len(spawned) == 1, "one worker beside this process"
    assert_same_tree(out, jit(vg, backend="reference")(params, x, targets))

    lowered, executable = next(iter(step.cache.values()))
    module_file = [p for p in os.listdir(tmp_path / "cpu") if p.endswith(".py")]
    assert len(module_file) == 1
    marker = tmp_path / "cpu" / (module_file[0] + ".compiled.json")
    functions = {f for f, _ in executable.compiled["functions"].values()}
    assert marker.exists() and len(functions) >= 2 * cpu_compile.MIN_JOBS_PER_WORKER
    assert all(len(f.signatures) == 1 for f in functions), "the runtime calls the compiled signature"

    spawned.clear()
    CpuBackend().compile(lowered.program)
    assert spawned == [], "every kernel is listed as compiled: no worker"


def test_a_failing_worker_only_costs_time(tmp_path, monkeypatch):
    monkeypatch.setenv("MLBH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MLBH_COMPILE_WORKERS", "2")
    real_popen = subprocess.Popen
    monkeypatch.setattr(cpu_compile.subprocess, "Popen",
                        lambda cmd, **kw: real_popen([cmd[0], "-c", "raise SystemExit(3)"], **kw))
    cfg = BlockConfig(batch=2, seq=10, width=20, heads=2, vocab=36)
    params, (x, targets) = init_params(cfg), init_batch(cfg)
    vg = T.value_and_grad(lambda p, x, t: block_loss(p, x, t, cfg.heads), argnums=(0, 1))
    out = jit(vg, backend="cpu")(params, x, targets)
    assert_same_tree(out, jit(vg, backend="reference")(params, x, targets))
    assert np.isfinite(out[0])


def test_the_cached_module_does_not_depend_on_where_the_users_files_are():
    """The header comments name the user's source lines relative to the working directory;
    the module the CPU backend caches leaves them out, so another cwd reuses it."""
    from dataclasses import replace

    from mlbh.codegen import cpu
    cfg = BlockConfig()
    params, (x, targets) = init_params(cfg), init_batch(cfg)
    vg = T.value_and_grad(lambda p, x, t: block_loss(p, x, t, cfg.heads), argnums=(0, 1))
    kernels = jit(vg, backend="cpu").lower(params, x, targets).program.kernels
    moved = [replace(k, sources=[s.replace("gpt_block.py", "elsewhere/gpt_block.py") for s in k.sources])
             for k in kernels]
    assert cpu.render_program(kernels)[0] != cpu.render_program(moved)[0]
    assert cpu.render_program(kernels, headers=False)[0] == cpu.render_program(moved, headers=False)[0]


def _numba_features_in_fresh_process(env):
    code = ("import mlbh.codegen.cpu, numba, llvmlite.binding as ll; "
            "print(numba.config.CPU_FEATURES); print('+avx512f' in ll.get_host_cpu_features().flatten().split(','))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    features, avx512 = out.stdout.split("\n")[:2]
    return features, avx512 == "True"


def test_wide_vectors_where_the_cpu_has_avx512_unless_told_otherwise():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CPU", "MLBH_CPU"))}
    features, avx512 = _numba_features_in_fresh_process(env)
    assert ("-prefer-256-bit" in features) == avx512, features
    features, _ = _numba_features_in_fresh_process(dict(env, MLBH_CPU_VECTOR_BITS="256"))
    assert features == "None"


def test_workers_compile_for_this_process_target(monkeypatch):
    from mlbh.codegen import cpu_target
    monkeypatch.setattr(cpu_target.numba.config, "CPU_NAME", "somecpu")
    monkeypatch.setattr(cpu_target.numba.config, "CPU_FEATURES", "+a,-prefer-256-bit")
    env = cpu_target.worker_environment()
    assert env["NUMBA_CPU_NAME"] == "somecpu" and env["NUMBA_CPU_FEATURES"] == "+a,-prefer-256-bit"
