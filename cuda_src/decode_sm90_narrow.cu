// Hopper (sm_90a) paged MLA decode for few query rows per kv head (at most 32: h_q / h_kv = 16 or
// 32 at s_q = 1, the memory-bound shapes of tensor-parallel serving). decode_sm90.cu takes more.
//
// decode_sm90.cu multiplies 64 query rows at a time (the M of wgmma): with 16 rows, three quarters
// of its tensor work is padding, and it reads Q from shared memory once per 32 tokens. Here the
// products are transposed, so that the 64 rows of a wgmma are tokens and the few query rows are
// its N (BLOCK_M, 16 or 32):
//     S^T [64 tokens x N] = K [64 x d] . Q^T [d x N]        (wgmma m64nNk16, A and B K-major)
//     O^T [512 x N]     += V^T [512 x 64] . P^T [64 x N]     (8 of them, one per 64 columns of V;
//                                                            A = V^T read MN-major from the K tile)
// Every K/V byte is read from shared memory about once per product, and one warpgroup (128
// threads, the consumers) holds O^T in registers (8 x N/2 floats a thread). Softmax runs down the
// columns: a query row's maximum and sum are reduced over the 64 tokens of the tile (shuffles,
// then the 4 warps through shared memory). The exponentials' base moves only when a column's
// maximum climbs more than LAZY_TAU above it, so most tiles rescale nothing.
//
// Same contract, grid and scheduler as the other decode kernels (one CTA per (m tile, kv head,
// part); split sequences write pieces for combine.cu). The copy engine (TMA) fetches the next
// tiles while the current one is multiplied (two stages, 128-byte L2 promotion: session 12),
// across sequence boundaries too (common/kv_tiles.cuh). A fifth warp (the producer) asks for
// each tile as soon as the consumers have released its stage on an mbarrier, so no consumer waits
// while a copy is being asked for, and a full tile needs no CTA barrier but the softmax's two
// (bench/NOTES.md, session 13: the refill had cost ~460 clocks of a ~4000-clock tile on warp 0).
//
// Compile-time configuration: MLA_FP16 (0 = bf16, 1 = fp16), MLA_HEAD_DIM (576 or 512),
// MLA_BLOCK_M (16 or 32). Diagnostics (timing only): MLA_FAKE_KV_LOAD (no copies: every tile
// "lands" at once with stale data, the math alone), MLA_PHASE_CLOCKS (common/clocks.cuh).
#ifndef MLA_HEAD_DIM
#define MLA_HEAD_DIM 576
#endif
#include "common/params.cuh"
#include "common/ptx.cuh"
#include "common/sm90.cuh"
#include "common/epilogue.cuh"
#include "common/piece.cuh"
#include "common/kv_tiles.cuh"
#include "common/clocks.cuh"

#ifndef MLA_BLOCK_M
#define MLA_BLOCK_M 16
#endif
#ifndef MLA_FAKE_KV_LOAD
#define MLA_FAKE_KV_LOAD 0
#endif

