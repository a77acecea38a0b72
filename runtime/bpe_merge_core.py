"""The numba kernel of BPE training: repeated pair merges with incremental pair counts.

Words are the unique pre-tokens, stored back to back in one int32 token array; each has a
start, a current length (it shrinks in place as merges apply) and a corpus count.

For every adjacent token pair ever seen the kernel keeps its total count (weighted by word
counts) and a linked list of the words that contained it when it was counted. A merge
visits only the words on the merged pair's list, rewrites them, and adjusts the counts of
the pairs whose occurrences changed. Lists are never pruned: a visited word is checked for
the pair first.

The best pair comes from a max-heap with lazy deletion: every count change pushes a new
entry, and a popped entry whose count differs from the pair's current count is stale and
dropped. Ordering (the documented tie-break): higher count first, then the smaller left
token id, then the smaller right token id.

All state lives in a tuple of arrays (see `init_state`) so that training can run in chunks
of merges and report progress between them.
"""

import numpy as np
from numba import njit

# Columns of the `pairs` table.
P_LEFT, P_RIGHT, P_COUNT, P_HEAD, P_DELTA, P_STAMP = range(6)
# Slots of the `counters` array.
N_PAIRS, N_NODES, HEAP_SIZE, TABLE_USED, N_TOUCHED = range(5)

EMPTY_KEY = -1
# 0x9E3779B97F4A7C15 as a signed int64: Fibonacci hashing of pair keys.
HASH_MULTIPLIER = -7046029254386353131


# ---------------------------------------------------------------- pair key -> pair index


@njit(cache=True)
def _slot(keys, key):
    mask = keys.size - 1
    h = key * HASH_MULTIPLIER
    i = (h ^ (h >> 32)) & mask
    while keys[i] != key and keys[i] != EMPTY_KEY:
        i = (i + 1) & mask
    return i


@njit(cache=True)
def _rehash(keys, values, capacity):
    new_keys = np.full(capacity, EMPTY_KEY, np.int64)
    new_values = np.empty(capacity, np.int64)
    for i in range(keys.size):
        if keys[i] != EMPTY_KEY:
            j = _slot(new_keys, keys[i])
            new_keys[j] = keys[i]
            new_values[j] = values[i]
    return new_keys, new_values


@njit(cache=True)
def _pair_index(keys, values, pairs, counters, left, right):
    """Index of the pair (left, right), created with count 0 if new. The caller has
    reserved room in `pairs` and the hash table."""
    key = (np.int64(left) << 32) | np.int64(right)
    i = _slot(keys, key)
    if keys[i] == key:
        return values[i]
    p = counters[N_PAIRS]
    counters[N_PAIRS] = p + 1
    counters[TABLE_USED] += 1
    keys[i] = key
    values[i] = p
    pairs[p, P_LEFT] = left
    pairs[p, P_RIGHT] = right
    pairs[p, P_COUNT] = 0
    pairs[p, P_HEAD] = -1
    pairs[p, P_DELTA] = 0
    pairs[p, P_STAMP] = -1
    return p


# ---------------------------------------------------------------- growth


@njit(cache=True)
def _grow_rows(a, min_rows):
    rows = max(min_rows, 2 * a.shape[0])
    grown = np.empty((rows, a.shape[1]), a.dtype)
    grown[: a.shape[0]] = a
    return grown


@njit(cache=True)
def _grow_1d(a, min_size):
    grown = np.empty(max(min_size, 2 * a.size), a.dtype)
    grown[: a.size] = a
    return grown


# ---------------------------------------------------------------- heap of (count, pair)


@njit(cache=True)
def _pops_before(heap, i, j, pairs):
    ci = heap[i, 0]
    cj = heap[j, 0]
    if ci != cj:
        return ci > cj
    pi = heap[i, 1]
    pj = heap[j, 1]
    if pairs[pi, P_LEFT] != pairs[pj, P_LEFT]:
        return pairs[pi, P_LEFT] < pairs[pj, P_LEFT]
    return pairs[pi, P_RIGHT] < pairs[pj, P_RIGHT]


