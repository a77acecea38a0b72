"""One full GPT-2 train step (forward, backward, AdamW with clipping) on the CPU: mlbh's
compiled step against the same model in PyTorch eager and torch.compile, same init, same
batch, in one run. Prints ms/step (median), first-call times, and ratios.

    python scripts/bench_train_cpu.py                 # anchor config and the tiny preset
    python scripts/bench_train_cpu.py --configs anchor --steps 20
    python scripts/bench_train_cpu.py --configs anchor --no-torch --profile   # where mlbh's time goes
    python scripts/bench_train_cpu.py --configs anchor --no-torch --steps 2 --rounds 1 --compile-profile
    python scripts/bench_train_cpu.py --configs anchor --no-torch --parallel-min-work 4096,16384,65536,4194304
    python scripts/bench_train_cpu.py --configs anchor --race-gemm openblas --steps 40 --rounds 8
"""
import argparse
import math
import os
import platform
import statistics
import tempfile
import time

import numpy as np

from mlbh.models.config import GPT2Config, preset
from mlbh.models.gpt2 import GPT2
from mlbh.runtime import cpu_backend, cpu_gemm, cpu_launch_list
from mlbh.runtime.optim import AdamWConfig
from mlbh.runtime.train_step import StepRunner

CONFIGS = {
    # the project's anchor: vocab 2048, context 128, batch 8, 4 layers, 4 heads, 128 wide, float32
    "anchor": (GPT2Config(n_layer=4, n_head=4, n_embd=128, block_size=128, vocab_size=2048), 8, 128),
    "tiny": (preset("tiny"), 8, 256),
}
OPT = AdamWConfig(lr=6e-4, min_lr=6e-5, warmup_steps=0, max_steps=10_000, weight_decay=0.1, grad_clip=1.0)


def mlbh_contender(config, data):
    """(step(i) -> loss, info): mlbh's compiled train step on batch i."""
    runner = StepRunner(GPT2(config), OPT, "cpu")
    params = GPT2(config).init_params(0)
    state = {"params": params, "m": runner.zeros_like(params), "v": runner.zeros_like(params), "step": 0}

    def step(i):
        return runner.step(state, [data(i)])["loss"]

    exe = lambda: list(runner.micro.cache.values())[0][0]  # noqa: E731  (after the first step)
    return step, {"runner": runner, "state": state, "program": exe}


def with_parallel_min_work(contender, threshold):
    """The contender with cpu_backend.PARALLEL_MIN_WORK set to threshold for each of its steps."""
    step, info = contender

    def split_step(i):
        saved, cpu_backend.PARALLEL_MIN_WORK = cpu_backend.PARALLEL_MIN_WORK, threshold
        try:
            return step(i)
        finally:
            cpu_backend.PARALLEL_MIN_WORK = saved
    return split_step, info


def with_gemm(contender, name):
    """The contender with its products through another GEMM ("openblas": numpy's OpenBLAS,
    "own": mlbh's kernel alone), patched in around each of its steps."""
    step, info = contender
    gemm = {"openblas": cpu_gemm.openblas_gemm, "own": cpu_gemm.own_gemm}[name]
    if gemm() is None:
        raise SystemExit("--race-gemm openblas: numpy's BLAS is not an OpenBLAS with per-thread counts")

    def patched_step(i):
        saved = cpu_backend.native_gemm, cpu_launch_list.native_gemm
        cpu_backend.native_gemm = cpu_launch_list.native_gemm = gemm
        try:
            return step(i)
        finally:
            cpu_backend.native_gemm, cpu_launch_list.native_gemm = saved
    return patched_step, info


def print_profile(runner, state, data, steps, top):
    """The time of every kernel and GEMM of mlbh's micro-step and update, slowest first."""
    for jitted in (runner.micro, runner.update):
        jitted.start_profile()
    for i in range(steps):
        runner.step(state, [data(i)])
    for jitted in (runner.micro, runner.update):
        rows = jitted.profile_rows()
        kernels = sum(ms for ms, what in rows if what.startswith("kernel"))
        gemms = sum(ms for ms, what in rows if what.startswith("gemm"))
        print(f"   profile of {jitted.name} (mean of {steps} steps): kernels {kernels:.1f} ms, "
              f"GEMMs {gemms:.1f} ms; the slowest {top} steps:")
        for ms, what in rows[:top]:
            print(f"     {ms:7.3f} ms  {what}")


