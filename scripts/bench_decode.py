"""Generation speed on the CPU: ms per new token with the KV-cache decode step against
recomputing the whole window each token.

    python scripts/bench_decode.py [--preset tiny] [--tokens 64]
"""
import argparse
import time

from mlbh.models.gpt2 import from_preset
from mlbh.runtime.sampling import KVSampler, WindowSampler


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=2048)
    args = ap.parse_args()
    model = from_preset(args.preset, vocab_size=args.vocab)
    params = model.init_params(0)
    prompt = list(range(1, 33))
    print(f"{model.describe()}, context {model.context}, prompt 32 tokens, {args.tokens} new tokens, cpu")
    results = {}
    for name, sampler in (("kv-cache decode", KVSampler(model, "cpu")), ("window recompute", WindowSampler(model, "cpu"))):
        sampler.generate(params, prompt, 2, temperature=0)  # compile
        t0 = time.perf_counter()
        sampler.generate(params, prompt, args.tokens, temperature=0)
        results[name] = 1e3 * (time.perf_counter() - t0) / args.tokens
        print(f"  {name:17s} {results[name]:8.2f} ms/token")
    print(f"  speed-up: {results['window recompute'] / results['kv-cache decode']:.1f}x")


if __name__ == "__main__":
    main()
