// Merges the pieces of split sequences: lse = log(sum_i exp(lse_i)), out = sum_i exp(lse_i - lse) o_i.
// One CTA per (query row of a kv head, sequence); sequences the scheduler left whole were written
// by the decode kernel itself and are skipped. A short or skewed batch splits one sequence over
// up to every SM, so the CTA's warps take the pieces round-robin (one warp walking 128 pieces in
// turn measured ~60 us of load latency for b = 1) and add their sums up through shared memory.
// Compile with -DMLA_FP16=0/1 for the output type.
#include "common/params.cuh"
#include "common/ptx.cuh"

#define COMBINE_WARPS 8

extern "C" __global__ void __launch_bounds__(COMBINE_WARPS * 32) mla_combine(const CombineParams p) {
    __shared__ float4 partial[COMBINE_WARPS][128];   // each warp's 512 columns
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int b = blockIdx.y;
    const int task = blockIdx.x;   // over h_kv * rows
    const int pieces = p.num_splits[b + 1] - p.num_splits[b];
    if (pieces <= 1) return;
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

    // Lane l owns columns 4l .. 4l+3 of each 128-column stripe: 16-byte loads, coalesced.
    float4 acc[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[j] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 2
    for (int k = warp; k < pieces; k += COMBINE_WARPS) {
        const float lk = lse_in[k * stride];
        if (lk == -inf_f()) continue;   // an empty piece: no weight
        const float w = __expf(lk - lse);
        const float4* src = reinterpret_cast<const float4*>(p.o_accum + (first + k * stride) * 512) + lane;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float4 v = src[j * 32];
            acc[j].x += w * v.x; acc[j].y += w * v.y; acc[j].z += w * v.z; acc[j].w += w * v.w;
        }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) partial[warp][j * 32 + lane] = acc[j];
    __syncthreads();

    // Threads 0..127 add up one 4-column group each over the warps and write it.
    if (threadIdx.x >= 128) return;
    const int c = threadIdx.x;   // columns 4c .. 4c+3
    float4 t = partial[0][c];
#pragma unroll
    for (int w = 1; w < COMBINE_WARPS; ++w) {
        const float4 v = partial[w][c];
        t.x += v.x; t.y += v.y; t.z += v.z; t.w += v.w;
    }
    const int s = row / p.heads_per_kv, h = g * p.heads_per_kv + row % p.heads_per_kv;
    u16* out = static_cast<u16*>(p.out) + b * p.o_stride_b + s * p.o_stride_s + h * p.o_stride_h;
    uint2 v;
    v.x = pack2(t.x, t.y);
    v.y = pack2(t.z, t.w);
    *reinterpret_cast<uint2*>(out + 4 * c) = v;
    if (c == 0) p.lse[((long long)b * p.h_q + h) * p.s_q + s] = lse;
}