def print_compile_profile(runner, first_seconds, llvm_seconds):
    """Where the cold first call went: each compiled function's lowering stages (trace,
    passes, fusion, memory plan, compile) and, of the compiles, LLVM's optimisation and
    code generation (main times cpu_jit.compile_object)."""
    print(f"   first step {first_seconds:.2f} s (one process, empty cache); LLVM compiled the kernels in "
          f"{llvm_seconds:.2f} s of it; by stage:")
    for jitted in (runner.micro, runner.update):
        for lowered, _ in jitted.cache.values():
            stages = ", ".join(f"{k} {v:.2f}" for k, v in lowered.timings.items())
            print(f"     {jitted.name}: {stages} s")


def torch_gpt2(config, params):
    import torch
    import torch.nn.functional as F

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.ParameterDict({k.replace(".", "_"): torch.nn.Parameter(torch.tensor(v))
                                             for k, v in params.items()})

        def w(self, name):
            return self.p[name.replace(".", "_")]

        def forward(self, idx, targets):
            B, T = idx.shape
            C, H = config.n_embd, config.n_head
            x = self.w("wte.weight")[idx] + self.w("wpe.weight")[:T]
            for i in range(config.n_layer):
                h = F.layer_norm(x, (C,), self.w(f"h.{i}.ln_1.weight"), self.w(f"h.{i}.ln_1.bias"))
                q, k, v = (h @ self.w(f"h.{i}.attn.c_attn.weight") + self.w(f"h.{i}.attn.c_attn.bias")).split(C, 2)
                q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
                att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
                att = att.masked_fill(torch.ones(T, T, dtype=torch.bool, device=idx.device).triu(1),
                                      float("-inf")).softmax(-1)
                y = (att @ v).transpose(1, 2).reshape(B, T, C)
                x = x + y @ self.w(f"h.{i}.attn.c_proj.weight") + self.w(f"h.{i}.attn.c_proj.bias")
                h = F.layer_norm(x, (C,), self.w(f"h.{i}.ln_2.weight"), self.w(f"h.{i}.ln_2.bias"))
                h = F.gelu(h @ self.w(f"h.{i}.mlp.c_fc.weight") + self.w(f"h.{i}.mlp.c_fc.bias"), approximate="tanh")
                x = x + h @ self.w(f"h.{i}.mlp.c_proj.weight") + self.w(f"h.{i}.mlp.c_proj.bias")
            x = F.layer_norm(x, (C,), self.w("ln_f.weight"), self.w("ln_f.bias"))
            logits = (x @ self.w("wte.weight").t())[..., :config.vocab_size]
            return F.cross_entropy(logits.reshape(-1, config.vocab_size), targets.reshape(-1))

    return Model()


