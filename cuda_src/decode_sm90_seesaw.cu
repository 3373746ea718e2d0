// Hopper (sm_90a) paged MLA decode for 64 query rows per CTA (h_q / h_kv * s_q > 32, the
// compute-bound shapes: DeepSeek decodes with 128 heads), pages of 32 tokens or more.
//
// Same contract, grid and scheduler as the other decode kernels (one CTA per (m tile of 64 query
// rows, kv head, part); split sequences write pieces for combine.cu).
//
// Why this shape. decode_sm90.cu keeps both warpgroups on one tile, so the tensor cores idle
// during every softmax and exchange (45% tensor-active). Here the warpgroups take alternate
// tiles (a seesaw): warpgroup 0 computes the scores of tile A, warpgroup 1 those of tile B, and
// each owns half of the output (O_L = O[:, 0:256] in WG0, O_R = O[:, 256:512] in WG1), so one
// warpgroup's softmax runs while the other's products keep the tensor cores busy:
//
//   WG0: softmax A | O_L += P_A V_A,L, P_A to WG1 | O_L x scale1 += P_B V_B,L  + S_A' = Q K_A'^T
//   WG1: softmax B (after A's maxima) | O_R += P_B V_B,R, P_B to WG0 | O_R += P_A V_A,R
//        | S_B' = Q K_B'^T (queued behind S_A')
//
// A warpgroup multiplies its own P from registers and the other's from shared memory, where it
// lies in the tile's rope slice (only the scores read it). The running row maxima pass through
// shared memory: WG0 folds in A's (scale0: how much the old ones shrink), then WG1 folds in B's
// (scale1). P_A leaves relative to A's maxima, as soon as it exists, and WG1 scales it by
// scale1 in place when that is not 1; each warpgroup issues its own product before it posts its
// P. The maxima move only past a slack (next_max), so scales are rarely not 1.
//
// Tiles are 32 tokens, in four buffers of 36 KB (the same memory as two 64-token tiles): a
// tile's buffer is busy from its scores to the other warpgroup's last product, about a pair, so
// with four buffers every copy has a whole pair to land (session 2's 64-token seesaw had two
// buffers, and its refills landed late: bench/NOTES.md v8). A producer (thread 0 of the third
// warpgroup, which gives most of its registers to the other two) walks the
// CTA's tiles across sequence boundaries and copies each with one TMA box (64 columns x 32 rows
// x every slice, a 5-D tensor map: k_map_rank 5, k_box_rows 32) as soon as both warpgroups have
// released its buffer (mbarrier `empty`, one arrival per consumer warp).
//
// Shared memory (d = 576): q 72 KB + 4 tiles x 36 KB = 216 KB (+ 16 KB of P for d = 512).
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

// Tuning knobs (bench/NOTES.md, v11, has what each measured; CUPYMLA_DEFINES sets them):
// MLA_Q_REGS: the first k steps of the scores take q from registers (4 a step) instead of shared
// memory, whose bandwidth bounds the m64n32 scores (8: 3-5% faster than 0; 12: within noise).
#ifndef MLA_Q_REGS
#define MLA_Q_REGS 8
#endif
// MLA_TRACE (diagnostics only): clock() stamps of a few pairs of CTA 0 (see stamp()).
#ifndef MLA_TRACE
#define MLA_TRACE 0
#endif
// MLA_S_ORDER: warpgroup 1 issues its next scores only after warpgroup 0 has issued its own.
#ifndef MLA_S_ORDER
#define MLA_S_ORDER 1
#endif
// MLA_WG0_OVERLAP: warpgroup 0 issues its next scores ahead of P_B V_B,L and starts the next
// softmax while that product still runs (measured 3-5% slower: off).
#ifndef MLA_WG0_OVERLAP
#define MLA_WG0_OVERLAP 0
#endif
// MLA_Q_BULK: the first sequence's q comes with one copy-engine copy into the empty buffers 2
// and 3 (its 64 rows are contiguous in the usual layouts), then is swizzled into place; the
// producer fills those buffers only after that. The first q wait drops from ~9.9k to ~6.3k
// clocks (cp.async of 72 KB; trace_switch.py): b4 s_q4 lens 43.1 -> 39.8 us, b32 41.6 -> 40.9,
// other rows level (bench/NOTES.md, session 7). Later sequences' q still come by cp.async:
// the buffers hold the next tiles by then.
#ifndef MLA_Q_BULK
#define MLA_Q_BULK 1
#endif
// MLA_MAX_SLACK: see next_max() in common/seesaw.cuh.

