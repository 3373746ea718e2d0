// Hopper (sm_90a) paged MLA decode for 64 query rows per CTA on pages of 64 tokens or more: the
// seesaw of decode_sm90_seesaw.cu (read its header first) on 64-token tiles in two buffers.
//
// Why 64-token tiles. The seesaw on 32-token tiles spends ~3250 clocks a pair against 2176 of
// tensor work (bench/NOTES.md, v11): its m64n32 scores read q from shared memory once per 32
// tokens (3 KB per 16 tensor clocks, above the 128 bytes a clock shared memory gives), and every
// 32 tokens pay a softmax hand-over, barriers and wgmma waits. Here each warpgroup scores a whole
// 64-token tile (m64n64: q read once per 64 tokens, 128 bytes a clock), so a pair covers 128
// tokens with the same number of hand-overs.
//
// The cost: only two tiles fit next to q (72 KB + 2 x 72 KB), so a buffer must be refilled while
// the pair that uses it is still running. Each tile is copied and released in two halves, each
// as soon as its last reader is done:
//   A tiles (warpgroup 0 scores them): half 0, slices 0-3 (V_L): read by the scores and warpgroup
//     0's product; half 1, slices 4-8 (V_R, and the rope slice, which then holds P_A): read by
//     the scores and warpgroup 1's product;
//   B tiles (MLA_B_SPLIT): half 0, slices 4-7 (V_R): the scores and warpgroup 1's product; half 1,
//     slices 0-3 and 8 (V_L and P_B): the scores and warpgroup 0's product. A buffer that goes
//     from one kind to the other (after a sequence of odd length) is refilled once all of it is
//     free.
// A half is refilled as soon as all 8 consumer warps have arrived on its `empty` barrier: every
// warp arrives once per tile and half, after the tile is known to have landed (so never in the
// previous use's phase) and after its last read; a warpgroup that never reads a half arrives early.
// Warpgroup 1 multiplies P_A V_A,R before its softmax of B (decode_sm90_seesaw.cu's
// MLA_WG1_A_FIRST order), so A's second half frees half a pair earlier than in the other order,
// and its softmax overlaps 1024 clocks of products.
//
//   WG0: softmax A | P_A out, O_L = O_L x scale0 + P_A V_A,L | (P_B) O_L x scale1 + P_B V_B,L,
//        B released | S_A' = Q K_A'^T (B is released before these scores, which wait for A' to
//        land, and B' must not wait for that: 3-7% faster on the causal, 16K and b8 rows, level
//        on 4K/8K; bench/NOTES.md, session 8)
//   WG1: (A's maxima) O_R x scale0, (P_A) O_R += P_A V_A,R | softmax B | O_R x scale1 +
//        P_B V_B,R, P_B out | S_B' (queued behind S_A')
//
// Shared memory (d = 576): q 72 KB + 2 tiles x 72 KB = 216 KB (+ 16 KB of P for d = 512).
// The tensor map: 5-D (k_map_rank 5), box of one 64-column slice of 64 rows (k_box_rows 64,
// k_box_slices 1): nine copies a tile, four on half 0's `full` barrier and five on half 1's.
// Pages of 32: boxes of 32 rows (k_box_rows 32), two a slice from two pages (eighteen a tile).
//
// q (MLA_Q_TMA, with q_map_rank 5): the producer copies each sequence's q with the copy engine,
// one box a 64-column slice, as soon as every consumer warp has issued its last scores of the
// previous sequence (`q_empty`), so the next q lands during the last products and the epilogue.
// By cp.async (the fallback, for a q layout the host cannot map) the consumers wait ~10k clocks
// for it at every sequence start, and its loads slow the epilogue's stores on the same path
// (bench/NOTES.md, session 7, tables C-E).
//
// Compile-time configuration: MLA_FP16 (0 = bf16, 1 = fp16), MLA_HEAD_DIM (576 or 512).
#ifndef MLA_HEAD_DIM
#define MLA_HEAD_DIM 576
#endif
#include "common/params.cuh"
#include "common/ptx.cuh"
#include "common/sm90.cuh"
#include "common/epilogue.cuh"
#include "common/piece.cuh"
#include "common/kv_tiles.cuh"
#include "common/seesaw.cuh"
#include "common/clocks.cuh"

