// Hopper (sm_90a) paged MLA decode: wgmma from 128-byte-swizzled shared memory.
//
// For more than 32 query rows per kv head; decode_sm90_narrow.cu takes fewer.
// Same contract, grid and scheduler as decode_sm80.cu: one CTA per (m tile of 64 query rows,
// kv head, part); sequences the part covers whole go to `out`, pieces of split ones to
// o_accum / lse_accum for combine.cu.
//
// Two warpgroups, 256 threads. Per tile of 64 tokens:
//   1. warpgroup w computes the scores of all 64 rows for tokens 32w .. 32w+31
//      (wgmma m64n32k16, Q and K from shared memory);
//   2. the warpgroups swap row maxima through shared memory, each turns its scores into
//      probabilities P and writes them, as the A operand of the next product, to shared memory;
//   3. warpgroup w accumulates O[:, 256w .. 256w+255] += P V (wgmma m64n256k16, V read from the
//      K tile itself as an MN-major operand: V is the first 512 columns of K).
// The copy engine (TMA) fetches the next tile while the current one is multiplied (two stages;
// common/kv_tiles.cuh). The kernel needs a tensor map over k_cache (k_box_rows > 0): without one
// the host runs the portable kernel.
//
// Shared memory holds every 64-column slice of a [rows x d] operand as its own block of
// 128-byte rows, the 16-byte pieces of row r permuted by r % 8 (the hardware's 128B swizzle),
// so that wgmma reads it without bank conflicts.
//
// Compile-time configuration: MLA_FP16 (0 = bf16, 1 = fp16), MLA_HEAD_DIM (576 or 512),
// MLA_KV_SUB_ROWS (64, or 32 for pages of 32 tokens loaded a page per copy: common/kv_tiles.cuh;
// a compile-time constant because computing the layout at run time cost 2-3% at page 64).
#ifndef MLA_HEAD_DIM
#define MLA_HEAD_DIM 576
#endif
#ifndef MLA_KV_SUB_ROWS
#define MLA_KV_SUB_ROWS 64
#endif
#include "common/params.cuh"
#include "common/ptx.cuh"
#include "common/sm90.cuh"
#include "common/epilogue.cuh"
#include "common/piece.cuh"
#include "common/kv_tiles.cuh"


namespace {

constexpr int D = MLA_HEAD_DIM;
constexpr int BLOCK_M = 64;
constexpr int BLOCK_N = KV_TILE;
constexpr int THREADS = 256;
constexpr int SLICES = KV_SLICES;
constexpr int SLICE = KV_SLICE;
// Byte offset of the V operand's descriptor (MN-major, 128B swizzle) between groups of 8 tokens;
// the one between 64-column slices (LBO) depends on the tile's layout and is set at run time.
constexpr u32 V_SBO = 8 * 128;

typedef u16 elem_t;

struct __align__(1024) Smem {
    elem_t q[SLICES * SLICE];
    elem_t k[2][SLICES * SLICE];
    elem_t p[SLICE];                         // probabilities of one tile, 64 x 64
    float row_max[2][BLOCK_M];               // per warpgroup, exchanged each tile
    float row_sum[2][BLOCK_M];
    unsigned long long k_full[2];            // the tile of stage s has landed
};

}  // namespace

extern "C" __global__ void __launch_bounds__(THREADS, 1) mla_decode_sm90(const __grid_constant__ DecodeParams p) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    Smem& sm = smem_window<Smem>(smem_raw, p.k_box_rows < 16 || kv_sub_rows(p) != MLA_KV_SUB_ROWS);

    launch_dependents();
    const int m0 = blockIdx.x * BLOCK_M;
    const int g = blockIdx.y;
    const int part = blockIdx.z;
    const int wg = threadIdx.x / 128;
    const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
    const int gq = lane / 4, tq = lane % 4;

    const int* sched = p.sched + part * 8;
    const int b_begin = sched[0], b_end = sched[2];

    int row_of[2], limit_of[2];
    for (int h = 0; h < 2; ++h) row_of[h] = 16 * warp + gq + 8 * h;   // within the m tile

    if (threadIdx.x == 0) {
        mbar_init(&sm.k_full[0], 1);
        mbar_init(&sm.k_full[1], 1);
        mbar_init_fence();
    }
    int pages[KV_MAX_PAGES];  // thread 0: page numbers of the next tile to load
    int tiles_done = 0;   // tiles consumed by this CTA so far: gives each barrier's stage and phase

    // wgmma descriptors of the tile bases, made once; a k step or a stage adds a constant to the
    // address field (16-byte units), which is far cheaper than rebuilding a descriptor.
    const u64 desc_q = smem_desc(sm.q, 16, 1024);
    const u64 desc_p = smem_desc(sm.p, 16, 1024);
    // A tile may be stored as sub-tiles of R rows (common/kv_tiles.cuh): K's slice step, the
    // warpgroup's first token and V's k steps depend on R (64: the plain layout).
    constexpr int R = MLA_KV_SUB_ROWS;
    constexpr u32 k_slice_step = (R * 64 * 2) >> 4;
    const u64 desc_k0 = smem_desc(sm.k[0] + kv_offset(R, 32 * wg, 0), 16, 1024);   // this warpgroup's tokens
    const u64 desc_v0 = smem_desc(sm.k[0] + 4 * wg * R * 64, R * 128, V_SBO);      // this warpgroup's columns
    u32 v_step[BLOCK_N / 16];   // V's k steps of 16 tokens