namespace {

constexpr int D = MLA_HEAD_DIM;
constexpr int Q_REGS = MLA_Q_REGS;
constexpr int BLOCK_M = 64;
constexpr int T = 32;                        // tokens a tile
constexpr int NBUF = 4;                      // tile buffers
constexpr int CONSUMERS = 256;               // two warpgroups
constexpr int THREADS = CONSUMERS + 128;     // + the producer warpgroup (one thread works)
constexpr int SLICES = D / 64;
constexpr int Q_SLICE = BLOCK_M * 64;        // elements of one 64-column slice of q
constexpr int K_SLICE = T * 64;              // ... of a tile
constexpr bool ROPE = D > 512;               // slice 8 (rope): read by the scores only
// V (the first 512 columns of a tile) as wgmma's MN-major B operand: byte offsets between
// 64-column slices (LBO) and groups of 8 tokens (SBO).
constexpr u32 V_LBO = T * 128, V_SBO = 8 * 128;

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
    unsigned long long full[NBUF];           // the buffer's tile has landed
    unsigned long long empty[NBUF];          // every consumer warp is done with it
    unsigned long long q_landed;             // MLA_Q_BULK: the bulk copy of the first q landed
    unsigned long long q_ready;              // MLA_Q_BULK: buffers 2 and 3 are free again
};

