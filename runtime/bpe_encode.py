"""Applying ranked BPE merges to pre-tokens, the way GPT-2's encoder does.

GPT-2's rule for one pre-token: start from its UTF-8 bytes; while some adjacent pair has
a merge, take the pair with the lowest rank and merge all of its occurrences in one
left-to-right pass. Short pieces use that loop directly. Long ones (long runs of spaces or
dashes make the loop quadratic) use a linked list and a heap of (rank, position), which
gives the same result because every merge's operands exist before it (checked when a
tokenizer is built), so a merge never creates a pair of lower rank than its own.
"""

import heapq

_LONG_PIECE_BYTES = 48
_NO_RANK = 1 << 62


class PieceEncoder:
    """BPE-encodes pre-tokens, remembering the ids of recently seen pre-tokens."""

    def __init__(self, byte_ids, merges, cache_size=1 << 17):
        """byte_ids[b]: the id of the one-byte token b; merges: (left id, right id, result
        id) in rank order."""
        self._byte_ids = tuple(byte_ids)
        self._ranks = {(left, right): (rank, result) for rank, (left, right, result) in enumerate(merges)}
        self._cache = {}
        self._cache_size = cache_size

    def extend_with_ids(self, out, pieces):
        """Append the ids of each pre-token in `pieces` to the list `out`."""
        get = self._cache.get
        extend = out.extend
        for piece in pieces:
            ids = get(piece)
            if ids is None:
                ids = self._encode_uncached(piece)
            extend(ids)

    def _encode_uncached(self, piece):
        byte_ids = self._byte_ids
        ids = [byte_ids[b] for b in piece.encode("utf-8")]
        if len(ids) > _LONG_PIECE_BYTES:
            ids = tuple(merge_long(ids, self._ranks))
        else:
            ids = tuple(merge_short(ids, self._ranks))
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[piece] = ids
        return ids


def merge_short(ids, ranks):
    """GPT-2's loop: merge every occurrence of the lowest-ranked pair until none is left."""
    while len(ids) > 1:
        best_rank = _NO_RANK
        best = None
        for pair in zip(ids, ids[1:]):
            found = ranks.get(pair)
            if found is not None and found[0] < best_rank:
                best_rank, merged = found
                best = pair
        if best is None:
            break
        left, right = best
        out = []
        i = 0
        n = len(ids)
        while i < n:
            if ids[i] == left and i + 1 < n and ids[i + 1] == right:
                out.append(merged)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out
    return ids


def merge_long(ids, ranks):
    """Same result as merge_short in O(n log n): symbols in a linked list, candidate
    merges in a heap ordered by (rank, position); stale entries are skipped."""
    ids = list(ids)
    n = len(ids)
    following = list(range(1, n + 1))
    following[-1] = -1
    preceding = list(range(-1, n - 1))
    alive = [True] * n
    heap = []
    for i in range(n - 1):
        found = ranks.get((ids[i], ids[i + 1]))
        if found is not None:
            heap.append((found[0], i))
    heapq.heapify(heap)
    while heap:
        rank, i = heapq.heappop(heap)
        if not alive[i]:
            continue
        j = following[i]
        if j == -1:
            continue
        found = ranks.get((ids[i], ids[j]))
        if found is None or found[0] != rank:
            continue
        ids[i] = found[1]
        alive[j] = False
        k = following[j]
        following[i] = k
        if k != -1:
            preceding[k] = i
            found = ranks.get((ids[i], ids[k]))
            if found is not None:
                heapq.heappush(heap, (found[0], i))
        p = preceding[i]
        if p != -1:
            found = ranks.get((ids[p], ids[i]))
            if found is not None:
                heapq.heappush(heap, (found[0], p))
    out = []
    i = 0
    while i != -1:
        out.append(ids[i])
        i = following[i]
    return out
