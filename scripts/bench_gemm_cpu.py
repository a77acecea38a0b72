"""Time the GEMM shapes of the GPT block / anchor config in numpy (mlbh's CPU BLAS) and in
torch (its own BLAS), side by side: the floor under mlbh's CPU train step.

    python scripts/bench_gemm_cpu.py            # batch 8 x seq 128, width 128, vocab 2048
"""
import argparse
import time

import numpy as np


def best_ms(fn, repeats=30, rounds=5):
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best * 1e3


def operands(rng, m, k, n, layout):
    """a (m x k) and b (k x n), each stored transposed when its letter in layout is T."""
    a = rng.standard_normal((k, m) if layout[0] == "T" else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if layout[1] == "T" else (k, n)).astype(np.float32)
    return a, b


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=1024, help="batch x seq")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    t, c, v = args.tokens, args.width, args.vocab
    shapes = [(t, c, 3 * c), (t, c, c), (t, c, 4 * c), (t, 4 * c, c), (t, c, v)]
    rng = np.random.default_rng(0)
    print(f"GEMMs of tokens {t}, width {c}, vocab {v}; numpy {np.__version__}"
          + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else ", no torch"))
    print(f"{'m x k x n':>18s} {'layout':>6s} {'numpy ms':>9s} {'GFLOP/s':>8s}" + (f" {'torch ms':>9s} {'numpy/torch':>11s}" if torch else ""))
    for m, k, n in shapes:
        for layout in ("NN", "TN", "NT"):
            a, b = operands(rng, m, k, n, layout)
            av, bv = (a.T if layout[0] == "T" else a), (b.T if layout[1] == "T" else b)
            ms = best_ms(lambda: av @ bv)
            line = f"{f'{m} x {k} x {n}':>18s} {layout:>6s} {ms:9.3f} {2 * m * k * n / ms / 1e6:8.1f}"
            if torch:
                ta, tb = torch.from_numpy(a), torch.from_numpy(b)
                tav, tbv = (ta.T if layout[0] == "T" else ta), (tb.T if layout[1] == "T" else tb)
                tms = best_ms(lambda: tav @ tbv)
                line += f" {tms:9.3f} {ms / tms:10.2f}x"
            print(line)
    batch, d = t // args.seq * args.heads, c // args.heads
    q = rng.standard_normal((batch, args.seq, d)).astype(np.float32)
    kt = rng.standard_normal((batch, d, args.seq)).astype(np.float32)
    ms = best_ms(lambda: q @ kt)
    line = f"{f'{batch} x ({args.seq} x {d} x {args.seq})':>18s} {'batch':>6s} {ms:9.3f} {2 * batch * args.seq ** 2 * d / ms / 1e6:8.1f}"
    if torch:
        tq, tk = torch.from_numpy(q), torch.from_numpy(kt)
        tms = best_ms(lambda: tq @ tk)
        line += f" {tms:9.3f} {ms / tms:10.2f}x"
    print(line)


if __name__ == "__main__":
    main()
