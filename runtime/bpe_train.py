"""Byte-level BPE training, second phase: learn merges from counted pre-tokens.

Phase 1 (bpe_count) counts each unique GPT-2 pre-token once. Here each unique pre-token
becomes a word of byte tokens weighted by its count, and the numba kernel (bpe_merge_core)
merges the most frequent adjacent pair until the vocabulary is full or no pair is left.

Tie-break: among pairs with equal count, the one with the smaller left token id wins, then
the smaller right token id. Byte tokens have id = byte value and merged tokens get ids in
creation order, so training is deterministic whatever the order of the texts' words.
"""

import sys
import time

import numpy as np

from mlbh.runtime.bpe_merge_core import init_state, run_merges

FIRST_MERGED_ID = 256
_MERGES_PER_CALL = 512
_SECONDS_BETWEEN_REPORTS = 2.0


def learn_merges(pretoken_counts, n_merges, progress=False):
    """The first `n_merges` merges (fewer if the words run out of pairs) as an int64 array
    of (left id, right id) rows; merge k creates token id 256 + k."""
    tokens, word_start, word_len, word_count = _words_as_arrays(pretoken_counts)
    merged_pairs = np.empty((max(n_merges, 0), 2), np.int64)
    merged_counts = np.empty(max(n_merges, 0), np.int64)
    if n_merges <= 0:
        return merged_pairs
    started = last_report = time.perf_counter()
    state = init_state(tokens, word_start, word_len, word_count)
    done = 0
    while done < n_merges:
        wanted = min(_MERGES_PER_CALL, n_merges - done)
        state, made = run_merges(state, FIRST_MERGED_ID, done, wanted, merged_pairs, merged_counts)
        done += made
        finished = made < wanted or done == n_merges
        now = time.perf_counter()
        if progress and done and (finished or now - last_report >= _SECONDS_BETWEEN_REPORTS):
            last_report = now
            _report(f"merges {done}/{n_merges} (last count {merged_counts[done - 1]}), {now - started:.1f}s")
        if finished:
            break
    return merged_pairs[:done]


def _words_as_arrays(pretoken_counts):
    """Unique pre-tokens of two or more bytes (shorter ones have no pair) as back-to-back
    byte tokens with starts, lengths and counts."""
    encoded = []
    counts = []
    for word, count in pretoken_counts.items():
        data = word.encode("utf-8")
        if len(data) >= 2:
            encoded.append(data)
            counts.append(count)
    word_len = np.fromiter(map(len, encoded), np.int64, len(encoded))
    word_start = np.zeros(len(encoded), np.int64)
    np.cumsum(word_len[:-1], out=word_start[1:])
    tokens = np.frombuffer(b"".join(encoded), np.uint8).astype(np.int32)
    word_count = np.array(counts, np.int64)
    return tokens, word_start, word_len, word_count


def _report(message):
    print(f"bpe train: {message}", file=sys.stderr, flush=True)
