"""How fast can the SMs pull data with the copy engine? (run on a GPU machine)

    python3 bench/l2_ceiling.py

Every SM runs one CTA whose single thread streams CHUNK-byte bulk copies (cp.async.bulk, the
engine the decode kernels' TMA tile copies use) into NBUF shared-memory buffers, refilling a
buffer as soon as its copy has landed (nothing reads the data): the most a CTA can pull
through the copy engine with that much in flight. Source: a buffer small enough to stay in L2
(after a warm-up pass), or one far larger than L2 (DRAM); CTAs c and c ^ 1 read the same
chunks in the same order, as the two m-tile CTAs of the h_q = 128 decode do. Prints the TB/s
delivered into shared memory over all SMs; from DRAM, the pairs sharing chunks make DRAM itself
serve half of that. Session 7 (H200): 16.9 TB/s from L2, 9.3 from DRAM (DRAM ~4.65), while the
h_q = 128 seesaw takes ~5.3 TB/s (72 KB a CTA per ~3300-clock pair): bench/NOTES.md.
"""

import sys

import cupy as cp

SRC = r"""
extern "C" __global__ void pull(const char* __restrict__ src, long long span, int chunk, int nbuf,
                                int iters, unsigned long long* sink) {
    extern __shared__ __align__(128) char smem[];
    __shared__ unsigned long long bar[16];
    if (threadIdx.x != 0) return;
    const unsigned bar0 = (unsigned)__cvta_generic_to_shared(bar);
    const unsigned dst0 = (unsigned)__cvta_generic_to_shared(smem);
    for (int i = 0; i < nbuf; ++i)
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(bar0 + 8 * i));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    const long long chunks = span / chunk;
    long long pos = (long long)(blockIdx.x / 2) * 7919 % chunks;   // pairs of CTAs share a stream
    for (int it = 0; it < iters; ++it) {
        const int b = it % nbuf;
        if (it >= nbuf) {
            const unsigned parity = ((it / nbuf) - 1) & 1;
            unsigned done = 0;
            while (!done)
                asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                             "selp.u32 %0, 1, 0, p;\n}" : "=r"(done) : "r"(bar0 + 8 * b), "r"(parity) : "memory");
        }
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar0 + 8 * b), "r"(chunk) : "memory");
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                     :: "r"(dst0 + b * chunk), "l"(src + pos * chunk), "r"(chunk), "r"(bar0 + 8 * b) : "memory");
        pos = (pos + 1) % chunks;
    }
    for (int it = iters; it < iters + nbuf; ++it) {   // the last nbuf copies
        const int b = it % nbuf;
        const unsigned parity = ((it / nbuf) - 1) & 1;
        unsigned done = 0;
        while (!done)
            asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                         "selp.u32 %0, 1, 0, p;\n}" : "=r"(done) : "r"(bar0 + 8 * b), "r"(parity) : "memory");
    }
    if (blockIdx.x == 0) sink[0] = (unsigned long long)smem[0];
}
"""


def main():
    dev = cp.cuda.Device()
    sms = dev.attributes["MultiProcessorCount"]
    l2 = dev.attributes["L2CacheSize"]
    kern = cp.RawKernel(SRC, "pull", options=("-std=c++17",))
    kern.max_dynamic_shared_size_bytes = 200 * 1024
    big = cp.zeros(4 << 30, dtype=cp.uint8)
    sink = cp.zeros(1, dtype=cp.uint64)
    print(f"{dev.attributes.get('ClockRate', 0) / 1e6:.2f} GHz max clock, {sms} SMs, L2 {l2 >> 20} MB")
    print(f"{'source':>8s} {'chunk KB':>8s} {'nbuf':>4s} {'in flight KB':>12s} {'TB/s':>6s}")
    for label, span in (("L2", l2 // 4), ("L2 half", l2 // 2), ("DRAM", 4 << 30)):
        for chunk, nbuf in ((36 * 1024, 4), (72 * 1024, 2), (16 * 1024, 8), (36 * 1024, 2), (36 * 1024, 5)):
            span_c = span - span % chunk
            iters = 600
            args = (big, cp.int64(span_c), cp.int32(chunk), cp.int32(nbuf), cp.int32(iters), sink)
            for _ in range(2):
                kern((sms,), (32,), args, shared_mem=chunk * nbuf)
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            reps = 5
            for _ in range(reps):
                kern((sms,), (32,), args, shared_mem=chunk * nbuf)
            end.record()
            end.synchronize()
            s = cp.cuda.get_elapsed_time(start, end) / 1e3 / reps
            tbs = sms * (iters + 0) * chunk / s / 1e12
            print(f"{label:>8s} {chunk >> 10:8d} {nbuf:4d} {chunk * nbuf >> 10:12d} {tbs:6.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