@njit(cache=True)
def _swap(heap, i, j):
    c = heap[i, 0]
    p = heap[i, 1]
    heap[i, 0] = heap[j, 0]
    heap[i, 1] = heap[j, 1]
    heap[j, 0] = c
    heap[j, 1] = p


@njit(cache=True)
def _sift_down(heap, i, size, pairs):
    while True:
        best = i
        left = 2 * i + 1
        right = left + 1
        if left < size and _pops_before(heap, left, best, pairs):
            best = left
        if right < size and _pops_before(heap, right, best, pairs):
            best = right
        if best == i:
            return
        _swap(heap, i, best)
        i = best


@njit(cache=True)
def _heap_push(heap, counters, pairs, count, p):
    i = counters[HEAP_SIZE]
    counters[HEAP_SIZE] = i + 1
    heap[i, 0] = count
    heap[i, 1] = p
    while i > 0:
        parent = (i - 1) // 2
        if not _pops_before(heap, i, parent, pairs):
            return
        _swap(heap, i, parent)
        i = parent


@njit(cache=True)
def _heap_pop(heap, counters, pairs):
    size = counters[HEAP_SIZE] - 1
    counters[HEAP_SIZE] = size
    heap[0, 0] = heap[size, 0]
    heap[0, 1] = heap[size, 1]
    _sift_down(heap, 0, size, pairs)