// MLA_Q_REGS: the first k steps of the scores take q from registers (4 a step).
#ifndef MLA_Q_REGS
#define MLA_Q_REGS 0
#endif
// MLA_TRACE (diagnostics only): clock() stamps of a few pairs of CTA 0 (bench/trace_seesaw.py).
// WG0: 0 pair start, 1 P_A V_A,L issued, 2 P_A posted, 3 that product done, 4 P_B seen, 5 next
// scores issued, 6 they are done, 8/9 their halves landed. WG1: 0 pair start, 1 A's maxima seen,
// 2 P_A seen, 3 P_A V_A,R issued, 4 it and B's softmax done, 5 P_B posted, 6 next scores issued,
// 7 they are done, 8/9 their halves landed. Both: 10/11 the producer issued the halves of this
// warpgroup's next tile; WG0 7: B released; 12: WG0 P_B V_B,L issued, WG1 P_B V_B,R issued.
#ifndef MLA_TRACE
#define MLA_TRACE 0
#endif
// MLA_Q_TMA: q by the producer's copies when the host made a q map (0: always by cp.async).
#ifndef MLA_Q_TMA
#define MLA_Q_TMA 1
#endif
// MLA_P_A_FIRST / MLA_P_B_FIRST: a warpgroup posts its P for the other one before issuing its
// own product with it (else after), so the other warpgroup's product, and the tile release after
// it, start earlier. P_A first: 1-4% faster on every h_q128 row (b8 -3.5%, causal 4K -2.8%, 4K
// and 8K -1.1%); P_B first as well: 16K faster, 4K and 8K not (bench/NOTES.md, session 9).
#ifndef MLA_P_A_FIRST
#define MLA_P_A_FIRST 1
#endif
#ifndef MLA_P_B_FIRST
#define MLA_P_B_FIRST 0
#endif
// MLA_B_SPLIT: a B tile's halves are V_R (slices 4-7: read by its scores and warpgroup 1's
// P_B V_B,R) and the rest (V_L and the rope slice, which holds P_B: read by warpgroup 0's
// P_B V_B,L), copied in that order and scored in that order, so that V_R of the next B is asked
// for as soon as warpgroup 1's product is done instead of after warpgroup 0's. A tiles keep
// halves 0-3 / 4-8 (warpgroup 1 reads P_A with V_R). Pair 6228 -> 5712 clocks; 4K -5%, 8K -6%
// (bench/NOTES.md, session 9).
#ifndef MLA_B_SPLIT
#define MLA_B_SPLIT 1
#endif
// MLA_KV_HINT: the L2 policy of the tile copies: 1 evict-first, 0 none, 2 evict-first for odd m
// tiles only (the two m tiles of h_q 128 read the same tiles). 3 processes each (session 9): 0 and
// 1 within the rows' bimodal spread, 2 slower on 4K (276 against 270 us).
#ifndef MLA_KV_HINT
#define MLA_KV_HINT 1
#endif
// MLA_MAX_SLACK: see next_max() in common/seesaw.cuh.