// MLA_TRACE=1: clock() stamps of pairs TRACE_FIRST .. + 7 of CTA 0's first sequence, read back
// by bench/trace_seesaw.py as [warpgroup][pair][stamp]. MLA_TRACE=2: stamps of CTA 0's sequence
// switches (seq_stamp), read back by bench/trace_switch.py as [sequence][stamp].
#if MLA_TRACE
constexpr int TRACE_FIRST = 20;
constexpr int TRACE_SEQS = 8;
}  // namespace
extern "C" __device__ u32 mla_trace[2 * 8 * 12];   // a plain name, for cupy's get_global
__device__ u32 mla_trace[2 * 8 * 12];
extern "C" __device__ u32 mla_trace_seq[TRACE_SEQS * 16];
__device__ u32 mla_trace_seq[TRACE_SEQS * 16];
namespace {
#endif
__device__ __forceinline__ void stamp(int wg, int pair, int i) {
#if MLA_TRACE == 1
    if (pair >= TRACE_FIRST && pair < TRACE_FIRST + 8 && threadIdx.x % 128 == 0 && blockIdx.x + blockIdx.y + blockIdx.z == 0)
        mla_trace[(wg * 8 + pair - TRACE_FIRST) * 12 + i] = (u32)clock();
#endif
}
// Stamp i of the seq-th sequence of CTA 0, by thread 0 (i < 12) or the producer (i >= 12).
constexpr int TRACE_SEQS_OFF = 1 << 20;   // a seq no stamp is kept for
__device__ __forceinline__ void seq_stamp(int seq, int i) {
#if MLA_TRACE == 2
    if (seq < TRACE_SEQS && blockIdx.x + blockIdx.y + blockIdx.z == 0)
        mla_trace_seq[seq * 16 + i] = (u32)clock();
#endif
}

// The producer: thread 0 of the third warpgroup copies the CTA's tiles, in the order the warpgroups consume
// them, each into the next buffer as soon as it is free.
__device__ __forceinline__ void produce(const DecodeParams& p, Smem& sm, const int* sched, int g, int m0) {
    const int page_mask = (1 << p.page_shift) - 1;
    int k = 0;   // tiles issued so far
    for (int b = sched[0]; b <= sched[2]; ++b) {
        seq_stamp(b - sched[0], 12);
        const Piece pc = piece_of(p, sched, b);
        const int n = tiles_of(p, pc, m0, BLOCK_M, T);
        const int load_end = load_end_of(p, pc);
        const int* bt = p.block_table + b * p.bt_stride_b;
        for (int j = 0; j < n; ++j, ++k) {
            const int t0 = pc.start + j * T;
            const bool load = t0 < load_end;   // tokens past it are not in the block table: zeros
            const int page = load ? bt[t0 >> p.page_shift] : 0;   // in flight during the wait
            const int buf = k % NBUF;
            if (k >= NBUF) mbar_wait(&sm.empty[buf], (k / NBUF - 1) & 1);
            if (MLA_Q_BULK && k == 2) mbar_wait(&sm.q_ready, 0);
            if (j == 0) seq_stamp(b - sched[0], 13);
            if (load) {
                mbar_arrive_expect_tx(&sm.full[buf], SLICES * T * 128);
                tma_load_5d(sm.k[buf], &p.k_map, &sm.full[buf], 0, t0 & page_mask, 0, g, page);
            } else {
                mbar_arrive(&sm.full[buf]);
            }
            if (j == 0) seq_stamp(b - sched[0], 14);
        }
    }
}

// The m tile's 64 rows of q are one contiguous run of 64 x D elements: a full tile, rows one head
// apart, and a new s (s_q > 1) only where the next head group follows (one kv head).
__device__ __forceinline__ bool q_rows_contiguous(const DecodeParams& p, int m0) {
    return m0 + BLOCK_M <= p.rows && p.q_stride_h == D &&
           (p.s_q == 1 || (p.h_kv == 1 && p.q_stride_s == (long long)p.heads_per_kv * D));
}

// MLA_Q_BULK: the first sequence's q, copied whole into buffers 2 and 3 (72 KB, free until the
// producer's third copy) by the copy engine, then moved by the consumers into sm.q's swizzled
// layout (load_q's places).
__device__ __forceinline__ void load_q_bulk(const DecodeParams& p, Smem& sm, int b, int g, int m0) {
    static_assert(BLOCK_M * D <= 2 * SLICES * K_SLICE, "q must fit in two tile buffers");
    elem_t* stage = sm.k[2];
    if (threadIdx.x == 0) {
        const int s = m0 / p.heads_per_kv, h = g * p.heads_per_kv + m0 % p.heads_per_kv;
        const u16* src = static_cast<const u16*>(p.q) + b * p.q_stride_b + s * p.q_stride_s + h * p.q_stride_h;
        mbar_arrive_expect_tx(&sm.q_landed, BLOCK_M * D * 2);
        bulk_load(stage, src, BLOCK_M * D * 2, &sm.q_landed);
    }
    mbar_wait(&sm.q_landed, 0);
    for (int c = threadIdx.x; c < BLOCK_M * (D / 8); c += CONSUMERS) {
        const int r = c / (D / 8), col = (c % (D / 8)) * 8;
        *reinterpret_cast<uint4*>(sm.q + swz(BLOCK_M, r, col)) = *reinterpret_cast<const uint4*>(stage + r * D + col);
    }
}

__device__ __forceinline__ int buf_of(int k) { return k % NBUF; }
__device__ __forceinline__ u32 parity_of(int k) { return (k / NBUF) & 1; }

// q's first Q_REGS k steps as A fragments (rows row[0], row[1]; columns 16 kk + 2 tq (+8)).
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

// S = Q K^T for the tile of global index k (m64n32k16, 4 k steps a slice). (wg, pair: for the
// trace stamp 10, the tile landed.)
__device__ __forceinline__ void scores(Smem& sm, float (&s)[16], int k, const QRegs& qr, int wg, int pair) {
    mbar_wait(&sm.full[buf_of(k)], parity_of(k));
    stamp(wg, pair, 10);
    const u64 desc_q = smem_desc(sm.q, 16, 1024);
    const u64 desc_k = smem_desc(sm.k[buf_of(k)], 16, 1024);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const u64 q_off = ((kk / 4) * Q_SLICE * 2 + (kk % 4) * 32) >> 4;   // slice, then 16 columns
        const u64 k_off = ((kk / 4) * K_SLICE * 2 + (kk % 4) * 32) >> 4;
        if (kk < Q_REGS) wgmma_m64n32k16_rs(s, qr.a[kk < Q_REGS ? kk : 0], desc_k + k_off, kk > 0);
        else wgmma_m64n32k16_ss<0, 0>(s, desc_q + q_off, desc_k + k_off, kk > 0);
    }
    wgmma_commit();
}

// P (accumulator layout, rows times f) as the A operand of the two 16-token k steps of the tile:
// the accumulator and A-fragment layouts line up, 8 values a k step.
__device__ __forceinline__ void pack_p(const float (&s)[16], const float (&f)[2], u32 (&a)[2][4]) {
#pragma unroll
    for (int kt = 0; kt < 2; ++kt)
#pragma unroll
        for (int i = 0; i < 4; ++i)
            a[kt][i] = pack2(s[8 * kt + 2 * i] * f[i % 2], s[8 * kt + 2 * i + 1] * f[i % 2]);
}