@njit(cache=True)
def _rebuild_heap(heap, counters, pairs):
    """Replace the heap by one exact entry per pair with a positive count."""
    size = 0
    for p in range(counters[N_PAIRS]):
        if pairs[p, P_COUNT] > 0:
            heap[size, 0] = pairs[p, P_COUNT]
            heap[size, 1] = p
            size += 1
    counters[HEAP_SIZE] = size
    for i in range(size // 2 - 1, -1, -1):
        _sift_down(heap, i, size, pairs)


# ---------------------------------------------------------------- word lists and deltas


@njit(cache=True)
def _note_word_has_pair(pairs, nodes, counters, p, w):
    head = pairs[p, P_HEAD]
    if head != -1 and nodes[head, 0] == w:
        return
    n = counters[N_NODES]
    counters[N_NODES] = n + 1
    nodes[n, 0] = w
    nodes[n, 1] = head
    pairs[p, P_HEAD] = n


@njit(cache=True)
def _add_delta(pairs, touched, counters, p, delta, step):
    if pairs[p, P_STAMP] != step:
        pairs[p, P_STAMP] = step
        pairs[p, P_DELTA] = 0
        touched[counters[N_TOUCHED]] = p
        counters[N_TOUCHED] += 1
    pairs[p, P_DELTA] += delta


@njit(cache=True)
def _contains_pair(tokens, start, length, a, b):
    for i in range(start, start + length - 1):
        if tokens[i] == a and tokens[i + 1] == b:
            return True
    return False


@njit(cache=True)
def _merge_in_word(tokens, start, length, a, b, new_id, count, w, step,
                   keys, values, pairs, nodes, touched, counters):
    """Replace every (a, b) in the word by new_id, left to right; record pair deltas.
    Returns the new length."""
    end = start + length
    for i in range(start, end - 1):
        p = _pair_index(keys, values, pairs, counters, tokens[i], tokens[i + 1])
        _add_delta(pairs, touched, counters, p, -count, step)
    out = start
    i = start
    while i < end:
        if i + 1 < end and tokens[i] == a and tokens[i + 1] == b:
            tokens[out] = new_id
            i += 2
        else:
            tokens[out] = tokens[i]
            i += 1
        out += 1
    for i in range(start, out - 1):
        left = tokens[i]
        right = tokens[i + 1]
        p = _pair_index(keys, values, pairs, counters, left, right)
        _add_delta(pairs, touched, counters, p, count, step)
        if left == new_id or right == new_id:
            _note_word_has_pair(pairs, nodes, counters, p, w)
    return out - start


# ---------------------------------------------------------------- entry points


@njit(cache=True)
def init_state(tokens, word_start, word_len, word_count):
    """Count every adjacent pair of the initial (byte) words; build lists and heap."""
    n_words = word_len.size
    pair_capacity = 1 << 17  # all byte pairs (65536) fit before any merge
    keys = np.full(2 * pair_capacity, EMPTY_KEY, np.int64)
    values = np.empty(2 * pair_capacity, np.int64)
    pairs = np.empty((pair_capacity, 6), np.int64)
    nodes = np.empty((max(1024, tokens.size), 2), np.int32)
    counters = np.zeros(8, np.int64)
    for w in range(n_words):
        start = word_start[w]
        for i in range(start, start + word_len[w] - 1):
            p = _pair_index(keys, values, pairs, counters, tokens[i], tokens[i + 1])
            pairs[p, P_COUNT] += word_count[w]
            _note_word_has_pair(pairs, nodes, counters, p, w)
    heap = np.empty((max(1024, 2 * counters[N_PAIRS]), 2), np.int64)
    _rebuild_heap(heap, counters, pairs)
    touched = np.empty(1024, np.int64)
    word_stamp = np.full(n_words, -1, np.int64)
    return (tokens, word_start, word_len, word_count, word_stamp,
            keys, values, pairs, nodes, heap, touched, counters)


@njit(cache=True)
def run_merges(state, first_new_id, first_step, n_steps, merged_pairs, merged_counts):
    """Make up to `n_steps` merges. Merge k (counting from 0 over the whole training) is
    written to merged_pairs[k] = (left id, right id) and merged_counts[k]; its new token
    id is first_new_id + k. Returns (state, merges made); fewer than n_steps means no pair
    is left."""
    (tokens, word_start, word_len, word_count, word_stamp,
     keys, values, pairs, nodes, heap, touched, counters) = state
    made = 0
    while made < n_steps:
        best = -1
        while counters[HEAP_SIZE] > 0:
            count = heap[0, 0]
            p = heap[0, 1]
            _heap_pop(heap, counters, pairs)
            if count > 0 and pairs[p, P_COUNT] == count:
                best = p
                break
        if best == -1:
            break
        step = first_step + made
        new_id = first_new_id + step
        a = pairs[best, P_LEFT]
        b = pairs[best, P_RIGHT]
        merged_pairs[step, 0] = a
        merged_pairs[step, 1] = b
        merged_counts[step] = pairs[best, P_COUNT]

        counters[N_TOUCHED] = 0
        node = pairs[best, P_HEAD]
        pairs[best, P_HEAD] = -1
        while node != -1:
            w = nodes[node, 0]
            node = nodes[node, 1]
            if word_stamp[w] == step:
                continue
            word_stamp[w] = step
            start = word_start[w]
            length = word_len[w]
            if not _contains_pair(tokens, start, length, a, b):
                continue
            if counters[N_PAIRS] + length > pairs.shape[0]:
                pairs = _grow_rows(pairs, counters[N_PAIRS] + length)
            while 2 * (counters[TABLE_USED] + length) > keys.size:
                keys, values = _rehash(keys, values, 2 * keys.size)
            if counters[N_NODES] + length > nodes.shape[0]:
                nodes = _grow_rows(nodes, counters[N_NODES] + length)
            if counters[N_TOUCHED] + 2 * length > touched.size:
                touched = _grow_1d(touched, counters[N_TOUCHED] + 2 * length)
            word_len[w] = _merge_in_word(tokens, start, length, a, b, new_id, word_count[w], w, step,
                                         keys, values, pairs, nodes, touched, counters)

        if counters[HEAP_SIZE] + counters[N_TOUCHED] > heap.shape[0]:
            heap = _grow_rows(heap, counters[HEAP_SIZE] + counters[N_TOUCHED])
        for t in range(counters[N_TOUCHED]):
            p = touched[t]
            delta = pairs[p, P_DELTA]
            if delta != 0:
                pairs[p, P_COUNT] += delta
                if pairs[p, P_COUNT] > 0:
                    _heap_push(heap, counters, pairs, pairs[p, P_COUNT], p)
        if counters[HEAP_SIZE] > 4 * counters[N_PAIRS] + 65536:
            _rebuild_heap(heap, counters, pairs)
        made += 1
    state = (tokens, word_start, word_len, word_count, word_stamp,
             keys, values, pairs, nodes, heap, touched, counters)
    return state, made