namespace {

constexpr int D = MLA_HEAD_DIM;
constexpr int Q_REGS = MLA_Q_REGS;
constexpr int BLOCK_M = 64;
constexpr int T = 64;                        // tokens a tile
constexpr int NBUF = 2;                      // tile buffers
constexpr int CONSUMERS = 256;               // two warpgroups
constexpr int THREADS = CONSUMERS + 128;     // + the producer warpgroup (one thread works)
constexpr int SLICES = D / 64;
constexpr int HALF0_SLICES = 4;              // V_L; half 1 is the rest
constexpr int Q_SLICE = BLOCK_M * 64;        // elements of one 64-column slice of q
constexpr int K_SLICE = T * 64;              // ... of a tile
constexpr bool ROPE = D > 512;               // slice 8 (rope): read by the scores only, then P
constexpr u32 V_LBO = T * 128, V_SBO = 8 * 128;   // V as wgmma's MN-major B operand
constexpr int CONSUMER_WARPS = CONSUMERS / 32;

// Named barriers (0 is __syncthreads, which the producer warp does not join).
constexpr int BAR_CONSUMERS = 1;   // both warpgroups
constexpr int BAR_SCALE0 = 2;      // WG0 has folded A's maxima into row_max, scale0 written
constexpr int BAR_P_A = 3;         // P_A is in shared memory
constexpr int BAR_P_B = 4;         // B's maxima folded in (row_max, scale1) and P_B in shared memory
constexpr int BAR_S_ISSUED = 5;    // WG0 has issued its next scores (WG1 queues its own behind)
constexpr int BAR_WG = 6;          // + warpgroup: its own 128 threads

typedef u16 elem_t;

struct __align__(1024) Smem {
    elem_t q[SLICES * Q_SLICE];
    elem_t k[NBUF][SLICES * K_SLICE];
    elem_t p[ROPE ? 1 : NBUF][ROPE ? 8 : 64 * T];   // d = 512: P of each buffer's tile (see p_of)
    float row_max[BLOCK_M];                  // running maxima, log2 domain
    float scale0[BLOCK_M], scale1[BLOCK_M];
    float row_sum[2][BLOCK_M];
    unsigned long long full[NBUF][2];        // the tile's half has landed
    unsigned long long empty[NBUF][2];       // every consumer warp is done with it
    unsigned long long q_full;               // MLA_Q_TMA: this sequence's q has landed
    unsigned long long q_empty;              // MLA_Q_TMA: every consumer warp has issued its last scores
};

// q comes by the producer's copies (the same on every thread of the CTA).
__device__ __forceinline__ bool q_by_tma(const DecodeParams& p) { return MLA_Q_TMA && p.q_map_rank == 5; }

#if MLA_TRACE
constexpr int TRACE_FIRST = 10;
}  // namespace
extern "C" __device__ u32 mla_trace[2 * 8 * 16];   // a plain name, for cupy's get_global
__device__ u32 mla_trace[2 * 8 * 16];
namespace {
#endif
__device__ __forceinline__ void stamp(int wg, int pair, int i) {
#if MLA_TRACE
    if (pair >= TRACE_FIRST && pair < TRACE_FIRST + 8 && threadIdx.x % 128 == 0 && blockIdx.x + blockIdx.y + blockIdx.z == 0)
        mla_trace[(wg * 8 + pair - TRACE_FIRST) * 16 + i] = (u32)clock();
#endif
}

__device__ __forceinline__ int buf_of(int k) { return k % NBUF; }
// The half (and `full` barrier) of the i-th slice in copy order (slice_at).
__device__ __forceinline__ int full_of(int i) { return i >= HALF0_SLICES; }

// The i-th slice a tile is copied and scored in: in order, or for a B tile with MLA_B_SPLIT, V_R
// (4-7) first, then V_L (0-3), then the rope slice (8).
__device__ __forceinline__ int slice_at(bool b_tile, int i) {
    if (!MLA_B_SPLIT || !b_tile || i >= 8) return i;
    return i < 4 ? i + 4 : i - 4;
}
__device__ __forceinline__ u32 parity_of(int k) { return (k / NBUF) & 1; }

// The producer: thread 0 of the third warpgroup copies the CTA's tiles, in the order the
// warpgroups consume them, each half into its buffer as soon as the consumers released it.
__device__ __forceinline__ void produce(const DecodeParams& p, Smem& sm, const int* sched, int g, int m0) {
    const int page_mask = (1 << p.page_shift) - 1;
    const bool rows32 = p.k_box_rows == 32;   // pages of 32: two boxes a slice
    const bool q_tma = q_by_tma(p);
    int k = 0;   // tiles issued so far
    unsigned held_b = 0;   // MLA_B_SPLIT: bit buf is set while buffer buf holds a B tile
    for (int b = sched[0]; b <= sched[2]; ++b) {
        const Piece pc = piece_of(p, sched, b);
        const int n = tiles_of(p, pc, m0, BLOCK_M, T);
        const int load_end = load_end_of(p, pc);
        const int* bt = p.block_table + b * p.bt_stride_b;
        if (q_tma) {   // q first: its scores come before any of its tiles' products
            const int seq = b - sched[0];
            if (seq > 0) mbar_wait(&sm.q_empty, (seq - 1) & 1);
            if (n > 0) {
                // The m tile's rows are heads [m0 % hpk, +64) of query position m0 / hpk, or
                // (fewer heads a kv head than 64) every head of 64 / hpk positions from it; the
                // map reaches this sequence's and kv head's q in 16-byte steps from its base.
                const unsigned long long steps =
                    ((unsigned long long)p.q + 2ull * (b * p.q_stride_b + g * p.heads_per_kv * p.q_stride_h) -
                     Q_MAP_BASE) >> 4;
                mbar_arrive_expect_tx(&sm.q_full, BLOCK_M * D * 2);
                for (int s = 0; s < SLICES; ++s)
                    tma_load_5d(sm.q + s * Q_SLICE, &p.q_map, &sm.q_full, 64 * s, m0 % p.heads_per_kv,
                                m0 / p.heads_per_kv, (int)(steps & 0x7fffffff), (int)(steps >> 31), false);
            } else {
                mbar_arrive(&sm.q_full);   // nothing to score: the consumers only pass the phase
            }
        }
        for (int j = 0; j < n; ++j, ++k) {
            const int t0 = pc.start + j * T;
            const bool load = t0 < load_end;   // tokens past it are not in the block table: zeros
            const int page = load ? bt[t0 >> p.page_shift] : 0;
            // Pages of 32 (k_box_rows 32): a slice is two boxes, the second from the next page,
            // if any of its tokens is in the block table (else its rows are past load_end, and
            // the consumers zero their V: zero_v_tail).
            const bool two = rows32 && t0 + 32 < load_end;
            const int page2 = two ? bt[(t0 + 32) >> p.page_shift] : 0;
            const int slice_bytes = (two || !rows32 ? K_SLICE : K_SLICE / 2) * 2;
            const int buf = buf_of(k);
            const bool b_tile = j & 1;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int i0 = h ? HALF0_SLICES : 0, i1 = h ? SLICES : HALF0_SLICES;
                if (k >= NBUF) {
                    mbar_wait(&sm.empty[buf][h], parity_of(k) ^ 1);
                    // An A tile where a B tile was, or back (after a sequence of odd length): the
                    // halves are other slices, so all of the previous tile must be free first.
                    if (MLA_B_SPLIT && h == 0 && ((held_b >> buf) & 1) != b_tile)
                        mbar_wait(&sm.empty[buf][1], parity_of(k) ^ 1);
                }
                for (int i = i0; i < i1; ++i) {
                    const int s = slice_at(b_tile, i);
                    unsigned long long* bar = &sm.full[buf][full_of(i)];
                    const bool first = i == i0;   // the barrier's first slice
                    if (!load) {
                        if (first) mbar_arrive(bar);
                        continue;
                    }
                    if (first) mbar_arrive_expect_tx(bar, (i1 - i0) * slice_bytes);
                    const bool hint = MLA_KV_HINT == 1 || (MLA_KV_HINT == 2 && (blockIdx.x & 1));
                    tma_load_5d(sm.k[buf] + s * K_SLICE, &p.k_map, bar, 0, t0 & page_mask, s, g, page, hint);
                    // Rows 32-63 land where a 64-row box puts them: 4 KB on, a whole number of the
                    // 128-byte swizzle's 1 KB periods.
                    if (two) tma_load_5d(sm.k[buf] + s * K_SLICE + K_SLICE / 2, &p.k_map, bar, 0, 0, s, g, page2, hint);
                }
                // Trace: when tile k's half was issued, in the pair that will score it (10/11: half 0/1).
                stamp(k & 1, (k - 2 - (k & 1)) / 2, 10 + h);
            }
            held_b = (held_b & ~(1u << buf)) | ((unsigned)b_tile << buf);
        }
    }
}

