"""The split-KV tile scheduler, in NumPy.

This is the twin of ``cuda_src/metadata.cu``: the same algorithm, step for step, so
tests can check the GPU kernel's output against it and reason about it on a CPU.

Each sequence's keys are cut into blocks of ``BLOCK_N`` tokens. The blocks of all
sequences, in batch order, are dealt out to ``num_parts`` parts of near-equal
payload, where every (piece of a) sequence also costs ``FIXED_OVERHEAD`` blocks
(its softmax epilogue and output write). A part may start or end in the middle of
a sequence; such a sequence is then *split* and its partial results are merged by
the combine step.

Output (int32, FlashMLA's layout):

``tile_scheduler_metadata[num_parts, 8]``: for part ``p``
    ``[begin_batch, begin_block, end_batch, end_block, begin_split, 0, 0, 0]``.
    The part covers batches ``begin_batch ..= end_batch``; in ``begin_batch`` it starts at
    block ``begin_block``, in ``end_batch`` it stops before block ``end_block``;
    batches strictly between are whole. ``begin_split`` is the split index of
    its piece of ``begin_batch`` (the other batches' pieces have split index 0).
    A part with ``begin_batch > end_batch`` has no work.
``num_splits[batch + 1]``: exclusive prefix sum of the number of pieces of each
    sequence; sequence ``i`` has ``num_splits[i+1] - num_splits[i]`` pieces, and its
    piece ``k`` writes partial row ``num_splits[i] + k`` of the split buffers.
"""

from __future__ import annotations

import numpy as np

BLOCK_N = 64          # tokens per scheduling block
FIXED_OVERHEAD = 5    # cost of one sequence piece's epilogue, in blocks
METADATA_COLS = 8


def num_parts_for(num_sms: int, rows_per_kv_head: int, h_kv: int, block_m: int = 64) -> int:
    """How many parts to deal the blocks into: one CTA per (part, m-tile, kv head) per SM."""
    m_tiles = -(-rows_per_kv_head // block_m)
    return max(num_sms // (h_kv * m_tiles), 1)


def _deal(nblocks, num_parts: int, payload: int, fixed_overhead: int, meta=None, num_splits=None) -> bool:
    """Deal the blocks of all sequences, in batch order, to ``num_parts`` parts of ``payload``
    (each piece counting ``fixed_overhead`` more); fill ``meta`` and ``num_splits`` (see the
    module docstring) when given. Returns whether every block was placed."""
    batch = len(nblocks)
    idx = blk = split = cum = 0
    for p in range(num_parts):
        begin = (idx, blk, split)
        remain = payload
        while idx < batch:
            left = int(nblocks[idx]) - blk
            if remain >= left + fixed_overhead:
                # The rest of this sequence fits: finish it here.
                remain -= left + fixed_overhead
                cum += split + 1
                if num_splits is not None:
                    num_splits[idx + 1] = cum
                idx += 1
                blk = 0
                split = 0
            else:
                # Take what fits of it; the next part continues it as a new piece.
                if remain > fixed_overhead:
                    blk += remain - fixed_overhead
                    split += 1
                break
        if meta is not None:
            if blk > 0:
                end_batch, end_block = idx, blk
            else:
                end_batch = idx - 1
                end_block = int(nblocks[idx - 1]) if idx > 0 else 0
            meta[p, :5] = (begin[0], begin[1], end_batch, end_block, begin[2])
    return idx == batch


SEARCH_SHARE = 128   # largest even share (blocks) for which smallest_payload looks below share + overhead


def smallest_payload(nblocks, num_parts: int, fixed_overhead: int = FIXED_OVERHEAD) -> int:
    """The per-part payload (blocks, each piece counting ``fixed_overhead`` more) to deal with.

    The even share ceil(total / num_parts) plus one overhead always places every block (room for
    the piece a part boundary adds), but fills every part to about that and leaves the last ones
    short or idle. Where the share is at most SEARCH_SHARE blocks (one overhead is then 4% of a
    part or more), the first of the share and the next ``fixed_overhead - 1`` values whose deal
    places every block is taken instead: b32 h_q128 1K -1.6%, h_q32 8K -1.3% on the H200, for
    a metadata kernel up to ~70% slower (metadata.cu tries the candidates on as many lanes at
    once; bench/NOTES.md, session 10)."""
    total = int(np.sum(nblocks)) + fixed_overhead * len(nblocks)
    share = -(-total // num_parts)
    if share <= SEARCH_SHARE:
        for payload in range(share, share + fixed_overhead):
            if _deal(nblocks, num_parts, payload, fixed_overhead):
                return payload
    return share + fixed_overhead


def schedule(cache_seqlens, num_parts: int, fixed_overhead: int = FIXED_OVERHEAD):
    """Return ``(tile_scheduler_metadata, num_splits)`` as int32 NumPy arrays. ``fixed_overhead``
    (blocks a piece costs beyond its own) is metadata.cu's FIXED_OVERHEAD; another value is for
    trying schedules (bench/fixed_cost.py), passed to the decode as the classic pair."""
    # Negative lengths count as empty, as in the kernel.
    seqlens = np.maximum(np.asarray(cache_seqlens, dtype=np.int64).reshape(-1), 0)
    batch = seqlens.shape[0]
    if batch < 1:
        raise ValueError("cache_seqlens: expected at least one sequence, got 0")
    if num_parts < 1:
        raise ValueError(f"num_parts: expected >= 1, got {num_parts}")
    nblocks = (seqlens + BLOCK_N - 1) // BLOCK_N
    payload = smallest_payload(nblocks, num_parts, fixed_overhead)

    meta = np.zeros((num_parts, METADATA_COLS), dtype=np.int32)
    num_splits = np.zeros(batch + 1, dtype=np.int32)
    if not _deal(nblocks, num_parts, payload, fixed_overhead, meta, num_splits):
        # cannot happen: smallest_payload checked that this payload places every block
        raise AssertionError("scheduler left blocks unassigned")
    return meta, num_splits


def pieces(meta, num_splits, cache_seqlens):
    """Expand the schedule into ``(part, batch, split, token_begin, token_end)`` tuples.

    This is how the decode kernel reads the metadata; tests use it to check coverage.
    """
    seqlens = np.maximum(np.asarray(cache_seqlens, dtype=np.int64).reshape(-1), 0)
    out = []
    for p, row in enumerate(np.asarray(meta)):
        b0, blk0, b1, blk1, split0 = (int(v) for v in row[:5])
        for b in range(b0, b1 + 1):
            start = blk0 * BLOCK_N if b == b0 else 0
            stop = min(blk1 * BLOCK_N, int(seqlens[b])) if b == b1 else int(seqlens[b])
            out.append((p, b, split0 if b == b0 else 0, start, stop))
    return out