// Where a tile's P (64 rows x 32 tokens) goes for the other warpgroup's product: into the tile's
// own rope slice, which only its scores read (done by then), so every buffer carries its own P
// and a P is never overwritten while a product still reads it; with d = 512, a separate area
// per buffer. 64 bytes a row, in wgmma's 64-byte swizzle (16-byte piece j of row r at
// j ^ ((r / 2) % 4)), K-major: the A operand of P V.
__device__ __forceinline__ elem_t* p_of(Smem& sm, int buf) { return ROPE ? sm.k[buf] + 8 * K_SLICE : sm.p[buf]; }

__device__ __forceinline__ void store_p(elem_t* sp, const u32 (&a)[2][4], const Ctx& c) {
#pragma unroll
    for (int kt = 0; kt < 2; ++kt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int row = c.row[i % 2], col = 16 * kt + 8 * (i / 2) + 2 * c.tq;
            *reinterpret_cast<u32*>(sp + row * T + ((((col / 8) ^ ((row / 2) % 4)) * 8) + col % 8)) = a[kt][i];
        }
}

// This thread's values of a stored P (store_p's places) times f, per row.
__device__ __forceinline__ void scale_p(elem_t* sp, const float (&f)[2], const Ctx& c) {
#pragma unroll
    for (int kt = 0; kt < 2; ++kt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int row = c.row[i % 2], col = 16 * kt + 8 * (i / 2) + 2 * c.tq;
            u32& v = *reinterpret_cast<u32*>(sp + row * T + ((((col / 8) ^ ((row / 2) % 4)) * 8) + col % 8));
            float lo, hi;
            unpack2(v, lo, hi);
            v = pack2(lo * f[i % 2], hi * f[i % 2]);
        }
}

// O (+)= P V over one 256-column half of the tile's V, P from registers or from shared memory
// (columns col0 ..). 16 tokens a k step.
template <int HALF>
__device__ __forceinline__ void pv_regs(float (&o)[128], const u32 (&a)[2][4], const elem_t* sk) {
    const u64 desc_v = smem_desc(sk + 4 * HALF * K_SLICE, V_LBO, V_SBO);
    wgmma_fence();
#pragma unroll
    for (int kt = 0; kt < 2; ++kt) wgmma_m64n256k16_rs<1>(o, a[kt], desc_v + kt * 128, 1);
    wgmma_commit();
}
template <int HALF>
__device__ __forceinline__ void pv_smem(float (&o)[128], const elem_t* sp, const elem_t* sk) {
    const u64 desc_p = smem_desc_sw64(sp, 8 * 64);
    const u64 desc_v = smem_desc(sk + 4 * HALF * K_SLICE, V_LBO, V_SBO);
    wgmma_fence();
#pragma unroll
    for (int kt = 0; kt < 2; ++kt) wgmma_m64n256k16_ss<1>(o, desc_p + kt * 2, desc_v + kt * 128, 1);
    wgmma_commit();
}

// A consumer warp is done with buffer k (after its last product reading it has completed).
__device__ __forceinline__ void release(Smem& sm, int k) {
    if (threadIdx.x % 32 == 0) mbar_arrive(&sm.empty[buf_of(k)]);
}