namespace {

constexpr int D = MLA_HEAD_DIM;
constexpr int BLOCK_M = MLA_BLOCK_M;         // query rows: the N of every wgmma
constexpr int BLOCK_N = KV_TILE;             // tokens a tile: the M of every wgmma
constexpr int CONSUMERS = 128;              // one warpgroup does the math
constexpr int THREADS = CONSUMERS + 32;      // and a fifth warp asks for the tiles (kernels.py mirrors it)
constexpr float LAZY_TAU = 8.f;              // P <= 2^8: far from overflow in bf16/fp16 and the fp32 sums
constexpr int SLICES = KV_SLICES;
constexpr int SLICE = KV_SLICE;
constexpr int Q_SLICE = BLOCK_M * 64;        // elements in one slice of Q
constexpr int ACC = BLOCK_M / 2;             // accumulator registers of one m64nN product
constexpr int COLS = BLOCK_M / 4;            // query rows (accumulator columns) a thread holds
static_assert(BLOCK_M == 16 || BLOCK_M == 32, "MLA_BLOCK_M must be 16 or 32");

typedef u16 elem_t;

struct __align__(1024) Smem {
    elem_t k[2][SLICES * SLICE];             // two stages of 64 tokens (V is the first 512 columns)
    elem_t q[SLICES * Q_SLICE];
    elem_t p[Q_SLICE];                       // P^T of one tile, BLOCK_M x 64 tokens, K-major
    float col_max[4][BLOCK_M];               // per warp, exchanged each tile
    float col_sum[4][BLOCK_M];
    unsigned long long k_full[2];            // the tile of stage s has landed
    unsigned long long k_empty[2];           // every consumer is done with stage s
};

// Accumulator layout of m64nN (tokens x query rows): thread (warp, lane = 4 gq + tq) holds tokens
// 16 warp + gq + 8 h (h < 2) of the query rows (columns) 8 j + 2 tq + e (e < 2). A thread's
// columns are numbered c = 2 j + e < COLS; element [acc_index(c, h)].
__device__ __forceinline__ int col_of(int c, int tq) { return 8 * (c / 2) + 2 * tq + c % 2; }
__device__ __forceinline__ int acc_index(int c, int h) { return 4 * (c / 2) + 2 * h + c % 2; }

// The consumers' barrier (the producer warp does not take part).
__device__ __forceinline__ void consumers_sync() { bar_sync(1, CONSUMERS); }

template <int TRANS_A>
__device__ __forceinline__ void wgmma_n(float (&d)[ACC], u64 desc_a, u64 desc_b, int accumulate) {
    if constexpr (BLOCK_M == 16) wgmma_m64n16k16_ss<TRANS_A, 0>(d, desc_a, desc_b, accumulate);
    else wgmma_m64n32k16_ss<TRANS_A, 0>(d, desc_a, desc_b, accumulate);
}

}  // namespace

extern "C" __global__ void __launch_bounds__(THREADS, 1) mla_decode_sm90_narrow(const __grid_constant__ DecodeParams p) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    Smem& sm = smem_window<Smem>(smem_raw, p.k_box_rows < 16 || kv_sub_rows(p) != KV_TILE);

    launch_dependents();
    clock_stamp(0);
    const int m0 = blockIdx.x * BLOCK_M;
    const int g = blockIdx.y;
    const int part = blockIdx.z;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int gq = lane / 4, tq = lane % 4;

    const int* sched = p.sched + part * 8;
    const int b_begin = sched[0], b_end = sched[2];

    if (threadIdx.x == 0) {
        mbar_init(&sm.k_full[0], 1);
        mbar_init(&sm.k_full[1], 1);
        mbar_init(&sm.k_empty[0], CONSUMERS);
        mbar_init(&sm.k_empty[1], CONSUMERS);
        mbar_init_fence();
    }
    __syncthreads();   // the barriers' init is seen by all (the CTA's only barrier with the producer)
    if (threadIdx.x >= CONSUMERS) {
        // The producer: every tile of the part in the order the consumers take them (the
        // Cursor's walk), each as soon as its stage is free.
        if (threadIdx.x == CONSUMERS) {
            int pages[KV_MAX_PAGES];
            Cursor cur = seek(p, sched, b_begin, b_end, m0, BLOCK_M);
            if (cur.b <= b_end) fetch_pages(p, pages, cur);
            for (int n = 0; cur.b <= b_end; ++n) {
                const int stage = n % 2;
                if (n >= 2) mbar_wait(&sm.k_empty[stage], (n / 2 - 1) & 1);
                load_next(p, sched, cur, pages, sm.k[stage], &sm.k_full[stage], g, b_end, m0, BLOCK_M);
            }
        }
        return;
    }
    int tiles_done = 0;   // tiles consumed so far: gives each barrier's stage and phase
    PhaseClock phase;     // MLA_PHASE_CLOCKS only

    // wgmma descriptors of the operand bases, made once; a k step or a stage adds a constant to
    // the address field (16-byte units), which is far cheaper than rebuilding a descriptor.
    const u64 desc_q = smem_desc(sm.q, 16, 1024);
    const u64 desc_p = smem_desc(sm.p, 16, 1024);
    const u64 desc_k0 = smem_desc(sm.k[0], 16, 1024);
    const u64 desc_v0 = smem_desc(sm.k[0], 64 * 128, 8 * 128);   // MN-major: 8-token groups 1 KB apart
    constexpr u64 STAGE_STEP = (SLICES * SLICE * 2) >> 4;

    for (int b = b_begin; b <= b_end; ++b) {
        const Piece pc = piece_of(p, sched, b);
        const int num_tiles = tiles_of(p, pc, m0, BLOCK_M, BLOCK_N);
        const int load_end = load_end_of(p, pc);
        int limit[COLS];
#pragma unroll
        for (int c = 0; c < COLS; ++c) limit[c] = key_limit(p, pc, m0 + col_of(c, tq));

        float o[8][ACC];
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int r = 0; r < ACC; ++r) o[i][r] = 0.f;
        float col_max[COLS], col_sum[COLS];   // col_sum: this thread's tokens only, added up at the end
