"""The Hopper building blocks of cuda_src/common/sm90.cuh on their own: wgmma with 128-byte
swizzled shared-memory operands, K-major (Q, K, P) and MN-major (V), against NumPy.
Runs only on compute capability 9.0 (wgmma needs sm_90a)."""

import os
import tempfile

import numpy as np
import pytest

from cupymla import kernels

pytestmark = pytest.mark.gpu

PROBE = r'''
#include "common/ptx.cuh"
#include "common/sm90.cuh"
// Store a row-major [rows x 64] tile of 16-bit values in the 128-byte-swizzled layout:
// 16-byte piece j of row r lands at piece j ^ (r % 8) of that row.
__device__ void put_sw128(u16* dst, const u16* src, int rows, int cols, int ld) {
    for (int i = threadIdx.x; i < rows * cols / 8; i += blockDim.x) {
        const int r = i / (cols / 8), p = i % (cols / 8);
        const int chunk = p / 8, j = p % 8;
        const uint4 v = *reinterpret_cast<const uint4*>(src + r * ld + p * 8);
        *reinterpret_cast<uint4*>(dst + chunk * rows * 64 + r * 64 + ((j ^ (r & 7)) * 8)) = v;
    }
}
extern "C" __global__ void probe(const u16* a, const u16* b, float* c, int mode, int lbo, int sbo) {
    __shared__ __align__(1024) u16 sa[64 * 64];
    __shared__ __align__(1024) u16 sb[64 * 256];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    put_sw128(sa, a, 64, 64, 64);
    if (mode == 0) put_sw128(sb, b, 32, 64, 64);    // B = K: 32 tokens x 64 dims
    else put_sw128(sb, b, 64, 256, 256);            // B = V: 64 tokens x 256 columns
    fence_proxy_async();
    __syncthreads();
    if (mode == 0) {
        float d[16];
        wgmma_fence();
        for (int k = 0; k < 4; ++k)
            wgmma_m64n32k16_ss<0, 0>(d, smem_desc(sa + k * 16, 16, 1024), smem_desc(sb + k * 16, 16, 1024), k > 0);
        wgmma_commit(); wgmma_wait<0>(); reg_fence(d);
        for (int j = 0; j < 4; ++j) for (int h = 0; h < 2; ++h) for (int e = 0; e < 2; ++e)
            c[(16 * warp + lane / 4 + 8 * h) * 32 + 8 * j + 2 * (lane % 4) + e] = d[4 * j + 2 * h + e];
    } else {
        float d[128];
        wgmma_fence();
        for (int k = 0; k < 4; ++k)
            wgmma_m64n256k16_ss<1>(d, smem_desc(sa + k * 16, 16, 1024), smem_desc(sb + k * 16 * 64, lbo, sbo), k > 0);
        wgmma_commit(); wgmma_wait<0>(); reg_fence(d);
        for (int j = 0; j < 32; ++j) for (int h = 0; h < 2; ++h) for (int e = 0; e < 2; ++e)
            c[(16 * warp + lane / 4 + 8 * h) * 256 + 8 * j + 2 * (lane % 4) + e] = d[4 * j + 2 * h + e];
    }
}
'''


def _probe_module():
    import cupy as cp
    from cupy.cuda import nvrtc
    if cp.cuda.Device().compute_capability != "90":
        pytest.skip("wgmma needs compute capability 9.0")
    prog = nvrtc.createProgram(PROBE, "probe.cu", [], [])
    nvrtc.compileProgram(prog, ["-arch=sm_90a", "--std=c++17", f"-I{kernels.cuda_src_dir()}", "-default-device",
                                "-DMLA_FP16=0"])
    fd, path = tempfile.mkstemp(suffix=".cubin")
    with os.fdopen(fd, "wb") as f:
        f.write(nvrtc.getCUBIN(prog))
    return cp.RawModule(path=path).get_function("probe")


def _bf16(x):
    import ml_dtypes
    return x.astype(ml_dtypes.bfloat16)


def run_probe(mode, lbo=0, sbo=0):
    import cupy as cp
    fn = _probe_module()
    rng = np.random.default_rng(mode)
    a = _bf16(rng.standard_normal((64, 64)))
    b = _bf16(rng.standard_normal((32, 64) if mode == 0 else (64, 256)))
    c = cp.full((64, 32 if mode == 0 else 256), np.nan, dtype=np.float32)
    fn((1,), (128,), (cp.asarray(a).view(np.uint16), cp.asarray(b).view(np.uint16), c,
                      np.int32(mode), np.int32(lbo), np.int32(sbo)))
    want = a.astype(np.float64) @ (b.astype(np.float64).T if mode == 0 else b.astype(np.float64))
    return c.get(), want


def test_wgmma_kmajor_q_times_k():
    got, want = run_probe(0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_wgmma_mn_major_p_times_v():
    from_header = dict(lbo=8192, sbo=1024)   # what decode_sm90.cu uses for V
    got, want = run_probe(1, **from_header)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("page_size, sub_tiles, want", [
    (16, True, (4, 16)), (32, False, (4, 32)), (32, True, (5, 32)), (64, False, (5, 64)), (256, True, (5, 64))])
def test_k_cache_map_shape(page_size, sub_tiles, want):
    """Pages of 64 tokens or more get the 5-D map whose one box is a whole tile (the kernels'
    fast path), pages of 32 too where the kernel takes sub-tiles (decode_sm90.cu); the rest the
    4-D one. Decode correctness with each is in test_gpu_decode (page sizes 16 to 256)."""
    import cupy as cp
    from cupymla import tma
    if cp.cuda.Device().compute_capability != "90":
        pytest.skip("tensor maps are used on compute capability 9.0")
    pytest.importorskip("cuda.bindings")
    k_cache = cp.zeros((3, page_size, 1, 576), dtype=np.uint16).view(np.dtype(_bf16(np.zeros(1)).dtype))
    made = tma.k_cache_map(k_cache, tma.box_rows_for(page_size), sub_tiles)
    assert made is not None and len(made[0]) == 16
    assert (made[1], tma.box_rows_for(page_size)) == want
