"""Compiling the CPU backend's LLVM IR (codegen/cpu_jit.py): the object cache, and the target."""
import glob
import os
import subprocess
import sys

import numpy as np

from mlbh import tracer as T
from mlbh.codegen import cpu, cpu_jit
from mlbh.runtime.jitted import jit

from gpt_block import BlockConfig, block_loss, init_batch, init_params
from jit_compare import assert_same_tree


def _block_step(cfg):
    params, (x, targets) = init_params(cfg), init_batch(cfg)
    vg = T.value_and_grad(lambda p, x, t: block_loss(p, x, t, cfg.heads), argnums=(0, 1))
    return vg, (params, x, targets)


def _module_sources(jitted):
    """The LLVM modules of the one program jitted has compiled."""
    [(_, exe)] = jitted.cache.values()
    return exe.compiled["sources"]


def _module_paths(jitted, cache):
    """Their object files in the cache."""
    keys = [cpu_jit.object_key(source) for source in _module_sources(jitted)]
    return [cache / "cpu" / key[:2] / (key + ".o") for key in keys]


def test_a_warm_start_loads_the_object_file_and_compiles_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MLBH_CACHE_DIR", str(tmp_path))
    # a shape no other test uses, so its module is compiled here and nowhere else
    vg, args = _block_step(BlockConfig(batch=2, seq=12, width=24, heads=3, vocab=40))
    want = jit(vg, backend="reference")(*args)
    step = jit(vg, backend="cpu")
    assert_same_tree(step(*args), want)
    entry = _module_paths(step, tmp_path)[0]

    cpu_jit._ENGINES.clear()  # as a new process would start
    compiled = []
    real = cpu_jit.compile_object
    monkeypatch.setattr(cpu_jit, "compile_object", lambda source: compiled.append(1) or real(source))
    assert_same_tree(jit(vg, backend="cpu")(*args), want)
    assert compiled == [], "loaded from the cache"

    with open(entry, "r+b") as f:  # flip a byte of the machine code
        f.seek(-100, os.SEEK_END)
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    cpu_jit._ENGINES.clear()
    assert_same_tree(jit(vg, backend="cpu")(*args), want)
    assert compiled == [1], "a corrupt entry is compiled again, never loaded"


