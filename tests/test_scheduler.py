"""CPU tests of the split-KV tile scheduler (cupymla/scheduler.py, the twin of cuda_src/metadata.cu).

The schedule is checked against its contract rather than against a second copy of the
algorithm: every 64-token block of every sequence is covered exactly once, in split order;
no part costs more than the balanced payload; num_splits is the prefix sum of the pieces; and
the accumulation slots of split sequences (the rule of cuda_src/common/params.cuh) never collide
and stay inside the 2 * num_parts slots the API allocates.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cupymla import scheduler
from cupymla import scheduler
from cupymla.scheduler import BLOCK_N, FIXED_OVERHEAD, num_parts_for, pieces, schedule, smallest_payload

PROP = settings(max_examples=150, deadline=None)


def blocks(n):
    return -(-max(int(n), 0) // BLOCK_N)


def accum_slot(num_splits, b, k):
    """cuda_src/common/params.cuh: slot of piece k of a split sequence b."""
    return 2 * (int(num_splits[b]) - b) + k


def check_schedule(seqlens, num_parts):
    """Check every property of schedule(seqlens, num_parts); return (meta, num_splits, pieces)."""
    meta, num_splits = schedule(seqlens, num_parts)
    lengths = [max(int(x), 0) for x in np.asarray(seqlens).reshape(-1)]
    batch = len(lengths)

    assert meta.dtype == np.int32 and meta.shape == (num_parts, scheduler.METADATA_COLS)
    assert num_splits.dtype == np.int32 and num_splits.shape == (batch + 1,)
    assert (meta[:, 5:] == 0).all()

    # num_splits: a prefix sum starting at 0; every sequence has at least one piece.
    assert num_splits[0] == 0
    counts = np.diff(num_splits.astype(np.int64))
    assert (counts >= 1).all()

    ps = pieces(meta, num_splits, seqlens)
    assert len(ps) == num_splits[-1]

    # Coverage: per sequence, pieces in part order have splits 0..n-1 and tile [0, L) exactly.
    by_seq = {b: [] for b in range(batch)}
    for part, b, split, start, stop in ps:
        assert 0 <= b < batch
        by_seq[b].append((part, split, start, stop))
    for b, L in enumerate(lengths):
        got = by_seq[b]
        assert len(got) == counts[b], (b, got)
        parts = [g[0] for g in got]
        assert parts == sorted(parts) and len(set(parts)) == len(parts)  # one piece per part, in order
        assert [g[1] for g in got] == list(range(len(got)))
        pos = 0
        for _, _, start, stop in got:
            assert start == pos
            assert start % BLOCK_N == 0
            pos = stop
        assert pos == L
        if L == 0:
            assert len(got) == 1 and got[0][2:] == (0, 0)
        else:
            assert all(stop > start for _, _, start, stop in got), got  # no empty piece of real work

    # Parts: cost (blocks + one overhead per piece) within the balanced payload; idle parts are marked.
    total = sum(blocks(L) for L in lengths) + FIXED_OVERHEAD * batch
    payload = -(-total // num_parts) + FIXED_OVERHEAD
    cost = [0] * num_parts
    busy = [False] * num_parts
    for part, _, _, start, stop in ps:
        cost[part] += blocks(stop) - start // BLOCK_N + FIXED_OVERHEAD
        busy[part] = True
    assert max(cost) <= payload, (cost, payload)
    # ... and within the smallest payload that places every block, which no smaller one does.
    nblocks = [blocks(L) for L in lengths]
    least = smallest_payload(nblocks, num_parts)
    share = -(-total // num_parts)
    assert max(cost) <= least <= payload
    if share <= scheduler.SEARCH_SHARE:
        assert least == share or not scheduler._deal(nblocks, num_parts, least - 1, FIXED_OVERHEAD)
    else:
        assert least == payload
    extra = int(num_splits[-1]) - batch  # pieces beyond one per sequence
    assert sum(cost) == total + FIXED_OVERHEAD * extra
    assert extra <= num_parts - 1  # a part boundary splits at most one sequence
    for p in range(num_parts):
        b0, _, b1, _, _ = (int(v) for v in meta[p, :5])
        assert busy[p] == (b0 <= b1)
        if not busy[p]:
            assert b0 > b1
    # Busy parts walk the batch in order, without gaps: each starts where the previous stopped.
    rows = [tuple(int(v) for v in meta[p, :4]) for p in range(num_parts) if busy[p]]
    assert rows[0][:2] == (0, 0)
    for (_, _, e0, eb0), (b1, bb1, _, _) in zip(rows, rows[1:]):
        assert (b1, bb1) in ((e0, eb0), (e0 + 1, 0))
    assert rows[-1][2] == batch - 1 and rows[-1][3] == blocks(lengths[-1])

    # Accumulation slots of split sequences: distinct, within [0, 2 * num_parts).
    slots = []
    for b in range(batch):
        n = int(counts[b])
        if n >= 2:
            slots += [accum_slot(num_splits, b, k) for k in range(n)]
    assert len(set(slots)) == len(slots)
    assert all(0 <= s < 2 * num_parts for s in slots)
    return meta, num_splits, ps


# --------------------------------------------------------------------------- fixed cases

def test_no_split_when_sequences_fit_parts():
    meta, num_splits, ps = check_schedule([640] * 4, 4)   # 10 blocks + 5 each, payload 20
    assert num_splits.tolist() == [0, 1, 2, 3, 4]
    assert meta[:, :5].tolist() == [[i, 0, i, 10, 0] for i in range(4)]


def test_one_long_sequence_split_in_four():
    # 100 blocks, total 105: payload 30 (25 blocks a part; 29 would place 96), not 27 + 5 = 32,
    # which dealt 27, 27, 27 and left 19 to the last part.
    meta, num_splits, ps = check_schedule([6400], 4)
    assert smallest_payload([100], 4) == 30
    assert num_splits.tolist() == [0, 4]
    assert meta[:, :5].tolist() == [[0, 0, 0, 25, 0], [0, 25, 0, 50, 1], [0, 50, 0, 75, 2], [0, 75, 0, 100, 3]]
    assert [p[3:] for p in ps] == [(0, 25 * 64), (25 * 64, 50 * 64), (50 * 64, 75 * 64), (75 * 64, 6400)]
    assert [accum_slot(num_splits, 0, k) for k in range(4)] == [0, 1, 2, 3]


def test_large_shares_keep_one_overhead_of_room():
    # Two sequences of 1000 blocks on 3 parts: share 670 > SEARCH_SHARE, so payload 675 (no search).
    assert smallest_payload([1000, 1000], 3) == 675
    meta, num_splits, ps = check_schedule([64000, 64000], 3)
    assert meta[:, :5].tolist() == [[0, 0, 0, 670, 0], [0, 670, 1, 335, 1], [1, 335, 1, 1000, 1]]


def test_partial_last_block():
    meta, num_splits, ps = check_schedule([65, 1, 63], 1)
    assert [p[3:] for p in ps] == [(0, 65), (0, 1), (0, 63)]
    assert meta[0, :5].tolist() == [0, 0, 2, 1, 0]


@pytest.mark.parametrize("seqlens", [[0], [0, 0, 0], [0, 4096, 0], [1] * 7, [100000, 0, 1, 64, 65, 128]])
@pytest.mark.parametrize("num_parts", [1, 2, 3, 7, 64, 132])
def test_fixed_cases(seqlens, num_parts):
    check_schedule(seqlens, num_parts)


def test_zero_length_sequences_get_one_empty_piece():
    meta, num_splits, ps = check_schedule([0, 0, 0], 5)
    assert num_splits.tolist() == [0, 1, 2, 3]
    assert sorted(p[1:] for p in ps) == [(0, 0, 0, 0), (1, 0, 0, 0), (2, 0, 0, 0)]
    # total 15, payload 8: one sequence per part, the last two parts idle.
    assert [meta[p, 0] > meta[p, 2] for p in range(5)] == [False, False, False, True, True]


def test_more_parts_than_work():
    meta, num_splits, ps = check_schedule([64], 300)
    idle = [p for p in range(300) if meta[p, 0] > meta[p, 2]]
    assert len(idle) == 300 - len({p[0] for p in ps}) and len(idle) > 250


def test_negative_lengths_count_as_zero():
    neg = [-5, 100, -1, 0, -100000]
    m1, s1 = schedule(neg, 3)
    m2, s2 = schedule([max(x, 0) for x in neg], 3)
    assert (m1 == m2).all() and (s1 == s2).all()
    _, _, ps = check_schedule(neg, 3)
    assert [p[3:] for p in ps if p[1] == 0] == [(0, 0)]


@pytest.mark.parametrize("seqlens", [[1], [0, 5000, 17], list(range(0, 20000, 997))])
def test_one_part_gives_one_piece_per_sequence(seqlens):
    meta, num_splits, ps = check_schedule(seqlens, 1)
    assert num_splits.tolist() == list(range(len(seqlens) + 1))
    assert [p[1:] for p in ps] == [(b, 0, 0, L) for b, L in enumerate(seqlens)]
    assert meta[0, :5].tolist() == [0, 0, len(seqlens) - 1, blocks(seqlens[-1]), 0]


def test_input_forms():
    # lists, int32 / int64 arrays, 2-D arrays are flattened
    a = schedule(np.array([300, 70], np.int32), 2)
    b = schedule([300, 70], 2)
    c = schedule(np.array([[300], [70]], np.int64), 2)
    for x in (b, c):
        assert (x[0] == a[0]).all() and (x[1] == a[1]).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="cache_seqlens"):
        schedule([], 4)
    with pytest.raises(ValueError, match="cache_seqlens"):
        schedule(np.zeros(0, np.int32), 1)
    for n in (0, -1):
        with pytest.raises(ValueError, match="num_parts"):
            schedule([10], n)


# --------------------------------------------------------------------------- properties

lengths = st.one_of(st.integers(0, 100000), st.sampled_from([0, 1, 63, 64, 65, 127, 128, 4096]))


@PROP
@given(st.lists(lengths, min_size=1, max_size=300), st.integers(1, 300))
def test_schedule_properties(seqlens, num_parts):
    check_schedule(seqlens, num_parts)


@PROP
@given(st.lists(st.integers(-1000, 300), min_size=1, max_size=60), st.integers(1, 40))
def test_schedule_properties_short_and_negative(seqlens, num_parts):
    check_schedule(seqlens, num_parts)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(0, 100000), st.integers(1, 300))
def test_schedule_properties_uniform(batch, length, num_parts):
    check_schedule([length] * batch, num_parts)


# --------------------------------------------------------------------------- num_parts_for

@pytest.mark.parametrize("num_sms, rows, h_kv, block_m, want", [
    (132, 128, 1, 64, 66),     # 2 m tiles
    (132, 64, 1, 64, 132),
    (132, 65, 1, 64, 66),
    (132, 16, 1, 64, 132),
    (108, 64, 8, 64, 13),      # 108 // 8
    (10, 200, 8, 64, 1),       # never below 1
    (1, 1, 1, 64, 1),
    (132, 17, 1, 16, 66),      # block_m 16: 2 m tiles
    (132, 32, 2, 32, 66),
])
def test_num_parts_for(num_sms, rows, h_kv, block_m, want):
    assert num_parts_for(num_sms, rows, h_kv, block_m) == want


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 200), st.integers(1, 4096), st.integers(1, 128))
def test_num_parts_for_bounds(num_sms, rows, h_kv):
    n = num_parts_for(num_sms, rows, h_kv)
    m_tiles = -(-rows // 64)
    assert n >= 1
    assert n * h_kv * m_tiles <= num_sms or n == 1   # at most one wave of CTAs
