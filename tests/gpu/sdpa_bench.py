#!/usr/bin/env python3
"""sdpa_bench.py B H T D CAUSAL [B H T D CAUSAL ...] — the anchor of `mt-bench-gpu flash`: PyTorch's
torch.nn.functional.scaled_dot_product_attention on cuda:0 in bf16 (q, k, v of shape (B, H, T, D)), for
each shape one line

    sdpa B H T D CAUSAL FWD_MS FWDBWD_MS

(median of 20 timed repetitions after 5 warm-up ones, CUDA events; the backward through
torch.autograd.grad with a random output gradient). The first line names the torch version and device.
Exit 3 when PyTorch sees no CUDA device. Benchmark-only: imports torch from whichever interpreter
mt-bench-gpu found (tests/gpu/bench_gpu.cu)."""
import sys

import torch
import torch.nn.functional as F


def median_ms(fn, reps=20):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def main():
    if not torch.cuda.is_available():
        print("sdpa: PyTorch %s sees no CUDA device" % torch.__version__)
        return 3
    args = [int(x) for x in sys.argv[1:]]
    if not args or len(args) % 5:
        print("usage: sdpa_bench.py B H T D CAUSAL [...]")
        return 2
    print("sdpa: torch %s on %s" % (torch.__version__, torch.cuda.get_device_name(0)))
    for i in range(0, len(args), 5):
        B, H, T, D, causal = args[i:i + 5]
        q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        g = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)

        def fwd():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))

        def fwd_bwd():
            o = F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))
            torch.autograd.grad(o, (q, k, v), g)

        print("sdpa %d %d %d %d %d %.4f %.4f" % (B, H, T, D, causal, median_ms(fwd), median_ms(fwd_bwd)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
