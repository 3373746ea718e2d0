// Merges the pieces of split sequences: lse = log(sum_i exp(lse_i)), out = sum_i exp(lse_i - lse) o_i.
// One warp per (sequence, kv head, row); sequences the scheduler left whole were written by
// the decode kernel itself and are skipped. Compile with -DMLA_FP16=0/1 for the output type.
#include "common/params.cuh"
#include "common/ptx.cuh"

#define COMBINE_WARPS 4

extern "C" __global__ void __launch_bounds__(COMBINE_WARPS * 32) mla_combine(const CombineParams p) {
    const int lane = threadIdx.x % 32;
    const int b = blockIdx.y;
    const int task = blockIdx.x * COMBINE_WARPS + threadIdx.x / 32;   // over h_kv * rows
    if (task >= p.h_kv * p.rows) return;
    const int pieces = p.num_splits[b + 1] - p.num_splits[b];
    if (pieces <= 1) return;
    const int g = task / p.rows, row = task % p.rows;
    const long long stride = (long long)p.h_kv * p.rows;   // between consecutive slots
    const long long first = (long long)accum_slot(p.num_splits, b, 0) * stride + task;

    float mx = -inf_f();
    for (int k = lane; k < pieces; k += 32) mx = fmaxf(mx, p.lse_accum[first + k * stride]);
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const float base = mx == -inf_f() ? 0.f : mx;
    float sum = 0.f;
    for (int k = lane; k < pieces; k += 32) sum += __expf(p.lse_accum[first + k * stride] - base);
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    const float lse = sum > 0.f ? base + __logf(sum) : inf_f();   // +inf: no piece saw a key

    // Each lane owns 4 columns in each of four 128-column stripes: 16-byte loads, coalesced.
    float acc[4][4] = {};
    for (int k = 0; k < pieces; ++k) {
        const float lk = p.lse_accum[first + k * stride];
        if (lk == -inf_f()) continue;
        const float w = __expf(lk - lse);
        const float4* src = reinterpret_cast<const float4*>(p.o_accum + (first + k * stride) * 512) + lane;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float4 v = src[j * 32];
            acc[j][0] += w * v.x; acc[j][1] += w * v.y; acc[j][2] += w * v.z; acc[j][3] += w * v.w;
        }
    }
    const int s = row / p.heads_per_kv, h = g * p.heads_per_kv + row % p.heads_per_kv;
    u16* out = static_cast<u16*>(p.out) + b * p.o_stride_b + s * p.o_stride_s + h * p.o_stride_h;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        uint2 v;
        v.x = pack2(acc[j][0], acc[j][1]);
        v.y = pack2(acc[j][2], acc[j][3]);
        *reinterpret_cast<uint2*>(out + j * 128 + lane * 4) = v;
    }
    if (lane == 0) p.lse[((long long)b * p.h_q + h) * p.s_q + s] = lse;
}