struct QRegs {
    u32 a[Q_REGS > 0 ? Q_REGS : 1][4];
};

__device__ __forceinline__ void load_q_regs(const Smem& sm, QRegs& qr, const int (&row)[2], int tq) {
#pragma unroll
    for (int kk = 0; kk < Q_REGS; ++kk)
#pragma unroll
        for (int i = 0; i < 4; ++i)
            qr.a[kk][i] = *reinterpret_cast<const u32*>(sm.q + swz(64, row[i % 2], 16 * kk + 8 * (i / 2) + 2 * tq));
}

// S = Q K^T for the tile of global index k (m64n64k16, 4 k steps a slice): half 0's slices as
// soon as they land, then half 1's, in slice_at's order (B_TILE: warpgroup 1's tiles). (wg, pair:
// for the trace stamps 8 and 9, the halves seen.)
template <bool B_TILE>
__device__ __forceinline__ void scores(Smem& sm, float (&s)[32], int k, const QRegs& qr, int wg, int pair) {
    const int buf = buf_of(k);
    const u64 desc_q = smem_desc(sm.q, 16, 1024);
    const u64 desc_k = smem_desc(sm.k[buf], 16, 1024);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        if (kk == 0 || (kk % 4 == 0 && full_of(kk / 4) != full_of(kk / 4 - 1))) {
            // (ptxas would put the fence there itself, after the wait loop)
            mbar_wait(&sm.full[buf][full_of(kk / 4)], parity_of(k));
            if (kk == 0) stamp(wg, pair, 8);
            if (kk == 4 * HALF0_SLICES) stamp(wg, pair, 9);
            wgmma_fence();
        }
        const int sl = slice_at(B_TILE, kk / 4);
        const u64 q_off = (sl * Q_SLICE * 2 + (kk % 4) * 32) >> 4;   // slice, then 16 columns
        const u64 k_off = (sl * K_SLICE * 2 + (kk % 4) * 32) >> 4;
        if (kk < Q_REGS && !(MLA_B_SPLIT && B_TILE))   // (q's registers hold slice 0's first k steps)
            wgmma_m64n64k16_rs(s, qr.a[kk < Q_REGS ? kk : 0], desc_k + k_off, kk > 0);
        else wgmma_m64n64k16_ss(s, desc_q + q_off, desc_k + k_off, kk > 0);
    }
    wgmma_commit();
}

