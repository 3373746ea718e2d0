"""Is a call slower under sustained load? SM clock and board power while one shape runs
(a) as the benchmark times it (L2 flushed before each call, the GPU idle between calls while the
host syncs) and (b) back to back (calls queued without a sync, as a serving loop runs).

    python3 bench/power_probe.py [SECONDS=4] [CONFIG_INDEX ...]   (GPU machine, repo root)

Samples nvidia-smi (clocks.sm, power.draw, throttle reasons) every 50 ms in the background and
prints, per configuration of cupymla.benchmark.CONFIGS and phase: µs a call (CUDA events around
each call in (a), the phase's elapsed time over its calls in (b)), mean SM MHz and watts.
"""

import subprocess
import sys
import time

import cupy as cp
import ml_dtypes
import numpy as np

import cupymla
from cupymla.benchmark import CONFIGS
from tests.gpu_cases import make_inputs, seqlens_for

QUERY = "timestamp,clocks.sm,power.draw,clocks_event_reasons.active"


def phase_flushed(call, flush, seconds):
    times, t_end = [], time.perf_counter() + seconds
    a, b = cp.cuda.Event(), cp.cuda.Event()
    while time.perf_counter() < t_end:
        flush.fill(0)
        a.record()
        call()
        b.record()
        b.synchronize()
        times.append(cp.cuda.get_elapsed_time(a, b) * 1000)
    return float(np.median(times)), len(times)


def phase_back_to_back(call, seconds):
    n, t_end = 0, time.perf_counter() + seconds
    a, b = cp.cuda.Event(), cp.cuda.Event()
    a.record()
    while time.perf_counter() < t_end:
        for _ in range(20):
            call()
        n += 20
        b.record()
        b.synchronize()   # keeps the queue short; the GPU stays busy between batches of 20
    return cp.cuda.get_elapsed_time(a, b) * 1000 / n, n


def main(seconds=4.0, rows=(0, 3, 5)):
    query = QUERY
    if subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"], capture_output=True).returncode:
        query = query.replace("clocks_event_reasons", "clocks_throttle_reasons")   # older drivers
    smi = subprocess.Popen(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits", "-lms", "50"],
                           stdout=subprocess.PIPE, text=True)
    flush = cp.empty(256 << 20, cp.uint8)
    marks = []
    for i in rows:
        c = CONFIGS[i]
        rng = np.random.default_rng(0)
        lens = np.asarray(c.lens) if c.lens else seqlens_for(rng, c.b, c.s_k, c.s_q, varlen=c.varlen)
        inp = make_inputs(rng, c.b, c.s_q, c.h_q, 1, lens, 64, np.dtype(ml_dtypes.bfloat16), garbage=False)
        meta, splits = cupymla.get_mla_metadata(inp["cache_seqlens"], c.s_q * c.h_q, 1)

        def call():
            return cupymla.flash_mla_with_kvcache(inp["q"], inp["k_cache"], inp["block_table"],
                                                  inp["cache_seqlens"], 512, meta, splits, causal=c.causal)
        for _ in range(5):
            call()
        cp.cuda.Device().synchronize()
        time.sleep(1.0)   # the same rest before each phase
        t0 = time.time(); us, n = phase_flushed(call, flush, seconds); marks.append((c.name, "flushed", t0, time.time(), us, n))
        time.sleep(1.0)
        t0 = time.time(); us, n = phase_back_to_back(call, seconds); marks.append((c.name, "back-to-back", t0, time.time(), us, n))
        del inp
    time.sleep(0.3)
    smi.terminate()
    samples = []
    for line in smi.stdout.read().splitlines():
        f = [x.strip() for x in line.split(",")]
        try:
            ts = time.mktime(time.strptime(f[0].split(".")[0], "%Y/%m/%d %H:%M:%S")) + float("0." + f[0].split(".")[1])
            samples.append((ts, float(f[1]), float(f[2]), f[3]))
        except (ValueError, IndexError):
            continue
    print(f"{'config':46s} {'phase':13s} {'us/call':>8s} {'calls':>6s} {'SM MHz':>7s} {'W':>6s}  reasons")
    for name, ph, t0, t1, us, n in marks:
        s = [x for x in samples if t0 + 0.5 <= x[0] <= t1]   # the first 0.5 s ramps
        mhz = np.mean([x[1] for x in s]) if s else float("nan")
        w = np.mean([x[2] for x in s]) if s else float("nan")
        reasons = sorted({x[3] for x in s})
        print(f"{name:46s} {ph:13s} {us:8.1f} {n:6d} {mhz:7.0f} {w:6.0f}  {' '.join(reasons)}")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(float(a[0]) if a else 4.0, tuple(int(x) for x in a[1:]) or (0, 3, 5))
