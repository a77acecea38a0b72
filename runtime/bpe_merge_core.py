"""The numba kernel of BPE training: repeated pair merges with incremental pair counts.

Words are the unique pre-tokens, stored back to back in one int32 token array; each has a
row in `words`: start, current length (it shrinks in place as merges apply), corpus count
and the last merge step that visited it. Row layouts keep what one access needs in one
cache line, which matters once the tables outgrow the caches.

For every adjacent token pair ever seen the kernel keeps its total count (weighted by word
counts) and a linked list of the words that contained it when it was counted. A merge
visits only the words on the merged pair's list, rewrites them, and adjusts the counts of
the pairs next to each merge site. Lists are never pruned: a visited word is checked for
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

from mlbh.codegen.cpu_target import use_wide_vectors

use_wide_vectors()  # before numba compiles anything: it fixes its target machine then

# Columns of the `words` and `pairs` tables.
W_START, W_LEN, W_COUNT, W_STAMP = range(4)
P_LEFT, P_RIGHT, P_COUNT, P_HEAD, P_DELTA, P_STAMP = range(6)
# Slots of the `counters` array.
N_PAIRS, N_NODES, HEAP_SIZE, TABLE_USED, N_TOUCHED = range(5)

EMPTY_KEY = -1
# 0x9E3779B97F4A7C15 as a signed int64: Fibonacci hashing of pair keys.
HASH_MULTIPLIER = -7046029254386353131


# ---------------------------------------------------------------- pair key -> pair index


@njit(cache=True)
def _slot(table, key):
    """Row of `table` (open addressing: rows of [key, pair index]) holding `key`, or the
    empty row where it belongs."""
    mask = table.shape[0] - 1
    h = key * HASH_MULTIPLIER
    i = (h ^ (h >> 32)) & mask
    while table[i, 0] != key and table[i, 0] != EMPTY_KEY:
        i = (i + 1) & mask
    return i


@njit(cache=True)
def _empty_table(capacity):
    table = np.empty((capacity, 2), np.int64)
    table[:, 0] = EMPTY_KEY
    return table


@njit(cache=True)
def _rehash(table, capacity):
    new_table = _empty_table(capacity)
    for i in range(table.shape[0]):
        if table[i, 0] != EMPTY_KEY:
            j = _slot(new_table, table[i, 0])
            new_table[j, 0] = table[i, 0]
            new_table[j, 1] = table[i, 1]
    return new_table


@njit(cache=True)
def _pair_index(table, pairs, counters, left, right):
    """Index of the pair (left, right), created with count 0 if new. The caller has
    reserved room in `pairs` and `table`."""
    key = (np.int64(left) << 32) | np.int64(right)
    i = _slot(table, key)
    if table[i, 0] == key:
        return table[i, 1]
    p = counters[N_PAIRS]
    counters[N_PAIRS] = p + 1
    counters[TABLE_USED] += 1
    table[i, 0] = key
    table[i, 1] = p
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


# ---------------------------------------------------------------- heap of (count, key, pair)

# Heap rows: count, pair key (left << 32 | right, so a smaller key means the smaller left
# id, then the smaller right id) and pair index. Comparing rows needs nothing but the heap.


@njit(cache=True)
def _pops_before(heap, i, j):
    if heap[i, 0] != heap[j, 0]:
        return heap[i, 0] > heap[j, 0]
    return heap[i, 1] < heap[j, 1]


@njit(cache=True)
def _swap(heap, i, j):
    for column in range(3):
        value = heap[i, column]
        heap[i, column] = heap[j, column]
        heap[j, column] = value


@njit(cache=True)
def _sift_down(heap, i, size):
    while True:
        best = i
        left = 2 * i + 1
        right = left + 1
        if left < size and _pops_before(heap, left, best):
            best = left
        if right < size and _pops_before(heap, right, best):
            best = right
        if best == i:
            return
        _swap(heap, i, best)
        i = best


@njit(cache=True)
def _set_row(heap, i, pairs, p):
    heap[i, 0] = pairs[p, P_COUNT]
    heap[i, 1] = (pairs[p, P_LEFT] << 32) | pairs[p, P_RIGHT]
    heap[i, 2] = p


@njit(cache=True)
def _heap_push(heap, counters, pairs, p):
    """Push pair p with its current count."""
    i = counters[HEAP_SIZE]
    counters[HEAP_SIZE] = i + 1
    _set_row(heap, i, pairs, p)
    while i > 0:
        parent = (i - 1) // 2
        if not _pops_before(heap, i, parent):
            return
        _swap(heap, i, parent)
        i = parent


@njit(cache=True)
def _heap_pop(heap, counters):
    size = counters[HEAP_SIZE] - 1
    counters[HEAP_SIZE] = size
    for column in range(3):
        heap[0, column] = heap[size, column]
    _sift_down(heap, 0, size)


@njit(cache=True)
def _rebuild_heap(heap, counters, pairs):
    """Replace the heap by one exact entry per pair with a positive count."""
    size = 0
    for p in range(counters[N_PAIRS]):
        if pairs[p, P_COUNT] > 0:
            _set_row(heap, size, pairs, p)
            size += 1
    counters[HEAP_SIZE] = size
    for i in range(size // 2 - 1, -1, -1):
        _sift_down(heap, i, size)


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
def _change_pair_count(table, pairs, touched, counters, left, right, delta, step):
    p = _pair_index(table, pairs, counters, left, right)
    _add_delta(pairs, touched, counters, p, delta, step)
    return p


@njit(cache=True)
def _merge_in_word(tokens, start, length, a, b, new_id, count, w, step,
                   table, pairs, nodes, touched, counters):
    """Replace every (a, b) in the word by new_id, left to right, recording the count
    changes of the pairs around each merge site. Returns the new length.

    Site rules, for ... x a b y ...: (x, a), (a, b), (b, y) lose `count`; (x', new) and
    (new, y) gain it, where x' is x or, right after another site, new itself. When y starts
    the next site, (b, y) is removed here and (new, new) added there, once.
    """
    end = start + length
    out = start
    i = start
    after_site = False
    while i < end:
        if i + 1 < end and tokens[i] == a and tokens[i + 1] == b:
            if out > start:
                if after_site:
                    p = _change_pair_count(table, pairs, touched, counters, new_id, new_id, count, step)
                else:
                    x = tokens[out - 1]
                    _change_pair_count(table, pairs, touched, counters, x, a, -count, step)
                    p = _change_pair_count(table, pairs, touched, counters, x, new_id, count, step)
                _note_word_has_pair(pairs, nodes, counters, p, w)
            _change_pair_count(table, pairs, touched, counters, a, b, -count, step)
            if i + 2 < end:
                y = tokens[i + 2]
                _change_pair_count(table, pairs, touched, counters, b, y, -count, step)
                next_is_site = y == a and i + 3 < end and tokens[i + 3] == b
                if not next_is_site:
                    p = _change_pair_count(table, pairs, touched, counters, new_id, y, count, step)
                    _note_word_has_pair(pairs, nodes, counters, p, w)
            tokens[out] = new_id
            i += 2
            after_site = True
        else:
            tokens[out] = tokens[i]
            i += 1
            after_site = False
        out += 1
    return out - start


# ---------------------------------------------------------------- entry points


@njit(cache=True)
def init_state(tokens, word_start, word_len, word_count):
    """Count every adjacent pair of the initial (byte) words; build lists and heap."""
    n_words = word_len.size
    words = np.empty((n_words, 4), np.int64)
    words[:, W_START] = word_start
    words[:, W_LEN] = word_len
    words[:, W_COUNT] = word_count
    words[:, W_STAMP] = -1
    pair_capacity = 1 << 17  # all byte pairs (65536) fit before any merge
    table = _empty_table(2 * pair_capacity)
    pairs = np.empty((pair_capacity, 6), np.int64)
    nodes = np.empty((max(1024, tokens.size), 2), np.int32)
    counters = np.zeros(8, np.int64)
    for w in range(n_words):
        start = word_start[w]
        for i in range(start, start + word_len[w] - 1):
            p = _pair_index(table, pairs, counters, tokens[i], tokens[i + 1])
            pairs[p, P_COUNT] += word_count[w]
            _note_word_has_pair(pairs, nodes, counters, p, w)
    heap = np.empty((max(1024, 2 * counters[N_PAIRS]), 3), np.int64)
    _rebuild_heap(heap, counters, pairs)
    touched = np.empty(1024, np.int64)
    return (tokens, words, table, pairs, nodes, heap, touched, counters)


@njit(cache=True)
def run_merges(state, first_new_id, first_step, n_steps, merged_pairs, merged_counts):
    """Make up to `n_steps` merges. Merge k (counting from 0 over the whole training) is
    written to merged_pairs[k] = (left id, right id) and merged_counts[k]; its new token
    id is first_new_id + k. Returns (state, merges made); fewer than n_steps means no pair
    is left."""
    tokens, words, table, pairs, nodes, heap, touched, counters = state
    made = 0
    while made < n_steps:
        best = -1
        while counters[HEAP_SIZE] > 0:
            count = heap[0, 0]
            p = heap[0, 2]
            _heap_pop(heap, counters)
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
            if words[w, W_STAMP] == step:
                continue
            words[w, W_STAMP] = step
            start = words[w, W_START]
            length = words[w, W_LEN]
            if not _contains_pair(tokens, start, length, a, b):
                continue
            if counters[N_PAIRS] + length > pairs.shape[0]:
                pairs = _grow_rows(pairs, counters[N_PAIRS] + length)
            while 2 * (counters[TABLE_USED] + length) > table.shape[0]:
                table = _rehash(table, 2 * table.shape[0])
            if counters[N_NODES] + length > nodes.shape[0]:
                nodes = _grow_rows(nodes, counters[N_NODES] + length)
            if counters[N_TOUCHED] + 3 * length > touched.size:
                touched = _grow_1d(touched, counters[N_TOUCHED] + 3 * length)
            words[w, W_LEN] = _merge_in_word(tokens, start, length, a, b, new_id, words[w, W_COUNT], w, step,
                                             table, pairs, nodes, touched, counters)

        if counters[HEAP_SIZE] + counters[N_TOUCHED] > heap.shape[0]:
            heap = _grow_rows(heap, counters[HEAP_SIZE] + counters[N_TOUCHED])
        for t in range(counters[N_TOUCHED]):
            p = touched[t]
            delta = pairs[p, P_DELTA]
            if delta != 0:
                pairs[p, P_COUNT] += delta
                if pairs[p, P_COUNT] > 0:
                    _heap_push(heap, counters, pairs, p)
        if counters[HEAP_SIZE] > 4 * counters[N_PAIRS] + 65536:
            _rebuild_heap(heap, counters, pairs)
        made += 1
    return (tokens, words, table, pairs, nodes, heap, touched, counters), made
