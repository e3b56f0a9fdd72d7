#!/usr/bin/env python3
"""The baseline of pserv_bench_gpu_step: the same MLP training step in PyTorch.

    python3 bench/torch_mlp_step.py [--dims 784,4096,4096,10] [--batch 512] [--steps K]
                                    [--reps R] [--warmup W] [--device D] [--json FILE]

nn.Linear + ReLU layers, cross-entropy (mean over the batch), forward and backward only: no
optimizer step, since pserv's optimizer runs on the server and pserv_bench_gpu_step does not time
one either. Gradients are set to None before each step, so backward writes them (as pserv's step
does) instead of adding to them. Timed the way pserv_bench_gpu_step times: W warm-up steps, then R
repetitions of K steps enqueued back to back on the current stream between two CUDA events; a
step's time is a repetition's elapsed time / K; median and minimum over the R repetitions. Two
rows: float32 (TF32 off for matmuls) and TF32 (on), set with PyTorch's matmul TF32 flag.

Prints one JSON line on stdout (the same fields as pserv_bench_gpu_step's JSON), and writes it to
--json FILE too. Without torch or a CUDA device it prints {"skipped": "<reason>"} and exits 0.
"""
import argparse
import json
import sys


def set_tf32(torch, on):
    """Sets cuBLAS matmul TF32 with one API only: PyTorch >= 2.9 raises if the legacy flag
    (allow_tf32) and the new one (fp32_precision) are mixed, older versions have only the legacy one."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision = "tf32" if on else "ieee"
        return "torch.backends.cuda.matmul.fp32_precision"
    matmul.allow_tf32 = bool(on)
    return "torch.backends.cuda.matmul.allow_tf32"


def step_flops(dims, batch):
    """GEMM flops of a step, counted as pserv_bench_gpu_step counts them."""
    f = 0.0
    for l in range(len(dims) - 1):
        g = 2.0 * batch * dims[l] * dims[l + 1]
        f += g * (2 if l == 0 else 3)
    return f


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="784,4096,4096,10")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()
    dims = [int(d) for d in a.dims.split(",")]
    if len(dims) < 2 or min(dims) < 1 or a.batch < 1 or a.steps < 1 or a.reps < 1 or a.warmup < 0:
        ap.error("bad sizes")

    def emit(obj):
        line = json.dumps(obj)
        print(line, flush=True)
        if a.json:
            with open(a.json, "w") as f:
                f.write(line + "\n")

    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError as e:
        emit({"benchmark": "gpu_step", "impl": "torch", "skipped": "no torch: %s" % e})
        return 0
    if not torch.cuda.is_available() or torch.cuda.device_count() <= a.device:
        emit({"benchmark": "gpu_step", "impl": "torch", "skipped": "no CUDA device visible to torch %s" % torch.__version__})
        return 0

    dev = torch.device("cuda", a.device)
    torch.cuda.set_device(dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(7)
    x = torch.rand(a.batch, dims[0], device=dev, generator=gen)
    y = torch.randint(0, dims[-1], (a.batch,), device=dev, generator=gen)

    rows = []
    api = None
    for precision, tf32 in (("fp32", False), ("tf32", True)):
        api = set_tf32(torch, tf32)
        layers = []
        for l in range(len(dims) - 1):
            layers.append(nn.Linear(dims[l], dims[l + 1]))
            if l + 2 < len(dims):
                layers.append(nn.ReLU())
        model = nn.Sequential(*layers).to(dev)

        def step():
            model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        for _ in range(a.warmup):
            step()
        torch.cuda.synchronize(dev)
        t0 = torch.cuda.Event(enable_timing=True)
        t1 = torch.cuda.Event(enable_timing=True)
        times = []
        loss = None
        for _ in range(a.reps):
            t0.record()
            for _ in range(a.steps):
                loss = step()
            t1.record()
            t1.synchronize()
            times.append(t0.elapsed_time(t1) * 1e-3 / a.steps)
        times.sort()
        med = times[len(times) // 2]
        loss_value = float(loss.item())
        if loss_value != loss_value or loss_value in (float("inf"), float("-inf")):
            print("torch_mlp_step: %s step gave a non-finite loss" % precision, file=sys.stderr)
            return 1
        rows.append({"precision": precision, "step_s": med, "min_s": times[0],
                     "tflops": step_flops(dims, a.batch) / med * 1e-12, "loss": loss_value})
        del model
    print("torch_mlp_step: MLP %s, batch %d, %s, torch %s; %d warm-up steps, %d reps of %d steps (cudaEvent)"
          % ("-".join(map(str, dims)), a.batch, torch.cuda.get_device_name(dev), torch.__version__,
             a.warmup, a.reps, a.steps), file=sys.stderr)
    for r in rows:
        print("%-9s %12.4f ms median %12.4f ms min %10.2f TFLOP/s" % (r["precision"], r["step_s"] * 1e3,
              r["min_s"] * 1e3, r["tflops"]), file=sys.stderr)
    emit({"benchmark": "gpu_step", "impl": "torch", "torch": torch.__version__, "tf32_api": api,
          "device": torch.cuda.get_device_name(dev), "dims": dims, "batch": a.batch, "steps": a.steps,
          "reps": a.reps, "warmup": a.warmup, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
