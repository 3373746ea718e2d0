"""Can a 32-token tile be copied as nine one-slice boxes as fast as one nine-slice box? (GPU machine)

    python3 bench/tma_boxes.py

The question behind it (bench/NOTES.md, "What would reach the issue-3 targets"): 64-token score
products need two 32-token tiles interleaved slice by slice in shared memory (slice s of a pair
= tile A's 32 rows, then tile B's), which one TMA box cannot write; nine one-slice boxes a tile
can. Every SM runs one CTA whose thread 0 streams the tiles of a paged cache like the seesaw's
producer (pages of 64 tokens in random order, two 32-token tiles a page, CTAs c and c ^ 1 on the
same pages, four tile slots of 36 KB, a slot refilled as soon as its tile landed; nothing reads
the data), either as one 5-D box a tile (64 columns x 32 rows x 9 slices, written densely) or as
nine boxes of one slice (written at an 8 KB stride, the interleaved layout). Prints TB/s into
shared memory over all SMs; the seesaw at ~3300 clocks a pair takes ~5.3 TB/s.
"""

import sys

import cupy as cp
import ml_dtypes
import numpy as np

from cupymla import tma

# Shared-memory address and mbarrier wait, also used by bench/tma_order.py.
HELPERS = r"""
__device__ __forceinline__ unsigned sa(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void wait(unsigned bar, unsigned parity) {
    unsigned done = 0;
    while (!done)
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                     "selp.u32 %0, 1, 0, p;\n}" : "=r"(done) : "r"(bar), "r"(parity) : "memory");
}
"""

SRC = HELPERS + r"""
__device__ __forceinline__ void box(unsigned dst, const void* map, unsigned bar, int row, int slice, int page) {
    asm volatile("cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4, %5, %6}], [%7];"
                 :: "r"(dst), "l"(map), "r"(0), "r"(row), "r"(slice), "r"(0), "r"(page), "r"(bar) : "memory");
}
extern "C" __global__ void stream_tiles(const unsigned long long* maps, const int* pages, int num_pages,
                                        int tiles, int mode) {
    extern __shared__ __align__(1024) unsigned char smem[];
    __shared__ __align__(8) unsigned long long bar[4];
    if (threadIdx.x != 0) return;
    const unsigned long long* map = maps + 16 * mode;   // mode 0: nine-slice box, 1: one-slice box
    asm volatile("fence.proxy.tensormap::generic.acquire.gpu [%0], 128;" :: "l"(map) : "memory");
    const unsigned bar0 = sa(bar), dst0 = (sa(smem) + 1023) & ~1023u;
    for (int i = 0; i < 4; ++i) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(bar0 + 8 * i));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    const int pos = (blockIdx.x / 2) * 7919 % num_pages;
    for (int t = 0; t < tiles + 4; ++t) {
        const int slot = t % 4;
        if (t >= 4) wait(bar0 + 8 * slot, ((t / 4) - 1) & 1);
        if (t >= tiles) continue;
        const int page = pages[(pos + t / 2) % num_pages], row = (t % 2) * 32;
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar0 + 8 * slot), "r"(36864) : "memory");
        const unsigned pair = dst0 + (slot / 2) * 73728;
        if (mode == 0) {
            box(pair + (slot % 2) * 36864, map, bar0 + 8 * slot, row, 0, page);
        } else {
#pragma unroll
            for (int s = 0; s < 9; ++s) box(pair + s * 8192 + (slot % 2) * 4096, map, bar0 + 8 * slot, row, s, page);
        }
    }
}
"""


def main():
    dev = cp.cuda.Device()
    sms = dev.attributes["MultiProcessorCount"]
    num_pages = 16384                                   # 1.2 GB of cache: read from DRAM
    k = cp.full((num_pages, 64, 1, 576), 0x3F80, dtype=cp.uint16).view(np.dtype(ml_dtypes.bfloat16))
    sp, sr, sh = (int(s) for s in k.strides[:3])
    dims, strides = [64, 64, 9, 1, num_pages], [sr, 128, sh, sp]
    maps = []
    for slices in (9, 1):
        words = tma._encode_tiled(k, dims, strides, [64, 32, slices, 1, 1])
        if words is None:
            print("no tensor map (cuda-bindings missing or the driver refused)")
            return 1
        maps += words
    maps = cp.asarray(np.array(maps, dtype=np.uint64))
    pages = cp.asarray(np.random.default_rng(0).permutation(num_pages).astype(np.int32))
    kern = cp.RawKernel(SRC, "stream_tiles", options=("-std=c++17",))
    smem = 2 * 73728 + 1024
    kern.max_dynamic_shared_size_bytes = smem
    tiles = 512
    print(f"{'copies a tile':>14s} {'TB/s':>6s}")
    for rnd in range(2):
        for mode, label in ((0, "1 (9 slices)"), (1, "9 (1 slice)")):
            args = (maps, pages, np.int32(num_pages), np.int32(tiles), np.int32(mode))
            kern((sms,), (32,), args, shared_mem=smem)
            a, b = cp.cuda.Event(), cp.cuda.Event()
            a.record()
            for _ in range(5):
                kern((sms,), (32,), args, shared_mem=smem)
            b.record()
            b.synchronize()
            s = cp.cuda.get_elapsed_time(a, b) / 1e3 / 5
            print(f"{label:>14s} {sms * tiles * 36864 / s / 1e12:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
