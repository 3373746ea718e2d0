// get_mla_metadata on the GPU: the twin of cupymla/scheduler.py (same algorithm, step for
// step; tests compare the two). One warp, so no host synchronisation is needed and the call
// can be captured in a CUDA graph: the lanes stage the block counts in shared memory and sum
// them, five lanes try candidate payloads at once (smallest_payload), lane 0 deals the blocks
// out sequentially, and the lanes copy the result out. The sequential loops touch only shared
// memory (a global load or store per step made it 20-60 us); batches or part counts too large
// to stage fall back to global memory. GPU time on the H200 (ncu): 14 us at b = 1, 29 us at
// b = 128, 360 us at b = 3072 dealing only; ~22 / ~49 us where the payload is searched.
#include "common/params.cuh"

#define BLOCK_N 64
#ifndef FIXED_OVERHEAD
#define FIXED_OVERHEAD 5    // blocks a sequence piece costs beyond its own (scheduler.py has the same)
#endif
static_assert(FIXED_OVERHEAD < 32, "smallest payload: one lane per candidate");
#define SEARCH_SHARE 128    // scheduler.py has the same
#define STAGED_SEQS 3072    // 44 KB of static shared memory in all
#define STAGED_PARTS 1024
#define PART_FIELDS 5       // begin_batch, begin_block, end_batch, end_block, begin_split (+3 zeros)

__device__ __forceinline__ int blocks_of(const MetadataParams& p, const int* staged, int i) {
    return i < STAGED_SEQS ? staged[i] : (max(p.seqlens[i], 0) + BLOCK_N - 1) / BLOCK_N;
}

// MLA_MIN_PAYLOAD (A/B only; scheduler.py has 1): 1 deals with the smallest payload that places
// every block (scheduler.smallest_payload), 0 with the even share plus one overhead.
#ifndef MLA_MIN_PAYLOAD
#define MLA_MIN_PAYLOAD 1
#endif

// One part of the deal (scheduler._deal's inner loop): from sequence idx, block blk (piece
// `split` of it), give the part `payload`, finishing every sequence that fits (on_finish(idx,
// split) for each) and taking what fits of the next, which the next part goes on with.
template <typename OnFinish>
__device__ __forceinline__ void deal_part(const MetadataParams& p, const int* nblocks, int payload, int& idx, int& blk,
                                          int& split, OnFinish on_finish) {
    int remain = payload;
    while (idx < p.batch) {
        const int left = blocks_of(p, nblocks, idx) - blk;
        if (remain >= left + FIXED_OVERHEAD) {   // the rest of this sequence fits here
            remain -= left + FIXED_OVERHEAD;
            on_finish(idx, split);
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
}

// Whether dealing with this payload places every block (scheduler._deal without outputs).
__device__ bool covers(const MetadataParams& p, const int* nblocks, int payload) {
    int idx = 0, blk = 0, split = 0;
    for (int part = 0; part < p.num_parts && idx < p.batch; ++part)
        deal_part(p, nblocks, payload, idx, blk, split, [](int, int) {});
    return idx == p.batch;
}

extern "C" __global__ void __launch_bounds__(32) mla_metadata(MetadataParams p) {
    __shared__ int nblocks[STAGED_SEQS];
    __shared__ int splits_s[STAGED_SEQS + 1];
    __shared__ int parts_s[STAGED_PARTS * PART_FIELDS];
    const int lane = threadIdx.x;
    const bool staged_out = p.batch <= STAGED_SEQS && p.num_parts <= STAGED_PARTS;

    int total = 0;
    for (int i = lane; i < p.batch; i += 32) {
        const int nb = (max(p.seqlens[i], 0) + BLOCK_N - 1) / BLOCK_N;
        if (i < STAGED_SEQS) nblocks[i] = nb;
        total += nb + FIXED_OVERHEAD;
    }
    for (int off = 16; off > 0; off >>= 1) total += __shfl_xor_sync(0xffffffffu, total, off);
    __syncwarp();   // nblocks staged for every lane

    // The payload (scheduler.smallest_payload): the even share plus one overhead, which always
    // places every block, or for shares up to SEARCH_SHARE the first of share + 0 .. overhead - 1
    // that does: lane i tries share + i, all at once.
    const int share = (total + p.num_parts - 1) / p.num_parts;
    const bool fits = MLA_MIN_PAYLOAD && share <= SEARCH_SHARE && lane < FIXED_OVERHEAD &&
                      covers(p, nblocks, share + lane);
    const unsigned fit_lanes = __ballot_sync(0xffffffffu, fits) | (1u << FIXED_OVERHEAD);
    const int payload = share + __ffs(fit_lanes) - 1;

    if (lane == 0) {
        int* splits = staged_out ? splits_s : p.num_splits;
        int idx = 0, blk = 0, split = 0, cum = 0;
        splits[0] = 0;
        for (int part = 0; part < p.num_parts; ++part) {
            const int begin_idx = idx, begin_blk = blk, begin_split = split;
            deal_part(p, nblocks, payload, idx, blk, split, [&](int i, int pieces_before) {
                cum += pieces_before + 1;
                splits[i + 1] = cum;
            });
            int end_idx, end_blk;
            if (blk > 0) {
                end_idx = idx;
                end_blk = blk;
            } else {
                end_idx = idx - 1;
                end_blk = idx > 0 ? blocks_of(p, nblocks, idx - 1) : 0;
            }
            const int fields[PART_FIELDS] = {begin_idx, begin_blk, end_idx, end_blk, begin_split};
            if (staged_out) {
                for (int f = 0; f < PART_FIELDS; ++f) parts_s[part * PART_FIELDS + f] = fields[f];
            } else {
                int* row = p.sched + part * 8;
                for (int f = 0; f < 8; ++f) row[f] = f < PART_FIELDS ? fields[f] : 0;
            }
        }
    }
    __syncwarp();
    if (!staged_out) return;
    for (int i = lane; i <= p.batch; i += 32) p.num_splits[i] = splits_s[i];
    for (int i = lane; i < p.num_parts * 8; i += 32) {
        const int part = i / 8, f = i % 8;
        p.sched[i] = f < PART_FIELDS ? parts_s[part * PART_FIELDS + f] : 0;
    }
}