// P (accumulator layout) as the A operand of the tile's four 16-token k steps.
__device__ __forceinline__ void pack_p(const float (&s)[32], u32 (&a)[4][4]) {
#pragma unroll
    for (int kt = 0; kt < 4; ++kt)
#pragma unroll
        for (int i = 0; i < 4; ++i) a[kt][i] = pack2(s[8 * kt + 2 * i], s[8 * kt + 2 * i + 1]);
}

// Where a tile's P (64 rows x 64 tokens) goes for the other warpgroup's product: the tile's rope
// slice, which only its scores read (done by then), in the same 128-byte-swizzled K-major layout
// as q's slices; with d = 512, a separate area per buffer.
__device__ __forceinline__ elem_t* p_of(Smem& sm, int buf) { return ROPE ? sm.k[buf] + 8 * K_SLICE : sm.p[buf]; }

__device__ __forceinline__ void store_p(elem_t* sp, const u32 (&a)[4][4], const Ctx& c) {
#pragma unroll
    for (int kt = 0; kt < 4; ++kt)
#pragma unroll
        for (int i = 0; i < 4; ++i)
            *reinterpret_cast<u32*>(sp + swz(64, c.row[i % 2], 16 * kt + 8 * (i / 2) + 2 * c.tq)) = a[kt][i];
}

// P out for the other warpgroup's product: stored, made visible to wgmma, `bar` arrived on.
__device__ __forceinline__ void post_p(elem_t* sp, const u32 (&a)[4][4], const Ctx& c, int bar) {
    store_p(sp, a, c);
    fence_proxy_async();
    bar_arrive(bar, CONSUMERS);
}

// O (+)= P V over one 256-column half of the tile's V, P from registers or from shared memory.
template <int HALF>
__device__ __forceinline__ void pv_regs(float (&o)[128], const u32 (&a)[4][4], const elem_t* sk) {
    const u64 desc_v = smem_desc(sk + 4 * HALF * K_SLICE, V_LBO, V_SBO);
    wgmma_fence();
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) wgmma_m64n256k16_rs<1>(o, a[kt], desc_v + kt * 128, 1);
    wgmma_commit();
}
template <int HALF>
__device__ __forceinline__ void pv_smem(float (&o)[128], const elem_t* sp, const elem_t* sk) {
    const u64 desc_p = smem_desc(sp, 16, 1024);
    const u64 desc_v = smem_desc(sk + 4 * HALF * K_SLICE, V_LBO, V_SBO);
    wgmma_fence();
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) wgmma_m64n256k16_ss<1>(o, desc_p + kt * 2, desc_v + kt * 128, 1);
    wgmma_commit();
}

// A consumer warp is done with half h of tile k.
__device__ __forceinline__ void release(Smem& sm, int k, int h) {
    if (threadIdx.x % 32 == 0) mbar_arrive(&sm.empty[buf_of(k)][h]);
}

// A consumer warp has issued (and waited for) its last scores of this sequence: q may be refilled.
__device__ __forceinline__ void release_q(Smem& sm) {
    if (threadIdx.x % 32 == 0) mbar_arrive(&sm.q_empty);
}