// Warpgroup 0's share of the pair (A = tile it, B = tile it + 1 of the piece). s holds A's
// scores on entry and the next A's on exit; m_run the running maxima (registers).
__device__ __forceinline__ void wg0_pair(Smem& sm, const Ctx& c, int it, float (&o)[128], float (&s)[16],
                                         float (&lsum)[2], const QRegs& qr, float (&m_run)[2], int& pending) {
    const int ka = c.k0 + it, kb = ka + 1;
    const int ta = c.start + it * T, tb = ta + T;
    const bool has_b = it + 1 < c.n, next_a = it + 2 < c.n;

    // Softmax of A against the running maxima; scale0 tells WG1 how much O_R shrinks.
    stamp(0, it / 2, 0);
    float m_new[2], base[2], sc0[2];
    mask_and_max(s, m_new, m_run, ta, c);
    stamp(0, it / 2, 9);
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
    stamp(0, it / 2, 1);
    exp_rows(s, base, lsum);
    u32 pa[2][4];
    const float one[2] = {1.f, 1.f};
    pack_p(s, one, pa);
    if (MLA_WG0_OVERLAP) {   // the previous pair's P_B V_B,L ran during this softmax
        wgmma_wait<0>();
        reg_fence(o);
        if (pending >= 0) release(sm, pending);
        pending = -1;
    }

    // O_L = O_L x scale0 + P_A V_A,L, issued first: the tensor cores idle until it comes.
    scale_o(o, sc0);
    zero_v_tail<T>(sm.k[buf_of(ka)], 0, c.load_end - ta, BAR_WG);
    pv_regs<0>(o, pa, sm.k[buf_of(ka)]);
    stamp(0, it / 2, 2);
    // P_A for WG1, relative to A's maxima (WG1 folds B's into its own output).
    store_p(p_of(sm, buf_of(ka)), pa, c);
    fence_proxy_async();
    bar_arrive(BAR_P_A, CONSUMERS);
    stamp(0, it / 2, 3);

    float sc1[2] = {1.f, 1.f};
    m_run[0] = m_new[0];
    m_run[1] = m_new[1];
    if (has_b) {
        bar_sync(BAR_P_B, CONSUMERS);   // B's maxima and P_B
        stamp(0, it / 2, 4);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            sc1[h] = sm.scale1[c.row[h]];
            m_run[h] = sm.row_max[c.row[h]];
        }
    }
    wgmma_wait<0>();
    reg_fence(o);
#pragma unroll
    for (int kt = 0; kt < 2; ++kt) reg_fence(pa[kt]);   // the product read them until now
    release(sm, ka);
    stamp(0, it / 2, 5);

#if MLA_WG0_OVERLAP
    if (has_b) {
        scale_o(o, sc1);
#pragma unroll
        for (int h = 0; h < 2; ++h) lsum[h] *= sc1[h];
        zero_v_tail<T>(sm.k[buf_of(kb)], 0, c.load_end - tb, BAR_WG);
    }
    if (next_a) scores(sm, s, ka + 2, qr, 0, it / 2);
    if (MLA_S_ORDER && it + 3 < c.n) bar_arrive(BAR_S_ISSUED, CONSUMERS);
    stamp(0, it / 2, 7);
    if (has_b) {
        pv_smem<0>(o, p_of(sm, buf_of(kb)), sm.k[buf_of(kb)]);
        pending = kb;
        wgmma_wait<1>();
    } else {
        wgmma_wait<0>();
    }
    reg_fence(s);
    stamp(0, it / 2, 8);
    return;
#endif
    if (has_b) {   // O_L = O_L x scale1 + P_B V_B,L
        scale_o(o, sc1);
#pragma unroll
        for (int h = 0; h < 2; ++h) lsum[h] *= sc1[h];
        zero_v_tail<T>(sm.k[buf_of(kb)], 0, c.load_end - tb, BAR_WG);
        pv_smem<0>(o, p_of(sm, buf_of(kb)), sm.k[buf_of(kb)]);
        stamp(0, it / 2, 6);
    }
    // The scores of the next A while P_B V_B,L runs.
    if (next_a) scores(sm, s, ka + 2, qr, 0, it / 2);
    if (MLA_S_ORDER && it + 3 < c.n) bar_arrive(BAR_S_ISSUED, CONSUMERS);   // WG1 has a next B
    stamp(0, it / 2, 7);
    if (has_b) {
        wgmma_wait<1>();   // the groups complete in order: P_B V_B,L is done, maybe not the scores
        reg_fence(o);
        release(sm, kb);
    }
    // Unconditionally: ptxas cannot tell that the branches above leave nothing in flight, and
    // would serialise every wgmma of the kernel.
    wgmma_wait<0>();
    reg_fence(s);
    reg_fence(o);
    stamp(0, it / 2, 8);
}

