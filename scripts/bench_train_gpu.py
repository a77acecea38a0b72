"""One full GPT-2 train step (forward, backward, clipped AdamW) on a GPU: mlbh's compiled
CUDA step against the same model in PyTorch (eager, and torch.compile unless --no-compile),
same init, same batches, in one run. Both keep fp32 master weights; mlbh computes in
--dtype (bf16 parameters copies, fp32 statistics), PyTorch under autocast to that dtype.
Prints ms/step (median), tokens/s, model FLOPs utilisation and the first step's time.

    python scripts/bench_train_gpu.py                       # GPT-2 124M, 8 x 1024 tokens, bf16
    python scripts/bench_train_gpu.py --batch 16 --steps 30
    python scripts/bench_train_gpu.py --remat-attention --no-compile   # also mlbh recomputing attention
    python scripts/bench_train_gpu.py --device cpu --preset tiny --batch 2 --seq 64 --dtype float32 --no-compile
                                                            # a smoke test of the script without a GPU
"""
import argparse
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train_cpu import OPT, race, torch_contender  # noqa: E402

from mlbh.models.config import preset  # noqa: E402
from mlbh.models.gpt2 import GPT2  # noqa: E402
from mlbh.runtime.train_step import StepRunner  # noqa: E402

# dense bf16 tensor-core peak, FLOP/s (NVIDIA datasheets, SXM parts)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def flops_per_token(config, seq):
    """Training FLOPs per token: 6 per parameter (forward + backward of every matmul) plus
    attention's scores and weighted sum, 12 * layers * width * sequence."""
    params = config.n_layer * 12 * config.n_embd ** 2 + config.padded_vocab * config.n_embd
    return 6 * params + 12 * config.n_layer * config.n_embd * seq


def mlbh_gpu_contender(config, data, backend, cuda_graph=False):
    runner = StepRunner(GPT2(config), OPT, backend, cuda_graph=cuda_graph)
    params = runner.to_device(GPT2(config).init_params(0))
    state = {"params": params, "m": runner.zeros_like(params), "v": runner.zeros_like(params), "step": 0}

    def step(i):
        return runner.step(state, [data(i)])["loss"]  # float(loss): waits for the step

    return step, {}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpt2")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step")
    ap.add_argument("--seq", type=int, default=1024, help="tokens per sequence")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--steps", type=int, default=20, help="timed steps per contender (after the first)")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds the timed steps are split into")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--no-torch", action="store_true", help="time mlbh only")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="also time mlbh with each step's functions replayed as CUDA graphs")
    ap.add_argument("--remat-attention", action="store_true",
                    help="also time mlbh recomputing attention in the backward pass (less memory)")
    args = ap.parse_args()

    config = preset(args.preset, compute_dtype=args.dtype if args.device == "cuda" else "float32")
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, config.vocab_size, (args.batch, args.seq + 1)).astype(np.int32)
               for _ in range(args.steps + args.rounds + 1)]

    def data(i):
        return batches[i][:, :-1], batches[i][:, 1:]

    device_name = platform.processor() or platform.machine()
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: timing mlbh only")
    if args.device == "cuda":
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        device_name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    tokens = args.batch * args.seq
    print(f"device: {device_name}; torch {torch.__version__ if torch else 'not used'}")
    print(f"== {args.preset}: {config.n_layer} layers, {config.n_embd} wide, vocab {config.vocab_size}, "
          f"{args.batch} x {args.seq} tokens/step, {args.dtype}, {args.steps} timed steps in {args.rounds} rounds")

    contenders = {"mlbh": mlbh_gpu_contender(config, data, "cuda" if args.device == "cuda" else "cpu")}
    if args.cuda_graph and args.device == "cuda":
        contenders["mlbh cuda graph"] = mlbh_gpu_contender(config, data, "cuda", cuda_graph=True)
    if args.remat_attention:
        contenders["mlbh remat attn"] = mlbh_gpu_contender(config.replace(remat_attention=True), data,
                                                           "cuda" if args.device == "cuda" else "cpu")
    if torch is not None:
        autocast = getattr(torch, args.dtype) if args.dtype != "float32" else None
        contenders["torch eager"] = torch_contender(config, data, False, args.device, autocast)
        if not args.no_compile:
            contenders["torch.compile"] = torch_contender(config, data, True, args.device, autocast)
    results = race(contenders, args.steps, args.rounds)

    peak = next((v for k, v in PEAK_BF16.items() if k in device_name), None) if args.dtype == "bfloat16" else None
    mine = results["mlbh"]["ms"]
    for label, r in results.items():
        tok_s = tokens / (r["ms"] / 1e3)
        mfu = f"   MFU {flops_per_token(config, args.seq) * tok_s / peak:5.1%}" if peak else ""
        ratio = "" if label == "mlbh" else f"   (mlbh is {r['ms'] / mine:.2f}x {label}'s speed)"
        print(f"   {label:14s} {r['ms']:8.1f} ms/step  {tok_s:10,.0f} tok/s{mfu}   first step {r['first']:6.1f} s   "
              f"loss {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f}{ratio}")


if __name__ == "__main__":
    main()