// Warpgroup 0's share of the pair (A = tile it, B = tile it + 1 of the piece). s holds A's
// scores on entry and the next A's on exit; m_run the running maxima.
__device__ __forceinline__ void wg0_pair(Smem& sm, const Ctx& c, int it, float (&o)[128], float (&s)[32],
                                         float (&lsum)[2], const QRegs& qr, float (&m_run)[2]) {
    const int ka = c.k0 + it, kb = ka + 1;
    const int ta = c.start + it * T, tb = ta + T;
    const bool has_b = it + 1 < c.n, next_a = it + 2 < c.n;
    release(sm, ka, 1);   // A's second half: read by its scores (done); WG1 frees it after P_A V_A,R

    stamp(0, it / 2, 0);
    float m_new[2], base[2], sc0[2];
    mask_and_max(s, m_new, m_run, ta, c);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        base[h] = m_new[h] == -inf_f() ? 0.f : m_new[h];   // no key seen yet: avoid inf - inf
        sc0[h] = fast_exp2(m_run[h] - base[h]);
        lsum[h] *= sc0[h];
    }
    __syncwarp();   // the quad has read the last pair's row_max before its first thread rewrites it
    if (c.tq == 0) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            sm.row_max[c.row[h]] = m_new[h];
            sm.scale0[c.row[h]] = sc0[h];
        }
    }
    bar_arrive(BAR_SCALE0, CONSUMERS);
    exp_rows(s, base, lsum);
    u32 pa[4][4];
    pack_p(s, pa);

    // O_L = O_L x scale0 + P_A V_A,L, P_A posted before or after it is issued (MLA_P_A_FIRST).
    scale_o(o, sc0);
    zero_v_tail<T>(sm.k[buf_of(ka)], 0, c.load_end - ta, BAR_WG);
    if (MLA_P_A_FIRST) post_p(p_of(sm, buf_of(ka)), pa, c, BAR_P_A);
    pv_regs<0>(o, pa, sm.k[buf_of(ka)]);
    stamp(0, it / 2, 1);
    if (!MLA_P_A_FIRST) post_p(p_of(sm, buf_of(ka)), pa, c, BAR_P_A);
    stamp(0, it / 2, 2);
    // A's first half is free once that product is done: its refill starts before P_B comes.
    wgmma_wait<0>();
    reg_fence(o);
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) reg_fence(pa[kt]);
    release(sm, ka, 0);
    stamp(0, it / 2, 3);

    m_run[0] = m_new[0];
    m_run[1] = m_new[1];
    if (has_b) {   // O_L = O_L x scale1 + P_B V_B,L
        bar_sync(BAR_P_B, CONSUMERS);   // B's maxima and P_B
        if (MLA_B_SPLIT) release(sm, kb, 0);   // V_R, never read here; B has landed (WG1 scored it)
        stamp(0, it / 2, 4);
        float sc1[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            sc1[h] = sm.scale1[c.row[h]];
            m_run[h] = sm.row_max[c.row[h]];
            lsum[h] *= sc1[h];
        }
        scale_o(o, sc1);
        zero_v_tail<T>(sm.k[buf_of(kb)], 0, c.load_end - tb, BAR_WG);
        pv_smem<0>(o, p_of(sm, buf_of(kb)), sm.k[buf_of(kb)]);
        stamp(0, it / 2, 12);
    }
    // B is released before the next scores: they block until A' lands, and B' must not wait for that.
    if (has_b) {
        wgmma_wait<0>();
        reg_fence(o);
        if (!MLA_B_SPLIT) release(sm, kb, 0);
        release(sm, kb, 1);
    }
    stamp(0, it / 2, 7);
    // (Kept apart from the branch above: merged into it, ptxas schedules the loop differently.)
    if (next_a) scores<false>(sm, s, ka + 2, qr, 0, it / 2);
    if (it + 3 < c.n) bar_arrive(BAR_S_ISSUED, CONSUMERS);   // WG1 has a next B
    stamp(0, it / 2, 5);
    // Unconditionally: ptxas cannot tell that the branches above leave nothing in flight, and
    // would serialise every wgmma of the kernel.
    wgmma_wait<0>();
    reg_fence(s);
    reg_fence(o);
    stamp(0, it / 2, 6);
}

