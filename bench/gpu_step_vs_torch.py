#!/usr/bin/env python3
"""pserv's GPU training step against PyTorch's on the same GPU, in one run.

    python3 bench/gpu_step_vs_torch.py [--bench build/bench/pserv_bench_gpu_step] [--repeat 3]
                                       [--json FILE] [--goal 1.10] [--enforce] [-- OPTIONS]

Runs pserv_bench_gpu_step and bench/torch_mlp_step.py one after the other, --repeat times
(alternating, so a slow moment of the machine hits both), with the same OPTIONS (--dims, --batch,
--steps, --reps, --warmup, --device; the defaults of both are the 784-4096-4096-10 MLP at batch
512). For each precision (fp32, tf32) it takes the median over the repeats of each program's
median step time and reports ratio = pserv / PyTorch step time: 1.00 is as fast as PyTorch, 1.10
is 10% slower (the goal: at most --goal). Prints a table and one JSON line (also to --json FILE).
Exits 0 when both ran (whatever the ratio, unless --enforce), 0 with "skipped: <reason>" when
either program skips (no GPU, no torch), 1 when one of them fails.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd, timeout, env=None):
    """Runs cmd with --json FILE appended; returns (returncode, parsed JSON or None, combined
    output)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    try:
        p = subprocess.run(cmd + ["--json", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, timeout=timeout, env=env)
        out = p.stdout
        data = None
        if os.path.getsize(path) > 0:
            with open(path) as f:
                data = json.load(f)
        return p.returncode, data, out
    finally:
        os.unlink(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", default=os.path.join("build", "bench", "pserv_bench_gpu_step"),
                    help="the pserv_bench_gpu_step binary")
    ap.add_argument("--torch-script", default=os.path.join(HERE, "torch_mlp_step.py"))
    ap.add_argument("--python", default=sys.executable, help="the Python with torch")
    ap.add_argument("--torch-ld-library-path", metavar="PATH",
                    help="LD_LIBRARY_PATH for the PyTorch run only (e.g. without libraries meant for pserv)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300, help="seconds per program run")
    ap.add_argument("--goal", type=float, default=1.10)
    ap.add_argument("--enforce", action="store_true", help="exit 3 when a ratio exceeds --goal")
    ap.add_argument("--json")
    # Everything else (after an optional --) goes to both programs.
    a, opts = ap.parse_known_args()
    opts = [o for o in opts if o != "--"]
    if a.repeat < 1:
        ap.error("--repeat must be >= 1")
    if not os.access(a.bench, os.X_OK):
        print("gpu_step_vs_torch: %s is not an executable (build with CUDA, or pass --bench)" % a.bench)
        return 1

    torch_env = None
    if a.torch_ld_library_path is not None:
        torch_env = dict(os.environ, LD_LIBRARY_PATH=a.torch_ld_library_path)
    runs = {"pserv": [], "torch": []}
    info = {}
    for i in range(a.repeat):
        for impl, cmd, env in (("pserv", [a.bench] + opts, None),
                               ("torch", [a.python, a.torch_script] + opts, torch_env)):
            try:
                rc, data, out = run_json(cmd, a.timeout, env)
            except subprocess.TimeoutExpired:
                print("gpu_step_vs_torch: %s ran past %g s: %s" % (impl, a.timeout, " ".join(cmd)))
                return 1
            sys.stdout.write(out)
            if rc != 0:
                print("gpu_step_vs_torch: %s failed (exit %d): %s" % (impl, rc, " ".join(cmd)))
                return 1
            if impl == "pserv" and "skipped:" in out:
                print("gpu_step_vs_torch: skipped: %s" % out.strip().split("skipped:", 1)[1].strip())
                return 0
            if data is None:
                print("gpu_step_vs_torch: %s wrote no JSON" % impl)
                return 1
            if "skipped" in data:
                print("gpu_step_vs_torch: skipped: torch: %s" % data["skipped"])
                return 0
            runs[impl].append({r["precision"]: r["step_s"] for r in data["rows"]})
            for k in ("device", "torch", "tf32_api", "dims", "batch", "steps", "reps", "warmup"):
                if k in data:
                    info.setdefault(k, data[k])

    rows = []
    print()
    print("gpu_step_vs_torch: %s, MLP %s, batch %s; median of %d runs of each program's median step time"
          % (info.get("device"), "-".join(map(str, info.get("dims", []))), info.get("batch"), a.repeat))
    print("%-9s %10s %10s %8s   %s" % ("precision", "pserv_ms", "torch_ms", "ratio", "(pserv / torch step time)"))
    worst = 0.0
    for prec in ("fp32", "tf32"):
        p = [r[prec] for r in runs["pserv"]]
        t = [r[prec] for r in runs["torch"]]
        pm, tm = statistics.median(p), statistics.median(t)
        ratio = pm / tm
        worst = max(worst, ratio)
        print("%-9s %10.4f %10.4f %8.3f" % (prec, pm * 1e3, tm * 1e3, ratio))
        rows.append({"precision": prec, "pserv_s": pm, "torch_s": tm, "ratio": ratio,
                     "pserv_runs": p, "torch_runs": t})
    met = worst <= a.goal
    print("goal: ratio <= %.2f: %s" % (a.goal, "met" if met else "NOT met"))
    out = dict(benchmark="gpu_step_vs_torch", repeat=a.repeat, goal=a.goal, goal_met=met, rows=rows, **info)
    line = json.dumps(out)
    print(line)
    if a.json:
        with open(a.json, "w") as f:
            f.write(line + "\n")
    return 3 if a.enforce and not met else 0


if __name__ == "__main__":
    sys.exit(main())