#pragma unroll
    for (int kt = 0; kt < BLOCK_N / 16; ++kt) v_step[kt] = (kv_offset(R, 16 * kt, 0) * 2) >> 4;
    constexpr u64 STAGE_STEP = (SLICES * SLICE * 2) >> 4;

    for (int b = b_begin; b <= b_end; ++b) {
        const Piece pc = piece_of(p, sched, b);
        const int start = pc.start;
        for (int h = 0; h < 2; ++h) limit_of[h] = key_limit(p, pc, m0 + row_of[h]);
        const int num_tiles = tiles_of(p, pc, m0, BLOCK_M, BLOCK_N);

        float o[128];
#pragma unroll
        for (int i = 0; i < 128; ++i) o[i] = 0.f;
        float row_max[2] = {-inf_f(), -inf_f()};
        float row_sum[2] = {0.f, 0.f};

        const int load_end = load_end_of(p, pc);

        __syncthreads();  // the previous sequence is done with q (and barrier init is seen)
        if (num_tiles > 0) load_q<THREADS, BLOCK_M>(p, sm.q, b, g, m0);
        if (num_tiles > 0 && threadIdx.x == 0) {
            Cursor c{b, start, 0, load_end};
            fetch_pages(p, pages, c);
            issue_k_tma(p, pages, sm.k[tiles_done % 2], &sm.k_full[tiles_done % 2], g, c);
            c.t0 += BLOCK_N;
            if (num_tiles > 1) fetch_pages(p, pages, c);
        }
        cp_async_commit();

        for (int it = 0; it < num_tiles; ++it, ++tiles_done) {
            const int t0 = start + it * BLOCK_N;
            const int stage = tiles_done % 2;
            elem_t* sk = sm.k[stage];
            cp_async_wait<0>();   // q (first tile only)
            mbar_wait(&sm.k_full[stage], (tiles_done / 2) & 1);
            zero_tail<THREADS>(sk, load_end - t0, R);
            fence_proxy_async();
            __syncthreads();  // tile `it` landed for everyone; p is free
            if (it + 1 < num_tiles && threadIdx.x == 0) {
                // As early as the stage is free: with two stages, load latency is what bounds
                // the memory-bound rows (issuing after the scores instead measured 10% slower).
                Cursor c{b, t0 + BLOCK_N, 0, load_end};
                issue_k_tma(p, pages, sm.k[1 - stage], &sm.k_full[1 - stage], g, c);
                c.t0 += BLOCK_N;
                if (it + 2 < num_tiles) fetch_pages(p, pages, c);
            }
            const u64 desc_k = desc_k0 + stage * STAGE_STEP, desc_v = desc_v0 + stage * STAGE_STEP;

            // 1. Scores for this warpgroup's 32 tokens.
            float s[16];
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk) {
                const u64 q_off = ((kk / 4) * SLICE * 2 + (kk % 4) * 32) >> 4;   // slice, then 16 columns
                const u64 k_off = (kk / 4) * k_slice_step + (kk % 4) * 2;
                wgmma_m64n32k16_ss<0, 0>(s, desc_q + q_off, desc_k + k_off, kk > 0);
            }
            wgmma_commit();
            wgmma_wait<0>();
            reg_fence(s);

            // 2. Softmax: mask, this warpgroup's row maxima, swap, probabilities into p.
            float mx[2];
            mask_scores(s, mx, t0 + 32 * wg, tq, limit_of, p.scale_log2);
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
                mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
                if (tq == 0) sm.row_max[wg][row_of[h]] = mx[h];
            }
            __syncthreads();
            float rescale[2], base[2];
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float new_max = fmaxf(row_max[h], fmaxf(mx[h], sm.row_max[1 - wg][row_of[h]]));
                base[h] = new_max == -inf_f() ? 0.f : new_max;   // no key seen yet: avoid inf - inf
                rescale[h] = fast_exp2(row_max[h] - base[h]);
                row_max[h] = new_max;
                row_sum[h] *= rescale[h];
            }
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const float p0 = fast_exp2(s[4 * j + 2 * h] - base[h]);
                    const float p1 = fast_exp2(s[4 * j + 2 * h + 1] - base[h]);
                    row_sum[h] += p0 + p1;
                    *reinterpret_cast<u32*>(sm.p + swz(BLOCK_M, row_of[h], 32 * wg + 8 * j + 2 * tq)) = pack2(p0, p1);
                }
            scale_o(o, rescale);
            fence_proxy_async();
            __syncthreads();  // all of p written

            // 3. O[:, 256 wg ..] += P V.
            wgmma_fence();
#pragma unroll
            for (int kt = 0; kt < BLOCK_N / 16; ++kt) {
                // p: 16 columns (32 bytes) a step; v: 16 tokens (16 rows of 128 bytes) a step.
                wgmma_m64n256k16_ss<1>(o, desc_p + kt * 2, desc_v + v_step[kt], 1);
            }
            wgmma_commit();
            wgmma_wait<0>();
            reg_fence(o);
            // The stage is free: refill it now, two tiles ahead, so that two tiles are in
            // flight while the next one is awaited.
        }
        cp_async_wait<0>();

        // Epilogue: add up the two warpgroups' row sums, normalise, write result or partial.
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float l = row_sum[h];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            if (tq == 0) sm.row_sum[wg][row_of[h]] = l;
        }
        __syncthreads();
        const bool whole = pc.pieces <= 1;
        const int slot = whole ? 0 : accum_slot(p.num_splits, b, pc.split);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float l = sm.row_sum[0][row_of[h]] + sm.row_sum[1][row_of[h]];
            const int row = m0 + row_of[h];
            if (row >= p.rows) continue;
            float inv, lse;
            finish_row(row_max[h], l, whole, inv, lse);
            const RowOut d = row_out(p, b, g, row, whole, slot, 256 * wg + 2 * tq);
#pragma unroll
            for (int j = 0; j < 32; ++j) store_pair(d, j, o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);
            if (wg == 0 && tq == 0) *d.lse = lse;
        }
    }
}