// Warpgroup 1's share: softmax B against A's maxima, O_R = (O_R x scale0 + P_A V_A,R) x scale1
// + P_B V_B,R, the scores of the next B. s holds B's scores on entry (if there is a B) and the
// next B's on exit.
__device__ __forceinline__ void wg1_pair(Smem& sm, const Ctx& c, int it, float (&o)[128], float (&s)[16],
                                         float (&lsum)[2], const QRegs& qr) {
    const int ka = c.k0 + it, kb = ka + 1;
    const int ta = c.start + it * T, tb = ta + T;
    const bool has_b = it + 1 < c.n, next_b = it + 3 < c.n;

    stamp(1, it / 2, 0);
    bar_sync(BAR_SCALE0, CONSUMERS);
    stamp(1, it / 2, 1);
    float sc0[2], sc1[2] = {1.f, 1.f};
    u32 pb[2][4];
#pragma unroll
    for (int h = 0; h < 2; ++h) sc0[h] = sm.scale0[c.row[h]];
    if (has_b) {
        float m_a[2], m_new[2], base[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) m_a[h] = sm.row_max[c.row[h]];
        mask_and_max(s, m_new, m_a, tb, c);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            base[h] = m_new[h] == -inf_f() ? 0.f : m_new[h];
            sc1[h] = fast_exp2(m_a[h] - base[h]);
            lsum[h] *= sc0[h] * sc1[h];
        }
        __syncwarp();   // the quad has read row_max before its first thread rewrites it
        if (c.tq == 0) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                sm.row_max[c.row[h]] = m_new[h];
                sm.scale1[c.row[h]] = sc1[h];
            }
        }
        exp_rows(s, base, lsum);
        const float one[2] = {1.f, 1.f};
        pack_p(s, one, pb);
        // O_R = O_R x scale0 x scale1 + P_B V_B,R, issued first: the tensor cores idle until
        // then; P_A V_A,R, relative to A's maxima, gets scale1 on P_A below (rarely not 1).
        const float f[2] = {sc0[0] * sc1[0], sc0[1] * sc1[1]};
        scale_o(o, f);
        zero_v_tail<T>(sm.k[buf_of(kb)], 1, c.load_end - tb, BAR_WG + 1);
        pv_regs<1>(o, pb, sm.k[buf_of(kb)]);
        stamp(1, it / 2, 2);
        // P_A is in before P_B goes out: WG0 posts its next P_A only after seeing P_B, so it
        // never arrives twice at BAR_P_A before this warpgroup has waited there once.
        bar_sync(BAR_P_A, CONSUMERS);
        store_p(p_of(sm, buf_of(kb)), pb, c);
        fence_proxy_async();
        bar_arrive(BAR_P_B, CONSUMERS);
        // Each warp rescales its own rows of P_A if it must (a warp-level test); the barrier is
        // for all of them, so it cannot sit inside that test (warps would wait for each other
        // forever: the first version did, and hung the GPU suite).
        if (__any_sync(0xffffffffu, sc1[0] != 1.f || sc1[1] != 1.f)) {
            scale_p(p_of(sm, buf_of(ka)), sc1, c);
            fence_proxy_async();
        }
        bar_sync(BAR_WG + 1, 128);   // all of P_A rescaled before the product reads it
    } else {
#pragma unroll
        for (int h = 0; h < 2; ++h) lsum[h] *= sc0[h];
        scale_o(o, sc0);
        bar_sync(BAR_P_A, CONSUMERS);
    }
    stamp(1, it / 2, 3);

    // O_R += P_A V_A,R
    zero_v_tail<T>(sm.k[buf_of(ka)], 1, c.load_end - ta, BAR_WG + 1);
    pv_smem<1>(o, p_of(sm, buf_of(ka)), sm.k[buf_of(ka)]);
    stamp(1, it / 2, 4);
    wgmma_wait<0>();
    reg_fence(o);
#pragma unroll
    for (int kt = 0; kt < 2; ++kt) reg_fence(pb[kt]);
    release(sm, ka);
    if (has_b) release(sm, kb);
    stamp(1, it / 2, 5);

    if (next_b) {
        // A's scores first: WG0's softmax, which WG1's waits for, then overlaps B's scores.
        if (MLA_S_ORDER) bar_sync(BAR_S_ISSUED, CONSUMERS);
        scores(sm, s, kb + 2, qr, 1, it / 2);
    }
    stamp(1, it / 2, 6);
    wgmma_wait<0>();
    reg_fence(s);
    stamp(1, it / 2, 7);
}

}  // namespace