// Warpgroup 1's share: O_R x scale0 + P_A V_A,R, then B's softmax (against A's maxima) while that
// product runs, O_R x scale1 + P_B V_B,R, P_B out, the scores of the next B. s holds B's scores
// on entry (if there is a B) and the next B's on exit.
__device__ __forceinline__ void wg1_pair(Smem& sm, const Ctx& c, int it, float (&o)[128], float (&s)[32],
                                         float (&lsum)[2], const QRegs& qr) {
    const int ka = c.k0 + it, kb = ka + 1;
    const int ta = c.start + it * T, tb = ta + T;
    const bool has_b = it + 1 < c.n, next_b = it + 3 < c.n;
    // B's half that WG0 frees after P_B V_B,L: here only read by its scores (done).
    if (has_b) release(sm, kb, MLA_B_SPLIT ? 1 : 0);

    stamp(1, it / 2, 0);
    bar_sync(BAR_SCALE0, CONSUMERS);
    release(sm, ka, 0);   // never read here; A has landed (WG0 scored it), so this is its phase
    stamp(1, it / 2, 1);
    float sc0[2], m_a[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        sc0[h] = sm.scale0[c.row[h]];
        m_a[h] = sm.row_max[c.row[h]];
        lsum[h] *= sc0[h];
    }
    scale_o(o, sc0);   // O_R relative to A's maxima, as P_A is
    // The softmax works on a copy of the scores: s is a wgmma accumulator, and ptxas serialises
    // every wgmma of the kernel (C7515) if s is rewritten while a product is in flight.
    float t[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) t[i] = s[i];
    reg_fence(t);
    bar_sync(BAR_P_A, CONSUMERS);
    stamp(1, it / 2, 2);
    zero_v_tail<T>(sm.k[buf_of(ka)], 1, c.load_end - ta, BAR_WG + 1);
    pv_smem<1>(o, p_of(sm, buf_of(ka)), sm.k[buf_of(ka)]);   // O_R += P_A V_A,R
    stamp(1, it / 2, 3);

    // B's softmax while the products run.
    u32 pb[4][4] = {};
    float sc1[2] = {1.f, 1.f};
    if (has_b) {
        float m_new[2], base[2];
        mask_and_max(t, m_new, m_a, tb, c);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            base[h] = m_new[h] == -inf_f() ? 0.f : m_new[h];
            sc1[h] = fast_exp2(m_a[h] - base[h]);
            lsum[h] *= sc1[h];
        }
        __syncwarp();   // the quad has read row_max before its first thread rewrites it
        if (c.tq == 0) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                sm.row_max[c.row[h]] = m_new[h];
                sm.scale1[c.row[h]] = sc1[h];
            }
        }
        exp_rows(t, base, lsum);
        pack_p(t, pb);
    }
    wgmma_wait<0>();
    reg_fence(o);
    release(sm, ka, 1);
    stamp(1, it / 2, 4);

    if (has_b) {   // O_R = O_R x scale1 + P_B V_B,R, issued before P_B goes out
        scale_o(o, sc1);
        zero_v_tail<T>(sm.k[buf_of(kb)], 1, c.load_end - tb, BAR_WG + 1);
        if (MLA_P_B_FIRST) post_p(p_of(sm, buf_of(kb)), pb, c, BAR_P_B);
        pv_regs<1>(o, pb, sm.k[buf_of(kb)]);
        stamp(1, it / 2, 12);
        if (!MLA_P_B_FIRST) post_p(p_of(sm, buf_of(kb)), pb, c, BAR_P_B);
        stamp(1, it / 2, 5);
    }
    wgmma_wait<0>();   // unconditionally (see the end of wg0_pair)
    reg_fence(o);
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) reg_fence(pb[kt]);
    if (has_b) release(sm, kb, MLA_B_SPLIT ? 0 : 1);

    if (next_b) {
        bar_sync(BAR_S_ISSUED, CONSUMERS);   // A's scores first: WG0's softmax waits for them
        scores<true>(sm, s, kb + 2, qr, 1, it / 2);
    }
    stamp(1, it / 2, 6);
    wgmma_wait<0>();
    reg_fence(s);
    stamp(1, it / 2, 7);
}

}  // namespace

