// get_mla_metadata on the GPU: the twin of cupymla/scheduler.py (same algorithm, step for
// step; tests compare the two). One warp: the lanes stage the block counts in shared memory
// and sum them, lane 0 then deals the blocks out sequentially from shared memory (a global
// load per step made this 20-50 us at batch 128), so no host synchronisation is needed and
// the call can be captured in a CUDA graph.
#include "common/params.cuh"

#define BLOCK_N 64
#define FIXED_OVERHEAD 5
#define STAGED 4096   // sequences whose block counts are kept in shared memory; the rest are re-read

__device__ __forceinline__ int blocks_of(const MetadataParams& p, const int* staged, int i) {
    return i < STAGED ? staged[i] : (max(p.seqlens[i], 0) + BLOCK_N - 1) / BLOCK_N;
}

extern "C" __global__ void __launch_bounds__(32) mla_metadata(MetadataParams p) {
    __shared__ int staged[STAGED];
    const int lane = threadIdx.x;
    int total = 0;
    for (int i = lane; i < p.batch; i += 32) {
        const int nb = (max(p.seqlens[i], 0) + BLOCK_N - 1) / BLOCK_N;
        if (i < STAGED) staged[i] = nb;
        total += nb + FIXED_OVERHEAD;
    }
    for (int off = 16; off > 0; off >>= 1) total += __shfl_xor_sync(0xffffffffu, total, off);
    __syncwarp();
    if (lane != 0) return;

    const int payload = (total + p.num_parts - 1) / p.num_parts + FIXED_OVERHEAD;
    int idx = 0, blk = 0, split = 0, cum = 0;
    p.num_splits[0] = 0;
    for (int part = 0; part < p.num_parts; ++part) {
        const int begin_idx = idx, begin_blk = blk, begin_split = split;
        int remain = payload;
        while (idx < p.batch) {
            const int left = blocks_of(p, staged, idx) - blk;
            if (remain >= left + FIXED_OVERHEAD) {   // the rest of this sequence fits here
                remain -= left + FIXED_OVERHEAD;
                cum += split + 1;
                p.num_splits[idx + 1] = cum;
                ++idx;
                blk = 0;
                split = 0;
            } else {                                 // take what fits; the next part goes on
                if (remain > FIXED_OVERHEAD) {
                    blk += remain - FIXED_OVERHEAD;
                    ++split;
                }
                break;
            }
        }
        int end_idx, end_blk;
        if (blk > 0) {
            end_idx = idx;
            end_blk = blk;
        } else {
            end_idx = idx - 1;
            end_blk = idx > 0 ? blocks_of(p, staged, idx - 1) : 0;
        }
        int* row = p.sched + part * 8;
        row[0] = begin_idx; row[1] = begin_blk; row[2] = end_idx; row[3] = end_blk;
        row[4] = begin_split; row[5] = 0; row[6] = 0; row[7] = 0;
    }
}
