// MLA_CLOCKS=1 (diagnostics only): each CTA's start and end by %globaltimer and clock64, and its
// SM, into mla_clocks[cta][5] = {start ns, start clock, end ns, end clock, SM} (bench/clock_probe.py).
// Answers whether a slow call ran fewer clocks a second or more clocks, and how unevenly the CTAs
// end. Include after ptx.cuh, outside any namespace.
#pragma once

#ifndef MLA_CLOCKS
#define MLA_CLOCKS 0
#endif

#if MLA_CLOCKS
extern "C" __device__ unsigned long long mla_clocks[1024 * 5];   // a plain name, for cupy's get_global
__device__ unsigned long long mla_clocks[1024 * 5];
#endif

// at = 0: the CTA starts; 1: it is done (thread 0 of the CTA, which must reach both).
__device__ __forceinline__ void clock_stamp(int at) {
#if MLA_CLOCKS
    const int cta = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    if (threadIdx.x == 0 && cta < 1024) {
        unsigned long long t, c;
        unsigned sm;
        asm volatile("mov.u64 %0, %%globaltimer;\nmov.u64 %1, %%clock64;\nmov.u32 %2, %%smid;"
                     : "=l"(t), "=l"(c), "=r"(sm));
        mla_clocks[cta * 5 + 2 * at] = t;
        mla_clocks[cta * 5 + 2 * at + 1] = c;
        mla_clocks[cta * 5 + 4] = sm;
    }
#endif
}