#pragma unroll
        for (int c = 0; c < COLS; ++c) col_max[c] = -inf_f(), col_sum[c] = 0.f;

        consumers_sync();  // the previous sequence is done with q
        if (num_tiles > 0) load_q<CONSUMERS, BLOCK_M>(p, sm.q, b, g, m0);
        cp_async_commit();
        phase.mark(7);

        for (int it = 0; it < num_tiles; ++it, ++tiles_done) {
            const int t0 = pc.start + it * BLOCK_N;
            const int stage = tiles_done % 2;
            elem_t* sk = sm.k[stage];
            cp_async_wait<0>();   // q (first tile only)
#if !MLA_FAKE_KV_LOAD   // diagnostic (timing only): every tile "lands" at once, with stale data
            mbar_wait(&sm.k_full[stage], (tiles_done / 2) & 1);
#endif
            if (tiles_done == 0) phase.mark(9);   // the CTA's first tile apart
            else phase.mark(0);
            // Every thread waited on the copy itself: a barrier is needed only where threads
            // wrote what the products read (q on a sequence's first tile, the zeroed tail).
            if (it == 0 || load_end - t0 < KV_TILE) {
                zero_tail<CONSUMERS>(sk, load_end - t0, KV_TILE);   // plain layout (checked at the top)
                fence_proxy_async();
                consumers_sync();
            }
            phase.mark(1);
            const u64 desc_k = desc_k0 + stage * STAGE_STEP, desc_v = desc_v0 + stage * STAGE_STEP;

            // 1. S^T = K Q^T. (Consecutive products into one accumulator cost nothing extra:
            // dealing them to 2 or 4 accumulators measured level, session 13.)
            float s[ACC];
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk) {
                const int slice = kk / 4, k16 = (kk % 4) * 32;   // 16 columns = 32 bytes
                wgmma_n<0>(s, desc_k + ((slice * SLICE * 2 + k16) >> 4), desc_q + ((slice * Q_SLICE * 2 + k16) >> 4),
                           kk > 0);
            }
            wgmma_commit();
            wgmma_wait<0>();
            reg_fence(s);
            phase.mark(2);

            // 2. Softmax down each column: mask, maxima over this thread's two tokens, the 8
            // lanes that share the column, then the 4 warps.
            float mx[COLS];
#pragma unroll
            for (int c = 0; c < COLS; ++c) {
                mx[c] = -inf_f();
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int t = t0 + 16 * warp + gq + 8 * h;
                    float& v = s[acc_index(c, h)];
                    v = t < limit[c] ? v * p.scale_log2 : -inf_f();
                    mx[c] = fmaxf(mx[c], v);
                }
                mx[c] = fmaxf(mx[c], __shfl_xor_sync(0xffffffffu, mx[c], 4));
                mx[c] = fmaxf(mx[c], __shfl_xor_sync(0xffffffffu, mx[c], 8));
                mx[c] = fmaxf(mx[c], __shfl_xor_sync(0xffffffffu, mx[c], 16));
                if (gq == 0) sm.col_max[warp][col_of(c, tq)] = mx[c];
            }
            consumers_sync();
            phase.mark(3);
            float rescale[COLS];
            bool moved = false;
            float m4[COLS];   // a thread's columns come in adjacent pairs: one 8-byte load a pair
#pragma unroll
            for (int j = 0; j < COLS / 2; ++j) {
                float2 m = *reinterpret_cast<const float2*>(&sm.col_max[0][col_of(2 * j, tq)]);
#pragma unroll
                for (int w = 1; w < 4; ++w) {
                    const float2 v = *reinterpret_cast<const float2*>(&sm.col_max[w][col_of(2 * j, tq)]);
                    m.x = fmaxf(m.x, v.x), m.y = fmaxf(m.y, v.y);
                }
                m4[2 * j] = m.x, m4[2 * j + 1] = m.y;
            }