extern "C" __global__ void __launch_bounds__(THREADS, 1) mla_decode_sm90_seesaw(const __grid_constant__ DecodeParams p) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    Smem& sm = smem_window<Smem>(smem_raw, p.k_box_rows != T || p.k_map_rank != 5);

    launch_dependents();
    const int m0 = blockIdx.x * BLOCK_M;
    const int g = blockIdx.y;
    const int* sched = p.sched + blockIdx.z * 8;

    if (threadIdx.x == 0) {
        for (int i = 0; i < NBUF; ++i) {
            mbar_init(&sm.full[i], 1);
            mbar_init(&sm.empty[i], CONSUMERS / 32);
        }
        mbar_init(&sm.q_landed, 1);
        mbar_init(&sm.q_ready, 1);
        mbar_init_fence();
    }
    __syncthreads();   // barriers initialised for everyone, the producer included
    // Registers: 384 threads get 168 each at launch; the producer needs few, so it gives most of
    // its share to the consumers (o alone is 128 a thread).
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

    for (int b = sched[0]; b <= sched[2]; ++b) {
        const int seq = threadIdx.x == 0 ? b - sched[0] : TRACE_SEQS_OFF;
        seq_stamp(seq, 0);
        const Piece pc = piece_of(p, sched, b);
        c.start = pc.start;
        c.n = tiles_of(p, pc, m0, BLOCK_M, T);
        c.load_end = load_end_of(p, pc);
        for (int h = 0; h < 2; ++h) c.limit[h] = key_limit(p, pc, m0 + c.row[h]);

        bar_sync(BAR_CONSUMERS, CONSUMERS);   // the previous sequence is done with q, row_max, p
        seq_stamp(seq, 1);
        if (threadIdx.x < BLOCK_M) sm.row_max[threadIdx.x] = -inf_f();
        if (MLA_Q_BULK && b == sched[0] && c.n > 0 && q_rows_contiguous(p, m0)) {
            load_q_bulk(p, sm, b, g, m0);
        } else if (c.n > 0) {
            load_q<CONSUMERS, BLOCK_M>(p, sm.q, b, g, m0);
        }
        cp_async_commit();
        cp_async_wait<0>();
        seq_stamp(seq, 2);
        fence_proxy_async();
        bar_sync(BAR_CONSUMERS, CONSUMERS);   // q and row_max are in place for everyone
        seq_stamp(seq, 3);
        if (MLA_Q_BULK && b == sched[0] && threadIdx.x == 0) mbar_arrive(&sm.q_ready);   // buffers 2, 3 free
        QRegs qr;
        load_q_regs(sm, qr, c.row, c.tq);

        float o[128];
#pragma unroll
        for (int i = 0; i < 128; ++i) o[i] = 0.f;
        float lsum[2] = {0.f, 0.f};
        float s[16];
        // WG0 starts on tile 0, WG1 on tile 1 (queued behind WG0's, as in the pairs).
        if (MLA_S_ORDER && wg == 1 && c.n > 1) bar_sync(BAR_S_ISSUED, CONSUMERS);
        if (wg < c.n) scores(sm, s, c.k0 + wg, qr, wg, -1);
        if (MLA_S_ORDER && wg == 0 && c.n > 1) bar_arrive(BAR_S_ISSUED, CONSUMERS);
        wgmma_wait<0>();
        reg_fence(s);
        seq_stamp(seq, 4);
        // One loop per warpgroup: a shared loop body joins the two paths, and ptxas then moves
        // o's 128 registers at every iteration (~150 clocks a pair, measured with MLA_TRACE).
        if (wg == 0) {
            float m_run[2] = {-inf_f(), -inf_f()};
            int pending = -1;   // MLA_WG0_OVERLAP: a tile whose last product may still run
            for (int it = 0; it < c.n; it += 2) wg0_pair(sm, c, it, o, s, lsum, qr, m_run, pending);
            if (MLA_WG0_OVERLAP) {
                wgmma_wait<0>();
                reg_fence(o);
                if (pending >= 0) release(sm, pending);
            }
        } else {
            for (int it = 0; it < c.n; it += 2) wg1_pair(sm, c, it, o, s, lsum, qr);
        }
        c.k0 += c.n;
        seq_stamp(seq, 5);

        add_row_sums(sm.row_sum, c, lsum, wg, BAR_CONSUMERS, CONSUMERS);
        seq_stamp(seq, 6);
        store_rows(p, sm.row_sum, sm.row_max, c, o, pc, b, g, m0, wg);
        seq_stamp(seq, 7);
    }
}
