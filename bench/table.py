"""Markdown table of a benchmark JSON (for README.md): python bench/table.py bench/results/X.json"""

import json
import sys


def main(path):
    d = json.load(open(path))
    print(f"{d['machine']['gpu']}, {d['date'][:10]}, `{d['command']}`; ceilings measured in the same run: "
          f"read {d['ceilings']['read_gbs']:.0f} GB/s, bf16 matmul {d['ceilings']['matmul_tflops']:.0f} TFLOP/s.\n")
    print("| config (b/s_q/h_q/s_k) | cupymla µs | TFLOP/s | GB/s | FlashMLA µs | FlashMLA TFLOP/s / GB/s | ratio | target | met |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in d["rows"]:
        o, fm = r["ours"], r.get("flashmla_h200") or {}
        fm_us = fm.get("us")
        ratio = o["tflops"] / fm["tflops"] if fm.get("tflops") else float("nan")
        kind, _, x = (r.get("target") or "").partition(" ")
        met = "?"
        if r.get("target"):
            t = r["target"]
            num = float(t.lstrip("<>=").split()[0])
            met = {"TF/s": o["tflops"] >= num, "GB/s": o["gbs"] >= num, "us": o["us"] <= num}[t.split()[-1]]
            met = "yes" if met else "no"
        print(f"| {r['config']} | {o['us']:.1f} | {o['tflops']:.0f} | {o['gbs']:.0f} | "
              f"{fm_us if fm_us is not None else '-'} | {fm.get('tflops', '-')} / {fm.get('gbs', '-')} | "
              f"{ratio:.2f}x | {r.get('target') or ''} | {met} |")


if __name__ == "__main__":
    main(sys.argv[1])