def _split_three_ways(monkeypatch, tmp_path):
    """A fresh cache, and the CPU backend on 3 cores with modules split from 2,000 chars.
    Returns the list of the sources this process compiles."""
    from mlbh.runtime import cpu_backend
    monkeypatch.setenv("MLBH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu, "MIN_MODULE_CHARS", 2_000)
    monkeypatch.setattr(cpu_backend, "available_cores", lambda: 3)
    parent, real, compiled_here = os.getpid(), cpu_jit.compile_object, []

    def compile_object(source):
        if os.getpid() == parent:
            compiled_here.append(source)
        return real(source)

    monkeypatch.setattr(cpu_jit, "compile_object", compile_object)
    return compiled_here


def test_a_big_program_compiles_as_modules_side_by_side(tmp_path, monkeypatch):
    compiled_here = _split_three_ways(monkeypatch, tmp_path)
    vg, args = _block_step(BlockConfig(batch=2, seq=10, width=20, heads=2, vocab=30))
    kernels = jit(vg, backend="cpu").lower(*args).program.kernels
    sources, _ = cpu.render_modules(kernels, 3)
    defined = [line.split("(")[0] for source in sources for line in source.splitlines()
               if line.startswith("define void @k_")]
    whole = [line.split("(")[0] for line in cpu.render_program(kernels)[0].splitlines()
             if line.startswith("define void @k_")]
    assert len(sources) == 3 and sorted(defined) == sorted(whole), "each function in exactly one module"

    step = jit(vg, backend="cpu")
    assert_same_tree(step(*args), jit(vg, backend="reference")(*args))
    sources = _module_sources(step)
    assert len(sources) == 3 and all(path.exists() for path in _module_paths(step, tmp_path))
    assert sum(source in compiled_here for source in sources) == 1, \
        "two of the three modules were compiled by forked children"


def test_the_runtime_modules_compile_with_the_kernels_not_after_them(tmp_path, monkeypatch):
    """A cold compile also puts the modules the first call loads (the launch list's runner,
    the GEMMs, the workers: native_sources) into the cache, compiled by children beside the
    kernels, and leaves their loading to the runtime."""
    from mlbh.runtime import cpu_backend
    from mlbh.runtime.cpu_launch_list import native_sources
    assert len(native_sources(2)) >= 3
    compiled_here = _split_three_ways(monkeypatch, tmp_path)
    later = "define i32 @mlbh_test_later() {\n  ret i32 7\n}\n"  # stands in: the real ones are loaded already
    monkeypatch.setattr(cpu_backend, "native_sources", lambda cores: [later])
    vg, args = _block_step(BlockConfig(batch=2, seq=10, width=22, heads=2, vocab=30))
    step = jit(vg, backend="cpu")
    assert_same_tree(step(*args), jit(vg, backend="reference")(*args))
    key = cpu_jit.object_key(later)
    assert (tmp_path / "cpu" / key[:2] / (key + ".o")).exists()
    assert later not in compiled_here and key not in cpu_jit._ENGINES and key not in cpu_jit._PINNED


def test_a_module_whose_child_fails_is_compiled_by_the_parent(tmp_path, monkeypatch):
    _split_three_ways(monkeypatch, tmp_path)
    parent, real, compiled_here = os.getpid(), cpu_jit.compile_object, []

    def compile_or_fail_in_a_child(source):
        if os.getpid() != parent:
            raise RuntimeError("a child's compile failed")
        compiled_here.append(source)
        return real(source)

    monkeypatch.setattr(cpu_jit, "compile_object", compile_or_fail_in_a_child)
    vg, args = _block_step(BlockConfig(batch=2, seq=10, width=18, heads=3, vocab=30))
    step = jit(vg, backend="cpu")
    assert_same_tree(step(*args), jit(vg, backend="reference")(*args))
    sources = _module_sources(step)
    assert len(sources) == 3 and all(path.exists() for path in _module_paths(step, tmp_path))
    assert all(source in compiled_here for source in sources)


def test_the_cached_module_does_not_depend_on_where_the_users_files_are():
    """The header comments name the user's source lines relative to the working directory;
    the module the CPU backend caches leaves them out, so another cwd reuses it."""
    from dataclasses import replace
    vg, args = _block_step(BlockConfig())
    kernels = jit(vg, backend="cpu").lower(*args).program.kernels
    moved = [replace(k, sources=[s.replace("gpt_block.py", "elsewhere/gpt_block.py") for s in k.sources])
             for k in kernels]
    assert cpu.render_program(kernels)[0] != cpu.render_program(moved)[0]
    assert cpu.render_program(kernels, headers=False)[0] == cpu.render_program(moved, headers=False)[0]


def test_the_module_text_is_valid_llvm_ir_with_every_helper_it_calls():
    vg, args = _block_step(BlockConfig(batch=2, seq=8, width=16, heads=2, vocab=24))
    source, kernels = cpu.render_program(jit(vg, backend="cpu").lower(*args).program.kernels)
    assert "define internal float @mlbh_exp32" in source and "@mlbh_tanh32(" in source
    cpu_jit.compile_object(source)  # parses and verifies, or raises
    assert len({ck.name for ck in kernels.values()}) < len(kernels), "equal layers share a function"
    assert all(np.all([p in ck.params for p in ck.params]) for ck in kernels.values())


def _features_in_fresh_process(env):
    code = ("import mlbh.codegen.cpu_jit as j, mlbh.runtime.tokenizer, numba, llvmlite.binding as ll; "
            "print(j._target()[1].split(chr(0))[-1]); print(numba.config.CPU_FEATURES); "
            "print('+avx512f' in ll.get_host_cpu_features().flatten().split(','))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    kernels, tokenizer, avx512 = out.stdout.split("\n")[:3]
    return kernels, tokenizer, avx512 == "True"


def test_wide_vectors_where_the_cpu_has_avx512_unless_told_otherwise():
    """The kernels' target and the tokenizer's numba target both drop LLVM's 256-bit
    preference on AVX-512 CPUs; MLBH_CPU_VECTOR_BITS=256 keeps it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CPU", "MLBH_CPU"))}
    kernels, tokenizer, avx512 = _features_in_fresh_process(env)
    assert ("-prefer-256-bit" in kernels) == avx512, kernels
    assert ("-prefer-256-bit" in tokenizer) == avx512, tokenizer
    kernels, tokenizer, _ = _features_in_fresh_process(dict(env, MLBH_CPU_VECTOR_BITS="256"))
    assert "-prefer-256-bit" not in kernels and "-prefer-256-bit" not in tokenizer
