"""Time one GPT block's forward + backward pass on the CPU: mlbh jit vs the reference
interpreter vs PyTorch eager.

    python scripts/bench_block_cpu.py                  # the anchor config: 8 x 128, width 128
    python scripts/bench_block_cpu.py --profile        # also the time of every launch-list step
    MLBH_BLAS_THREADS=1 python scripts/bench_block_cpu.py   # matmuls on one thread (default: OpenBLAS's own)

The block is tests/gpt_block.py (layer_norm, packed QKV, causal attention, output
projection, GELU MLP, vocab projection, cross-entropy); the PyTorch version below is the
same math in plain torch ops with the same initial values (GPT-2's: weights N(0, 0.02);
a wider spread drives some softmax gradients into float32 denormals, which slow every
backend's matmuls several times over). Each backend computes the loss
and the gradients of every parameter and of the input activations. A fresh compile cache
is used unless MLBH_CACHE_DIR is set, so the first-call time includes the kernels' LLVM compile.
"""
import argparse
import math
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
os.environ.setdefault("MLBH_CACHE_DIR", tempfile.mkdtemp(prefix="mlbh_bench_"))

from gpt_block import BlockConfig, block_loss, init_batch, init_params  # noqa: E402

from mlbh import tracer as T  # noqa: E402
from mlbh.runtime.blas_threads import limit_blas_threads  # noqa: E402
from mlbh.runtime.jitted import jit  # noqa: E402
from mlbh.tracer import pytree  # noqa: E402


def median_ms(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def torch_block_loss(torch, p, x, targets, heads):
    """The same block in plain PyTorch (eager attention, as GPT-2's reference code)."""
    f = torch.nn.functional
    b, t, c = x.shape
    d = c // heads
    h = f.layer_norm(x, (c,), p["ln1_g"], p["ln1_b"], eps=1e-5)
    qkv = (h @ p["w_qkv"] + p["b_qkv"]).view(b, t, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    attn = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1) @ v
    x = x + attn.transpose(1, 2).reshape(b, t, c) @ p["w_o"] + p["b_o"]
    h = f.layer_norm(x, (c,), p["ln2_g"], p["ln2_b"], eps=1e-5)
    x = x + f.gelu(h @ p["w_fc"] + p["b_fc"], approximate="tanh") @ p["w_proj"] + p["b_proj"]
    logits = x @ p["w_vocab"]
    return f.cross_entropy(logits.reshape(b * t, -1), targets.reshape(-1).long())


def torch_step(params, x, targets, heads):
    """A closure running the block forward+backward in torch eager, and its loss and grads."""
    import torch
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(targets)

    def step():
        for t in (*tp.values(), tx):
            t.grad = None
        loss = torch_block_loss(torch, tp, tx, tt, heads)
        loss.backward()
        return loss

    loss = float(step().detach())
    return step, loss, ({k: t.grad.numpy() for k, t in tp.items()}, tx.grad.numpy())


def interleaved_medians(runners, rounds, repeats):
    """name -> [median ms of each round]: every round times each runner in turn, so a slow
    spell of a shared machine weighs on all of them alike."""
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, (fn, n) in runners.items():
            times[name].append(median_ms(fn, n, warmup=1))
    return times


def max_rel_diff(a, b):
    la, lb = pytree.flatten(a)[0], pytree.flatten(b)[0]
    return max(float(np.abs(np.asarray(u) - np.asarray(v)).max() / (np.abs(np.asarray(v)).max() + 1e-30))
               for u, v in zip(la, lb))


def print_profile(jitted, run, repeats):
    jitted.start_profile()
    for _ in range(repeats):
        run()
    rows = jitted.profile_rows()
    total = sum(ms for ms, _ in rows)
    print(f"\nper-step time (ms, mean of {repeats}), total {total:.2f} ms:")
    for ms, what in rows:
        print(f"  {ms:7.3f}  {100 * ms / total:5.1f}%  {what}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds over all backends")
    ap.add_argument("--repeats", type=int, default=10, help="timed steps per backend and round (median)")
    ap.add_argument("--reference-repeats", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="print every launch-list step's time")
    a = ap.parse_args()
    cfg = BlockConfig(a.batch, a.seq, a.width, a.heads, a.vocab)
    params = init_params(cfg, std=0.02)
    x, targets = init_batch(cfg)
    vg = T.value_and_grad(lambda p, x, t: block_loss(p, x, t, cfg.heads), argnums=(0, 1))
    print(f"GPT block forward+backward: batch {cfg.batch}, seq {cfg.seq}, width {cfg.width}, "
          f"heads {cfg.heads}, vocab {cfg.vocab}; GPT-2 initialisation (std 0.02); {os.cpu_count()} CPUs")

    step = jit(vg, backend="cpu")
    start = time.perf_counter()
    loss, grads = step(params, x, targets)
    first_call = time.perf_counter() - start
    print(f"  OpenBLAS threads {limit_blas_threads() or 'default'} (MLBH_BLAS_THREADS), for jit and reference alike")
    lowered, _ = next(iter(step.cache.values()))
    summary = lowered.summary()
    if a.profile:
        print_profile(step, lambda: step(params, x, targets), a.repeats)
    graph = lowered.traced
    ref_out = T.evaluate(graph, params, x, targets)
    runners = {"jit": (lambda: step(params, x, targets), a.repeats),
               "reference": (lambda: T.evaluate(graph, params, x, targets), a.reference_repeats)}
    torch_checks = {}
    try:
        import torch
    except ImportError:
        torch = None
    else:
        # torch's OpenMP workers spin; on a busy small machine one thread can beat all of them
        run, torch_loss, torch_grads = torch_step(params, x, targets, cfg.heads)
        for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
            runners[f"torch {threads}"] = (lambda n=threads: (torch.set_num_threads(n), run()), a.repeats)
            torch_checks[f"torch {threads}"] = threads
    times = interleaved_medians(runners, a.rounds, a.repeats)
    med = {name: statistics.median(v) for name, v in times.items()}
    jit_ms = med["jit"]
    ratios = [r / j for r, j in zip(times["reference"], times["jit"])]
    print(f"  {a.rounds} interleaved rounds (median of per-round medians; each round times every backend in turn)")
    print(f"  jit cpu        {jit_ms:9.2f} ms/step   (first call {first_call:.2f} s: trace+fuse+compile+run)")
    print(f"  reference      {med['reference']:9.2f} ms/step   reference/jit = {med['reference'] / jit_ms:.1f}x   "
          f"(per round {min(ratios):.1f}x-{max(ratios):.1f}x; max rel diff vs jit "
          f"{max_rel_diff((loss, grads), ref_out):.1e})")
    if torch is None:
        print("  torch eager    (torch not importable)")
    for name, threads in torch_checks.items():
        print(f"  torch eager    {med[name]:9.2f} ms/step   torch/jit = {med[name] / jit_ms:.2f}x   "
              f"({threads} thread{'s' if threads > 1 else ''}; loss {torch_loss:.6f} vs jit "
              f"{float(loss):.6f}, max rel grad diff {max_rel_diff(torch_grads, grads):.1e})")
    print(f"  kernels {summary['kernels']}, library calls {summary['library_calls']}; "
          f"{lowered.memory.summary()}")


if __name__ == "__main__":
    main()
