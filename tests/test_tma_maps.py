"""cupymla.tma without a GPU: the views and boxes the tensor maps are asked for (the driver's
encode is replaced by a recorder), and the query layouts the q map refuses."""

import re
from types import SimpleNamespace

import ml_dtypes
import numpy as np
import pytest

from cupymla import kernels, tma

BF16 = np.dtype(ml_dtypes.bfloat16)


def fake_array(shape, strides_elems, ptr=0x7F0000000000, dtype=BF16):
    return SimpleNamespace(shape=shape, strides=tuple(s * dtype.itemsize for s in strides_elems), dtype=dtype,
                           data=SimpleNamespace(ptr=ptr), device=SimpleNamespace(id=0))


@pytest.fixture
def recorded(monkeypatch):
    calls = []

    def encode(arr, dims, strides, box, base=None):
        calls.append((dims, strides, box, base))
        return [len(calls)] * 16

    monkeypatch.setattr(tma, "_encode_tiled", encode)
    monkeypatch.setattr(tma, "_CACHE", type(tma._CACHE)())
    return calls


@pytest.mark.parametrize("b, s_q, h_q, h_kv, box", [
    (3, 1, 128, 1, [64, 64, 1, 1, 1]),    # 64 heads of one query position a tile
    (3, 2, 256, 2, [64, 64, 1, 1, 1]),
    (3, 5, 16, 1, [64, 16, 4, 1, 1]),     # 16 heads of 4 positions (the last tile reads past s_q: zeros)
    (3, 3, 32, 1, [64, 32, 2, 1, 1]),
    (2, 2, 64, 1, [64, 64, 1, 1, 1]),
])
def test_q_map_view_and_box(recorded, b, s_q, h_q, h_kv, box):
    hpk = h_q // h_kv
    # padded heads (stride 640 elements) and a padded batch, as a strided view would have
    sh, ss, sb = 640, 640 * h_q, 640 * h_q * s_q + 64
    q = fake_array((b, s_q, h_q, 576), (sb, ss, sh, 1))
    assert tma.q_map(q, h_kv) == [1] * 16
    dims, strides, got_box, base = recorded[0]
    # no pointer in the map: 16-byte steps from a fixed base reach any q (lo + 2^31 hi, 2^49 bytes)
    assert base == tma.Q_MAP_BASE and dims == [576, hpk, s_q, 2 ** 31, 2 ** 14]
    assert strides == [2 * sh, 2 * ss, 16, 2 ** 35]   # bytes, for the dims after the first
    assert got_box == box and np.prod(got_box) == 64 * 64   # one 64-column slice of 64 rows
    # one map per layout: another pointer, batch size or kv-head count with the same heads per kv
    # head encodes nothing new
    assert tma.q_map(fake_array((b + 5,) + q.shape[1:], (sb, ss, sh, 1), ptr=0x7F0000100000), h_kv) == [1] * 16
    assert len(recorded) == 1


def test_q_map_base_matches_the_kernels():
    header = kernels.cuda_src_dir() / "common" / "params.cuh"
    found = re.search(r"constexpr unsigned long long Q_MAP_BASE = (\d+);", header.read_text())
    assert found and int(found.group(1)) == tma.Q_MAP_BASE


@pytest.mark.parametrize("h_q, h_kv", [(96, 1), (24, 1), (48, 2), (80, 1)])
def test_q_map_refuses_tiles_that_are_not_a_box(recorded, h_q, h_kv):
    """Heads per kv head neither a multiple nor a divisor of 64: an m tile's rows straddle query
    positions unevenly, so no box covers them; the kernel loads q with cp.async."""
    q = fake_array((2, 3, h_q, 576), (3 * h_q * 576, h_q * 576, 576, 1))
    assert tma.q_map(q, h_kv) is None and recorded == []