def torch_contender(config, data, compiled, device="cpu", autocast_dtype=None):
    """(step(i) -> loss, info): the same model and optimizer in PyTorch (eager or compiled);
    on a GPU with fp32 master weights and, given autocast_dtype, bf16 autocast."""
    import contextlib

    import torch
    model = torch_gpt2(config, GPT2(config).init_params(0)).to(device)
    decay = [p for n, p in model.p.items() if p.dim() >= 2]
    rest = [p for n, p in model.p.items() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": OPT.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=OPT.lr, betas=(OPT.beta1, OPT.beta2), eps=OPT.eps,
                            **({"fused": True} if device != "cpu" else {}))
    fn = torch.compile(model) if compiled else model

    def step(i):
        tokens, targets = (torch.tensor(a, dtype=torch.long, device=device) for a in data(i))
        opt.zero_grad(set_to_none=True)
        with (torch.autocast(device, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()):
            loss = fn(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPT.grad_clip)
        opt.step()
        return loss.item()

    return step, {}


def race(contenders, steps, rounds):
    """Run every contender's first step, then `rounds` rounds in which each contender in
    turn takes its next steps // rounds steps (the same batches for all), so that a slow
    spell of a shared machine weighs on all of them alike. name -> first-step seconds,
    median ms/step, losses."""
    results = {}
    for name, (step, _) in contenders.items():
        start = time.perf_counter()
        results[name] = {"losses": [step(0)], "times": []}
        results[name]["first"] = time.perf_counter() - start
    per_round = max(1, steps // rounds)
    for r in range(rounds):
        for name, (step, _) in contenders.items():
            for i in range(1 + r * per_round, 1 + (r + 1) * per_round):
                start = time.perf_counter()
                results[name]["losses"].append(step(i))
                results[name]["times"].append(time.perf_counter() - start)
    for r in results.values():
        r["ms"] = 1e3 * statistics.median(r["times"])
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="anchor,tiny")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per contender (after the first)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds the timed steps are split into")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (its first step takes ~20 s)")
    ap.add_argument("--no-torch", action="store_true", help="time mlbh only")
    ap.add_argument("--parallel-min-work", default="",
                    help="comma-separated kernel sizes (elements): also race mlbh with each as the size from "
                         f"which kernels split across cores (default {cpu_backend.PARALLEL_MIN_WORK})")
    ap.add_argument("--race-gemm", choices=["openblas", "own"],
                    help="also race mlbh with its products through this GEMM: numpy's OpenBLAS, or mlbh's "
                         "own kernel for every float32 product (the default: own on AVX-512, else OpenBLAS)")
    ap.add_argument("--profile", action="store_true",
                    help="also time every kernel and GEMM of mlbh's step (clocked inside the native launch "
                         "list, so each step is timed among its neighbours' cache traffic)")
    ap.add_argument("--profile-top", type=int, default=25, help="how many of the slowest steps --profile lists")
    ap.add_argument("--compile-profile", action="store_true",
                    help="compile mlbh's step from an empty cache and print where the time went (the cold "
                         "first call: lowering stages and LLVM)")
    args = ap.parse_args()
    llvm_seconds = [0.0]
    if args.compile_profile:  # before mlbh compiles anything: an empty cache, LLVM's compiles timed
        os.environ["MLBH_CACHE_DIR"] = tempfile.mkdtemp(prefix="mlbh-cold-")
        from mlbh.codegen import cpu_jit
        compile_object = cpu_jit.compile_object

        def timed_compile(source):
            start = time.perf_counter()
            try:
                return compile_object(source)
            finally:
                llvm_seconds[0] += time.perf_counter() - start
        cpu_jit.compile_object = timed_compile
    try:
        import torch
        torch_version = torch.__version__
        torch.set_num_threads(2)
    except ImportError:
        torch = None
        torch_version = "not installed"
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"torch {torch_version}")
    for name in args.configs.split(","):
        config, batch, seq = CONFIGS[name]
        rng = np.random.default_rng(0)
        batches = [rng.integers(0, config.vocab_size, (batch, seq + 1)).astype(np.int32)
                   for _ in range(args.steps + args.rounds + 1)]

        def data(i):
            return batches[i][:, :-1], batches[i][:, 1:]

        print(f"\n== {name}: {config.n_layer} layers, {config.n_head} heads, {config.n_embd} wide, vocab "
              f"{config.vocab_size}, batch {batch} x {seq}, float32, {args.steps} timed steps in "
              f"{args.rounds} interleaved rounds")
        contenders = {"mlbh": mlbh_contender(config, data)}
        for threshold in filter(None, args.parallel_min_work.split(",")):
            contenders[f"mlbh split>={threshold}"] = with_parallel_min_work(mlbh_contender(config, data), int(threshold))
        if args.race_gemm:
            contenders[f"mlbh {args.race_gemm}"] = with_gemm(mlbh_contender(config, data), args.race_gemm)
        if torch is not None and not args.no_torch:
            contenders["torch eager"] = torch_contender(config, data, False)
            if not args.no_compile:
                contenders["torch.compile"] = torch_contender(config, data, True)
        results = race(contenders, args.steps, args.rounds)
        info = contenders["mlbh"][1]
        program = info["program"]().program
        results["mlbh"].update(kernels=len(program.kernels), gemms=len(program.steps) - len(program.kernels))
        if args.profile:
            print_profile(info["runner"], info["state"], data, args.steps, args.profile_top)
        if args.compile_profile:
            print_compile_profile(info["runner"], results["mlbh"]["first"], llvm_seconds[0])
        m = results["mlbh"]
        print(f"   mlbh: {m['kernels']} kernels + {m['gemms']} GEMMs per micro-step")
        for label, r in results.items():
            ratio = "" if label == "mlbh" else f"   (mlbh is {r['ms'] / m['ms']:.2f}x {label}'s speed)"
            print(f"   {label:14s} {r['ms']:8.1f} ms/step   first step {r['first']:6.1f} s   "
                  f"loss {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f}{ratio}")


if __name__ == "__main__":
    main()