extern "C" __global__ void __launch_bounds__(THREADS, 1) mla_decode_sm90_seesaw64(const __grid_constant__ DecodeParams p) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    const bool box_ok = p.k_box_rows == T || (p.k_box_rows == 32 && p.page_shift == 5);
    Smem& sm = smem_window<Smem>(smem_raw, !box_ok || p.k_map_rank != 5 || p.k_box_slices != 1);

    launch_dependents();
    clock_stamp(0);
    const int m0 = blockIdx.x * BLOCK_M;
    const int g = blockIdx.y;
    const int* sched = p.sched + blockIdx.z * 8;

    if (threadIdx.x == 0) {
        for (int i = 0; i < NBUF; ++i) {
            for (int h = 0; h < 2; ++h) mbar_init(&sm.empty[i][h], CONSUMER_WARPS);
            for (int f = 0; f < 2; ++f) mbar_init(&sm.full[i][f], 1);
        }
        mbar_init(&sm.q_full, 1);
        mbar_init(&sm.q_empty, CONSUMER_WARPS);
        mbar_init_fence();
    }
    __syncthreads();   // barriers initialised for everyone, the producer included
    // Registers: the producer gives most of its share to the consumers (o alone is 128 a thread).
    if (threadIdx.x >= CONSUMERS) {
        setmaxnreg_dec<24>();
        if (threadIdx.x == CONSUMERS) produce(p, sm, sched, g, m0);
        return;
    }
    setmaxnreg_inc<240>();

    // The warpgroup index, provably uniform for ptxas (a shuffle result): otherwise it treats the
    // warpgroup branches as divergent and serialises their wgmmas.
    const int wg = __shfl_sync(0xffffffffu, threadIdx.x / 128, 0);
    const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
    const int gq = lane / 4;
    Ctx c;
    c.tq = lane % 4;
    c.row[0] = 16 * warp + gq;
    c.row[1] = c.row[0] + 8;
    c.scale_log2 = p.scale_log2;
    c.k0 = 0;
    const bool q_tma = q_by_tma(p);

    for (int b = sched[0]; b <= sched[2]; ++b) {
        const Piece pc = piece_of(p, sched, b);
        c.start = pc.start;
        c.n = tiles_of(p, pc, m0, BLOCK_M, T);
        c.load_end = load_end_of(p, pc);
        for (int h = 0; h < 2; ++h) c.limit[h] = key_limit(p, pc, m0 + c.row[h]);

        bar_sync(BAR_CONSUMERS, CONSUMERS);   // the previous sequence is done with q, row_max, p
        if (threadIdx.x < BLOCK_M) sm.row_max[threadIdx.x] = -inf_f();
        if (!q_tma) {
            if (c.n > 0) load_q<CONSUMERS, BLOCK_M>(p, sm.q, b, g, m0);
            cp_async_commit();
            cp_async_wait<0>();
            fence_proxy_async();
        }
        bar_sync(BAR_CONSUMERS, CONSUMERS);   // q (by cp.async) and row_max are in place for everyone
        if (q_tma) mbar_wait(&sm.q_full, (b - sched[0]) & 1);
        QRegs qr;
        load_q_regs(sm, qr, c.row, c.tq);

        float o[128];
#pragma unroll
        for (int i = 0; i < 128; ++i) o[i] = 0.f;
        float lsum[2] = {0.f, 0.f};
        float s[32];
        // WG0 starts on tile 0, WG1 on tile 1 (queued behind WG0's, as in the pairs).
        if (wg == 1 && c.n > 1) bar_sync(BAR_S_ISSUED, CONSUMERS);
        if (wg == 0 && c.n > 0) scores<false>(sm, s, c.k0, qr, 0, -1);
        if (wg == 1 && c.n > 1) scores<true>(sm, s, c.k0 + 1, qr, 1, -1);
        if (wg == 0 && c.n > 1) bar_arrive(BAR_S_ISSUED, CONSUMERS);
        wgmma_wait<0>();
        reg_fence(s);
        // q is released after the warpgroup's last scores: those just waited for (WG0 scores the
        // even tiles, WG1 the odd ones), or the ones issued in the pair that is the last to score.
        if (q_tma && c.n <= 2 + wg) release_q(sm);
        // One loop per warpgroup (a shared loop body makes ptxas move o's registers every pair).
        if (wg == 0) {
            float m_run[2] = {-inf_f(), -inf_f()};
            for (int it = 0; it < c.n; it += 2) {
                wg0_pair(sm, c, it, o, s, lsum, qr, m_run);
                if (q_tma && it + 2 < c.n && it + 4 >= c.n) release_q(sm);
            }
        } else {
            for (int it = 0; it < c.n; it += 2) {
                wg1_pair(sm, c, it, o, s, lsum, qr);
                if (q_tma && it + 3 < c.n && it + 5 >= c.n) release_q(sm);
            }
        }
        c.k0 += c.n;

        add_row_sums(sm.row_sum, c, lsum, wg, BAR_CONSUMERS, CONSUMERS);
        store_rows(p, sm.row_sum, sm.row_max, c, o, pc, b, g, m0, wg);
    }
    clock_stamp(1);
}
