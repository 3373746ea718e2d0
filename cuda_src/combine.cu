// Merges the pieces of split sequences: lse = log(sum_i exp(lse_i)), out = sum_i exp(lse_i - lse) o_i.
// Sequences the scheduler left whole were written by the decode kernel itself and are skipped.
//
// Two shapes, chosen by the host (api._combine_shape) from how many pieces a sequence has (about
// num_parts / batch):
// * MLA_COMBINE_WIDE = 0 (many sequences, few pieces each): a warp per (sequence, kv head, row),
//   four to a CTA, each lane owning 16 of the 512 columns.
// * MLA_COMBINE_WIDE = 1 (few sequences split over up to every SM): a CTA per (row, sequence,
//   MLA_COMBINE_COLS columns: 128 or 256), whose 8 warps take the pieces round-robin and add up
//   through shared memory, each lane owning 4 columns a 128.
// Either way a warp reads UNROLL pieces at once, the weights apart from the values, so that the
// loads do not wait on each other: reading one piece's lse, then its values, then the next
// (v2) made the b = 1 combine take 11 us, latency after latency. The first UNROLL pieces' values
// are asked for before the lse reductions (session 6).
// Compile with -DMLA_FP16=0/1 for the output type.
#include "common/params.cuh"
#include "common/ptx.cuh"

#ifndef MLA_COMBINE_WIDE
#define MLA_COMBINE_WIDE 0
#endif
#ifndef MLA_COMBINE_COLS
#define MLA_COMBINE_COLS 128
#endif

namespace {
constexpr int WIDE = MLA_COMBINE_WIDE;
constexpr int WARPS = WIDE ? 8 : 4;
constexpr int TASKS_PER_CTA = WIDE ? 1 : 4;
constexpr int COLS = WIDE ? MLA_COMBINE_COLS : 512;   // columns of one CTA (wide: 128, 256 or 512)
constexpr int VEC = COLS / 128;               // float4s a lane holds
// Pieces a warp reads at once. The narrow shape's CTAs mostly start together once the decode
// ends, more of them than fit at once: 2 pieces (most split sequences have 2) instead of 4 cut its
// registers 96 -> 56, so more are resident (4K h_q128 -0.8%, b32 -2.6%; bench/NOTES.md, session 12).
constexpr int UNROLL = WIDE ? 8 * 128 / COLS : 2;
static_assert(COLS == 128 || COLS == 256 || COLS == 512, "MLA_COMBINE_COLS: 128, 256 or 512");

__device__ __forceinline__ void fma_into(float4& acc, float w, const float4& v) {
    acc.x += w * v.x; acc.y += w * v.y; acc.z += w * v.z; acc.w += w * v.w;
}
__device__ __forceinline__ void add_into(float4& acc, const float4& v) { fma_into(acc, 1.f, v); }

// Wide: the lse of the first MAX_PIECES pieces of the CTA's row, read once (more come from global).
constexpr int MAX_PIECES = WIDE ? 1024 : 1;
__shared__ float piece_lse[MAX_PIECES];
__shared__ float red[2][WARPS];

__device__ __forceinline__ float lse_of(const float* lse_in, long long stride, int k) {
    return WIDE && k < MAX_PIECES ? piece_lse[k] : lse_in[k * stride];
}

// Max (or sum) over the warp, and for the wide shape over the CTA (through `slots`).
template <bool MAX>
__device__ __forceinline__ float reduce(float v, float* slots) {
    for (int off = 16; off > 0; off >>= 1) {
        const float o = __shfl_xor_sync(0xffffffffu, v, off);
        v = MAX ? fmaxf(v, o) : v + o;
    }
    if (!WIDE) return v;
    if (threadIdx.x % 32 == 0) slots[threadIdx.x / 32] = v;
    __syncthreads();
    v = slots[0];
    for (int w = 1; w < WARPS; ++w) v = MAX ? fmaxf(v, slots[w]) : v + slots[w];
    return v;
}
__device__ __forceinline__ void zero(float4& v) { v = make_float4(0.f, 0.f, 0.f, 0.f); }

// A lane's 4 columns of one piece as stored: fp32, or with MLA_ACC16 four 16-bit values kept
// packed until they are weighed (half the registers: more CTAs resident at once).
#if MLA_ACC16
typedef uint2 raw4;
__device__ __forceinline__ float4 unpack4(const uint2& w) {
    float4 v;
    unpack2(w.x, v.x, v.y);
    unpack2(w.y, v.z, v.w);
    return v;
}
#else
typedef float4 raw4;
__device__ __forceinline__ float4 unpack4(const float4& v) { return v; }
#endif

// The values of pieces k0, k0 + step, ... (UNROLL of them; zeros past the last) of this lane.
__device__ __forceinline__ void load_values(const CombineParams& p, long long first, long long stride, int col0,
                                            int lane, int k0, int step, int pieces, raw4 (&v)[UNROLL][VEC]) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
        const int k = k0 + u * step;
        const long long at = (first + k * stride) * 512 + col0;
        const raw4* src = MLA_ACC16 ? reinterpret_cast<const raw4*>(reinterpret_cast<const u16*>(p.o_accum) + at) + lane
                                    : reinterpret_cast<const raw4*>(p.o_accum + at) + lane;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
            if (k >= pieces) v[u][j] = raw4{};
            else v[u][j] = src[j * 32];
        }
    }
}
__device__ __forceinline__ void store(u16* out, const float4& v) {
    *reinterpret_cast<uint2*>(out) = make_uint2(pack2(v.x, v.y), pack2(v.z, v.w));
}
}

