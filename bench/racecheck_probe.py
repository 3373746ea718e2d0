"""Does compute-sanitizer racecheck understand the seesaw kernel's barriers?

The seesaw kernel orders its two consumer warpgroups with partial named barriers (`bar.sync 1, 256`,
and `bar.arrive` / `bar.sync` pairs) after its producer warpgroup has exited and after setmaxnreg.
This probe runs those patterns in isolation, each a correct program; a hazard racecheck reports
here is the tool's, not the program's.
    compute-sanitizer --tool racecheck --report-api-errors no python3 bench/racecheck_probe.py
"""
import os
import subprocess
import tempfile

import cupy as cp

SRC = r"""
__device__ __forceinline__ void sync1() { asm volatile("bar.sync 1, 256;" ::: "memory"); }

extern "C" __global__ void __launch_bounds__(384, 1) probe(float* out, int variant) {
    __shared__ float box[128];
    __shared__ float sums[2][128];
    if (variant >= 1 && threadIdx.x >= 256) {           // a producer that leaves early
        if (variant >= 4) asm volatile("setmaxnreg.dec.sync.aligned.u32 24;");
        return;
    }
    if (variant >= 4) asm volatile("setmaxnreg.inc.sync.aligned.u32 240;");
    const int wg = threadIdx.x / 128, i = threadIdx.x % 128;
    float acc = 0.f;
    for (int round = 0; round < 4; ++round) {
        if (variant == 2) __syncthreads(); else sync1();
        if (variant >= 3) {          // WG0 -> WG1 through bar.arrive / bar.sync on barrier 2
            if (wg == 0) { box[i] = float(round + i); asm volatile("bar.arrive 2, 256;" ::: "memory"); }
            else { asm volatile("bar.sync 2, 256;" ::: "memory"); acc += box[127 - i]; }
        } else {
            if (wg == 0) box[i] = float(round + i);
            if (variant == 2) __syncthreads(); else sync1();
            if (wg == 1) acc += box[127 - i];
        }
        // the seesaw's epilogue: each warpgroup writes its sums, both read both after a barrier
        if (i % 4 == 0) sums[wg][i] = acc + wg;
        if (variant == 2) __syncthreads(); else sync1();
        acc += sums[0][i / 4 * 4] + sums[1][i / 4 * 4];
    }
    out[threadIdx.x] = acc;
}
"""


def main():
    with tempfile.TemporaryDirectory() as d:
        src, cubin = os.path.join(d, "probe.cu"), os.path.join(d, "probe.cubin")
        open(src, "w").write(SRC)
        subprocess.run(["nvcc", "-arch=sm_90a", "-cubin", "-lineinfo", "-o", cubin, src], check=True)
        k = cp.RawModule(path=cubin).get_function("probe")
        outs = {}
        for variant, threads, what in [(0, 256, "bar.sync 1,256 in a 256-thread block"),
                                       (1, 384, "bar.sync 1,256, 128 threads exited"),
                                       (2, 256, "__syncthreads (control)"),
                                       (3, 384, "exited + bar.arrive/bar.sync 2 hand-over"),
                                       (4, 384, "as 3, with setmaxnreg")]:
            out = cp.zeros(384, cp.float32)
            k((1,), (threads,), (out, cp.int32(variant)))
            cp.cuda.runtime.deviceSynchronize()
            outs[variant] = out[:256].get()
            print(f"variant {variant}: {what}: out[0]={outs[variant][0]}, out[128]={outs[variant][128]}",
                  flush=True)
        same = all((outs[v] == outs[2]).all() for v in outs)
        print("all variants agree with __syncthreads:", same)


if __name__ == "__main__":
    main()
