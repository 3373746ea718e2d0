// Merges the pieces of split sequences: lse = log(sum_i exp(lse_i)), out = sum_i exp(lse_i - lse) o_i.
// Sequences the scheduler left whole were written by the decode kernel itself and are skipped.
//
// Two shapes, chosen by the host from how many pieces a sequence has (about num_parts / batch):
// * MLA_COMBINE_WIDE = 0 (many sequences, few pieces each): a warp per (sequence, kv head, row),
//   four to a CTA, each lane owning 16 of the 512 columns.
// * MLA_COMBINE_WIDE = 1 (few sequences split over up to every SM): a CTA per (row, sequence,
//   128-column quarter), whose 8 warps take the pieces round-robin and add up through shared
//   memory. One warp walking 128 pieces in turn was latency-bound (~60 us for b = 1).
// Compile with -DMLA_FP16=0/1 for the output type.
#include "common/params.cuh"
#include "common/ptx.cuh"

#ifndef MLA_COMBINE_WIDE
#define MLA_COMBINE_WIDE 0
#endif

namespace {
constexpr int WIDE = MLA_COMBINE_WIDE;
constexpr int WARPS = WIDE ? 8 : 4;
constexpr int TASKS_PER_CTA = WIDE ? 1 : 4;
constexpr int COLS = WIDE ? 128 : 512;        // columns of one CTA
constexpr int VEC = COLS / 128;               // float4s per lane
}

extern "C" __global__ void __launch_bounds__(WARPS * 32) mla_combine(const CombineParams p) {
    __shared__ float4 partial[WIDE ? WARPS : 1][32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int b = blockIdx.y;
    const int task = WIDE ? blockIdx.x : blockIdx.x * TASKS_PER_CTA + warp;   // over h_kv * rows
    const int col0 = WIDE ? blockIdx.z * COLS : 0;
    const int pieces = p.num_splits[b + 1] - p.num_splits[b];
    if (pieces <= 1 || task >= p.h_kv * p.rows) return;   // uniform over a WIDE CTA
    const int g = task / p.rows, row = task % p.rows;
    const long long stride = (long long)p.h_kv * p.rows;   // between consecutive slots
    const long long first = (long long)accum_slot(p.num_splits, b, 0) * stride + task;
    const float* lse_in = p.lse_accum + first;

    // Every warp works out the total lse itself: pieces are few per lane, and it saves a barrier.
    float mx = -inf_f();
    for (int k = lane; k < pieces; k += 32) mx = fmaxf(mx, lse_in[k * stride]);
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const float base = mx == -inf_f() ? 0.f : mx;
    float sum = 0.f;
    for (int k = lane; k < pieces; k += 32) sum += __expf(lse_in[k * stride] - base);
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    const float lse = sum > 0.f ? base + __logf(sum) : inf_f();   // +inf: no piece saw a key

    // Lane l owns columns col0 + 4l .. 4l+3 of each 128-column stripe: 16-byte loads, coalesced.
    float4 acc[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc[j] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
    for (int k = WIDE ? warp : 0; k < pieces; k += WIDE ? WARPS : 1) {
        const float lk = lse_in[k * stride];
        if (lk == -inf_f()) continue;   // an empty piece: no weight
        const float w = __expf(lk - lse);
        const float4* src = reinterpret_cast<const float4*>(p.o_accum + (first + k * stride) * 512 + col0) + lane;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
            const float4 v = src[j * 32];
            acc[j].x += w * v.x; acc[j].y += w * v.y; acc[j].z += w * v.z; acc[j].w += w * v.w;
        }
    }
    if (WIDE) {   // add up the warps' sums; warp 0 writes
        partial[warp][lane] = acc[0];
        __syncthreads();
        if (warp != 0) return;
#pragma unroll
        for (int w = 1; w < WARPS; ++w) {
            const float4 v = partial[w][lane];
            acc[0].x += v.x; acc[0].y += v.y; acc[0].z += v.z; acc[0].w += v.w;
        }
    }
    const int s = row / p.heads_per_kv, h = g * p.heads_per_kv + row % p.heads_per_kv;
    u16* out = static_cast<u16*>(p.out) + b * p.o_stride_b + s * p.o_stride_s + h * p.o_stride_h + col0;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
        uint2 v;
        v.x = pack2(acc[j].x, acc[j].y);
        v.y = pack2(acc[j].z, acc[j].w);
        *reinterpret_cast<uint2*>(out + j * 128 + lane * 4) = v;
    }
    if (lane == 0 && col0 == 0) p.lse[((long long)b * p.h_q + h) * p.s_q + s] = lse;
}
