"""Counting GPT-2 pre-tokens over a corpus, the first phase of BPE training.

Text equal to a special token is cut out first, so special tokens never take part in
merges. With workers > 1, batches of texts are counted in worker processes (at most two
batches per worker in flight, so a streamed corpus is not read ahead into memory) and the
counts summed; the result is the same as with one process.
"""

import collections
import multiprocessing
import re
import sys
import time

from mlbh.runtime.pretokenize import gpt2_pattern, pretokenize, split_for_pretokenizing

_BATCH_CHARS = 4 << 20
_PROGRESS_EVERY_CHARS = 64 << 20


def special_token_splitter(special_tokens):
    """A compiled pattern matching any of `special_tokens` (longest first), or None."""
    if not special_tokens:
        return None
    alternatives = sorted(special_tokens, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, alternatives)))


class PretokenCounter:
    def __init__(self, special_tokens=()):
        self.special_tokens = tuple(special_tokens)
        self._splitter = special_token_splitter(self.special_tokens)
        self.counts = collections.Counter()

    def add(self, text):
        if not isinstance(text, str):
            raise TypeError(f"BPE training expects an iterable of str, got an item of type {type(text).__name__}")
        pieces = (text,)
        if self._splitter is not None and any(s in text for s in self.special_tokens):
            pieces = self._splitter.split(text)
        update = self.counts.update
        for piece in pieces:
            for chunk in split_for_pretokenizing(piece):
                update(pretokenize(chunk))


def count_pretokens(texts, special_tokens=(), progress=False, workers=1):
    """Counter {pre-token: occurrences} over the str items of `texts`."""
    progress_report = _ProgressReport() if progress else None
    if workers > 1:
        return _count_in_workers(texts, special_tokens, workers, progress_report)
    counter = PretokenCounter(special_tokens)
    for text in texts:
        counter.add(text)
        if progress_report:
            progress_report.advance(len(text), counter.counts)
    return counter.counts


def _count_in_workers(texts, special_tokens, workers, progress_report):
    gpt2_pattern()  # built once here; forked workers inherit it
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    total = collections.Counter()
    with context.Pool(workers, initializer=_start_worker, initargs=(tuple(special_tokens),)) as pool:
        in_flight = collections.deque()

        def collect_oldest():
            counts, chars = in_flight.popleft().get()
            total.update(counts)
            if progress_report:
                progress_report.advance(chars, total)

        for batch in _batches(texts):
            in_flight.append(pool.apply_async(_count_batch, (batch,)))
            if len(in_flight) >= 2 * workers:
                collect_oldest()
        while in_flight:
            collect_oldest()
    return total


def _batches(texts):
    batch, chars = [], 0
    for text in texts:
        batch.append(text)
        chars += len(text) if isinstance(text, str) else 0
        if chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


_worker_special_tokens = ()


def _start_worker(special_tokens):
    global _worker_special_tokens
    _worker_special_tokens = special_tokens


def _count_batch(batch):
    counter = PretokenCounter(_worker_special_tokens)
    for text in batch:
        counter.add(text)
    return counter.counts, sum(map(len, batch))


class _ProgressReport:
    def __init__(self):
        self.started = time.perf_counter()
        self.chars = 0
        self.next_report = _PROGRESS_EVERY_CHARS

    def advance(self, chars, counts):
        self.chars += chars
        if self.chars >= self.next_report:
            self.next_report += _PROGRESS_EVERY_CHARS
            print(f"bpe train: pre-tokenized {self.chars / 1e6:.0f}M chars, {len(counts)} unique pre-tokens, "
                  f"{time.perf_counter() - self.started:.1f}s", file=sys.stderr, flush=True)