#pragma unroll
            for (int c = 0; c < COLS; ++c) {
                const int col = col_of(c, tq);
                // col_max is the base of the exponentials, not the running maximum: it moves
                // only when the maximum climbs more than LAZY_TAU above it (P stays below
                // 2^LAZY_TAU), so after a sequence's first tiles almost no tile rescales O
                // (with 32 columns nearly every tile had moved some maximum and rescaled all of O).
                const float new_max = fmaxf(col_max[c], m4[c]);
                const float target = new_max > col_max[c] + LAZY_TAU ? new_max : col_max[c];
                const float base = target == -inf_f() ? 0.f : target;   // no key seen yet: avoid inf - inf
                rescale[c] = fast_exp2(col_max[c] - base);
                moved |= rescale[c] != 1.f;
                col_max[c] = target;
                col_sum[c] *= rescale[c];
                const float p0 = fast_exp2(s[acc_index(c, 0)] - base), p1 = fast_exp2(s[acc_index(c, 1)] - base);
                col_sum[c] += p0 + p1;
                // P^T row `col`, tokens 16 warp + gq and + 8.
                const u32 two = pack2(p0, p1);
                sm.p[swz(BLOCK_M, col, 16 * warp + gq)] = (elem_t)(two & 0xffffu);
                sm.p[swz(BLOCK_M, col, 16 * warp + gq + 8)] = (elem_t)(two >> 16);
            }
            // Once the bases settle, most tiles move none of them: skip the multiplies.
            if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
                for (int i = 0; i < 8; ++i)
#pragma unroll
                    for (int c = 0; c < COLS; ++c)
#pragma unroll
                        for (int h = 0; h < 2; ++h) o[i][acc_index(c, h)] *= rescale[c];
            }
            fence_proxy_async();
            consumers_sync();  // all of P^T written
            phase.mark(4);

            // 3. O^T += V^T P^T, 64 columns of V at a time.
            wgmma_fence();
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int kt = 0; kt < BLOCK_N / 16; ++kt)
                    // V: slice i, 16 tokens (16 rows of 128 bytes) a step; P^T: 16 tokens = 32 bytes.
                    wgmma_n<1>(o[i], desc_v + ((i * SLICE * 2 + kt * 16 * 128) >> 4), desc_p + kt * 2, 1);
            wgmma_commit();
            wgmma_wait<0>();
#pragma unroll
            for (int i = 0; i < 8; ++i) reg_fence(o[i]);
            phase.mark(5);
            mbar_arrive(&sm.k_empty[stage]);   // this thread is done with the stage: the producer refills it
            phase.mark(6);
        }
        cp_async_wait<0>();

        // Epilogue: add up each column's sum over the tile's tokens, normalise, write.
#pragma unroll
        for (int c = 0; c < COLS; ++c) {
            float l = col_sum[c];
            l += __shfl_xor_sync(0xffffffffu, l, 4);
            l += __shfl_xor_sync(0xffffffffu, l, 8);
            l += __shfl_xor_sync(0xffffffffu, l, 16);
            if (gq == 0) sm.col_sum[warp][col_of(c, tq)] = l;
        }
        consumers_sync();
        const bool whole = pc.pieces <= 1;
        const int slot = whole ? 0 : accum_slot(p.num_splits, b, pc.split);
#pragma unroll
        for (int c = 0; c < COLS; ++c) {
            const int col = col_of(c, tq), row = m0 + col;
            if (row >= p.rows) continue;
            const float l = sm.col_sum[0][col] + sm.col_sum[1][col] + sm.col_sum[2][col] + sm.col_sum[3][col];
            float inv, lse;
            finish_row(col_max[c], l, whole, inv, lse);
            const RowOut d = row_out(p, b, g, row, whole, slot, 0);
            u16* out16 = reinterpret_cast<u16*>(d.out);
            float* out32 = reinterpret_cast<float*>(d.acc);
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int dv = 64 * i + 16 * warp + gq + 8 * h;
                    const float v = o[i][acc_index(c, h)] * inv;
                    if (whole || MLA_ACC16) out16[dv] = (u16)(pack2(v, 0.f) & 0xffffu);
                    else out32[dv] = v;
                }
            if (warp == 0 && gq == 0) *d.lse = lse;
        }
        phase.mark(8);
    }
    phase.store();
    clock_stamp(1);
}