extern "C" __global__ void __launch_bounds__(WARPS * 32) mla_combine(const CombineParams p) {
    __shared__ float4 partial[WIDE ? WARPS : 1][VEC][32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int b = blockIdx.y;
    const int task = WIDE ? blockIdx.x : blockIdx.x * TASKS_PER_CTA + warp;   // over h_kv * rows
    const int col0 = WIDE ? blockIdx.z * COLS : 0;
    const int pieces = p.num_splits[b + 1] - p.num_splits[b];
    if (pieces <= 1 || task >= p.h_kv * p.rows) return;   // uniform over a WIDE CTA
#if __CUDA_ARCH__ >= 900
    // Launched to overlap the decode kernel (launch.py, overlap_previous): wait for its results.
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
    const int g = task / p.rows, row = task % p.rows;
    const long long stride = (long long)p.h_kv * p.rows;   // between consecutive slots
    const long long first = (long long)accum_slot(p.num_splits, b, 0) * stride + task;
    const float* lse_in = p.lse_accum + first;
    const int step = WIDE ? WARPS : 1, k_begin = WIDE ? warp : 0;
    // The first UNROLL pieces' values do not depend on the lse: ask for them before its
    // reductions, one memory round trip fewer (b8 h_q128 32K: 17.8 -> 10.3 us; bench/NOTES.md).
    raw4 v[UNROLL][VEC];
    load_values(p, first, stride, col0, lane, k_begin, step, pieces, v);

    // The total lse. Narrow: each warp works it out alone (a few pieces, no barrier). Wide: the
    // CTA's threads share the pieces and keep their lse in shared memory; every warp reading
    // all of them (strided, a sector each) made L2 traffic the bottleneck of a long sequence.
    const int first_k = WIDE ? threadIdx.x : lane, step_k = WIDE ? WARPS * 32 : 32;
    float mx = -inf_f();
    for (int k = first_k; k < pieces; k += step_k) {
        const float l = lse_in[k * stride];
        if (WIDE && k < MAX_PIECES) piece_lse[k] = l;
        mx = fmaxf(mx, l);
    }
    mx = reduce<true>(mx, red[0]);
    const float base = mx == -inf_f() ? 0.f : mx;
    float sum = 0.f;
    for (int k = first_k; k < pieces; k += step_k) sum += __expf(lse_of(lse_in, stride, k) - base);
    sum = reduce<false>(sum, red[1]);
    const float lse = sum > 0.f ? base + __logf(sum) : inf_f();   // +inf: no piece saw a key

    // Lane l owns columns col0 + 4 l + 128 j (+ 0 .. 3): 16-byte loads, coalesced.
    // A piece's weight exp(lse_k - lse) is 0 for an empty piece (lse_k = -inf, values 0) and for
    // every piece when none saw a key (lse = +inf).
    float4 acc[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) zero(acc[j]);
    for (int k0 = k_begin; k0 < pieces; k0 += UNROLL * step) {
        if (k0 != k_begin) load_values(p, first, stride, col0, lane, k0, step, pieces, v);
        float lk[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int k = k0 + u * step;
            lk[u] = k < pieces ? lse_of(lse_in, stride, k) : -inf_f();
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const float w = __expf(lk[u] - lse);
#pragma unroll
            for (int j = 0; j < VEC; ++j) fma_into(acc[j], w, unpack4(v[u][j]));
        }
    }
    const int s = row / p.heads_per_kv, h = g * p.heads_per_kv + row % p.heads_per_kv;
    u16* out = static_cast<u16*>(p.out) + b * p.o_stride_b + s * p.o_stride_s + h * p.o_stride_h + col0;
    if (lane == 0 && (!WIDE || warp == 0) && col0 == 0) p.lse[((long long)b * p.h_q + h) * p.s_q + s] = lse;
    if (WIDE) {   // add up the warps' sums: warp j adds and writes the lanes' float4 j
#pragma unroll
        for (int j = 0; j < VEC; ++j) partial[warp][j][lane] = acc[j];
        __syncthreads();
        if (warp >= VEC) return;
        float4 sum = partial[0][warp][lane];
#pragma unroll
        for (int w = 1; w < WARPS; ++w) add_into(sum, partial[w][warp][lane]);
        store(out + warp * 128 + lane * 4, sum);
        return;
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) store(out + j * 128 + lane * 4, acc[j]);
}
