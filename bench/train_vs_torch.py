#!/usr/bin/env python3
"""End to end: `pserv train` with its defaults against PyTorch on the same machine, data and model.

    python3 bench/train_vs_torch.py [--pserv build/cli/pserv] [--repeat 3] [--json FILE]
                                    [--progress auto|spin|sleep] [--pserv-args "..."]
                                    [--torch-python /usr/bin/python3] [--torch-threads 2,1]
                                    [--ddp-threads 1] [--torch-blas openmp,default] [--timeout 900]

Each repeat runs, one after the other (the order rotates every repeat, so a slow moment of a
shared machine does not always hit the same one):
  pserv      `pserv train` (a coordinator, 2 server shards, 2 CPU workers, sync mode, by default)
  torch1     PyTorch, one process, the same job (bench/torch_train.py)
  ddp        PyTorch DistributedDataParallel over gloo, one rank per pserv worker, on 127.0.0.1
and prints the medians over the repeats: samples/s, seconds to the target accuracy, and the
ratios pserv/torch1 and pserv/ddp of samples/s against the issue's goals (0.9 and 2.0).
First it tunes the PyTorch side: one epoch of each candidate BLAS build (Debian's OpenMP OpenBLAS
through LD_LIBRARY_PATH, or the pthread one the alternatives system picks) and thread count, for
the one process and for the DDP ranks; the full runs use the fastest (bench/README.md).
Exit status: 0 when every run worked (whatever the ratios; --enforce: 3 when a goal is missed),
1 when a run failed or timed out, 2 on bad arguments.
"""
import argparse
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
GOAL_TORCH1 = 0.9
GOAL_DDP = 2.0

# `pserv train`'s defaults (cli/train_config.c) that the PyTorch side has to mirror; --pserv-args may
# change them, and the header line pserv prints is checked against what the PyTorch side was told.
PSERV_DEFAULTS = {"workers": "2", "batch": "128", "hidden": "256,128", "optimizer": "adam", "lr": "",
                  "epochs": "15", "seed": "1", "target-accuracy": "0.88", "limit": "0", "mode": "sync",
                  "data": DEFAULT_DATA}
DEFAULT_LR = {"adam": 0.001, "adamw": 0.001, "momentum": 0.05, "sgd": 0.1, "adagrad": 0.01}


class RunError(Exception):
    pass


# Process groups this script started and has not reaped: killed on any exit.
LIVE = {}


def kill_group(proc, grace=2.0):
    """Ends a process started with start_new_session and everything it started."""
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    # pserv's children die with their parent (PR_SET_PDEATHSIG); sweep the group anyway.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    LIVE.pop(proc.pid, None)


def kill_all():
    for proc in list(LIVE.values()):
        kill_group(proc, grace=1.0)


def on_signal(sig, _frame):
    kill_all()
    sys.stderr.write("train_vs_torch: caught signal %d: stopped what it started\n" % sig)
    sys.exit(128 + sig)


def start(argv, env, name):
    try:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, stdin=subprocess.DEVNULL)
    except OSError as e:
        raise RunError("%s: cannot start %s: %s" % (name, argv[0], e))
    LIVE[proc.pid] = proc
    return proc


def finish(procs, names, timeout):
    """Waits for all of procs; returns their (stdout, stderr). Ends all of them at the first failure
    or at the deadline, and raises RunError naming the process and the reason."""
    deadline = time.monotonic() + timeout
    outs = [None] * len(procs)
    pending = set(range(len(procs)))
    try:
        while pending:
            for i in sorted(pending):
                try:
                    o, e = procs[i].communicate(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                outs[i] = (o, e)
                pending.discard(i)
                LIVE.pop(procs[i].pid, None)
                if procs[i].returncode != 0:
                    tail = "\n".join((e or o or "").strip().splitlines()[-15:])
                    raise RunError("%s exited with status %d:\n%s" % (names[i], procs[i].returncode, tail))
            if pending and time.monotonic() > deadline:
                raise RunError("%s did not finish within %d s (--timeout)" %
                               (", ".join(names[i] for i in sorted(pending)), timeout))
    finally:
        for i in sorted(pending):
            kill_group(procs[i])
            # a process killed here still owes its pipes' contents
            try:
                procs[i].communicate(timeout=5)
            except (subprocess.TimeoutExpired, ValueError):
                pass
    return outs


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_pserv_args(text):
    """The settings of `pserv train` that the PyTorch side mirrors: its defaults, then --pserv-args."""
    cfg = dict(PSERV_DEFAULTS)
    args = shlex.split(text)
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            key, eq, val = a[2:].partition("=")
            if key in cfg:
                if not eq:
                    if i + 1 >= len(args):
                        raise SystemExit("train_vs_torch: --pserv-args: %s needs a value" % a)
                    i += 1
                    val = args[i]
                cfg[key] = val
        i += 1
    if cfg["lr"] == "":
        cfg["lr"] = str(DEFAULT_LR.get(cfg["optimizer"], 0.001))
    return cfg


def check_header(header, cfg):
    """pserv's first line says what it runs: it must be what the PyTorch side runs."""
    m = re.match(r"pserv train: (\d+) servers, (\d+) workers on the (\w+), (\w+) mode, (\w+) lr ([\d.eE+-]+), "
                 r"batch (\d+), hidden (\d+(?:,\d+)*)", header or "")
    if not m:
        raise RunError("pserv: unexpected first line %r" % header)
    got = {"workers": int(m.group(2)), "device": m.group(3), "mode": m.group(4), "optimizer": m.group(5),
           "lr": float(m.group(6)), "batch": int(m.group(7)), "hidden": m.group(8)}
    want = {"workers": int(cfg["workers"]), "device": "CPU", "mode": cfg["mode"], "optimizer": cfg["optimizer"],
            "lr": float(cfg["lr"]), "batch": int(cfg["batch"]), "hidden": cfg["hidden"]}
    bad = ["%s %s (PyTorch runs %s)" % (k, got[k], want[k]) for k in want
           if (abs(got[k] - want[k]) > 1e-6 * want[k] if k == "lr" else got[k] != want[k])]
    if bad:
        raise RunError("pserv ran %s: set the PyTorch side the same way (--pserv-args), or unset PSERV_* "
                       "variables" % ", ".join(bad))
    return {"servers": int(m.group(1)), **got}


def parse_pserv(out, cfg):
    lines = out.splitlines()
    info = check_header(lines[0] if lines else "", cfg)
    epochs = []
    for l in lines:
        m = re.match(r"epoch\s+(\d+)/\d+\s+train loss ([\d.]+)\s+test loss ([\d.]+)\s+test accuracy ([\d.]+)", l)
        if m:
            epochs.append({"epoch": int(m.group(1)), "train_loss_rank0": float(m.group(2)),
                           "test_loss": float(m.group(3)), "test_accuracy": float(m.group(4))})
    text = "\n".join(lines)
    m1 = re.search(r"summary: test accuracy ([\d.]+) after (\d+) epochs \(target ([\d.]+) (reached|not reached)\)",
                   text)
    m2 = re.search(r"([\d.]+) s in all, ([\d.]+) s training, (\d+) samples/s over (\d+) workers", text)
    if not (m1 and m2):
        raise RunError("pserv: no summary in its output:\n" + "\n".join(lines[-10:]))
    reached = m1.group(4) == "reached"
    train_s = float(m2.group(2))
    return {"impl": "pserv", "job": info, "test_accuracy": float(m1.group(1)), "epochs": int(m1.group(2)),
            "reached": reached, "train_seconds": train_s, "wall_seconds": float(m2.group(1)),
            "samples_per_s": float(m2.group(3)), "time_to_target_s": train_s if reached else None,
            "history": epochs}


def run_pserv(a, cfg, env):
    argv = [a.pserv, "train"] + shlex.split(a.pserv_args)
    t = time.monotonic()
    out, _err = finish([start(argv, env, "pserv train")], ["pserv train"], a.timeout)[0]
    r = parse_pserv(out, cfg)
    r["process_seconds"] = time.monotonic() - t
    return r


def torch_argv(a, cfg):
    return [a.torch_python, os.path.join(HERE, "torch_train.py"), "--data", cfg["data"],
            "--workers", cfg["workers"], "--batch", cfg["batch"], "--hidden", cfg["hidden"],
            "--optimizer", cfg["optimizer"], "--lr", cfg["lr"], "--epochs", cfg["epochs"], "--seed", cfg["seed"],
            "--target", cfg["target-accuracy"], "--limit", cfg["limit"]] + (["--foreach"] if a.foreach else [])


def torch_env(blas_dir, threads):
    env = dict(os.environ)
    if blas_dir:
        env["LD_LIBRARY_PATH"] = blas_dir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    # The OpenMP runtime and OpenBLAS both sized to the threads torch is told to use.
    env["OMP_NUM_THREADS"] = str(threads)
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    return env


def parse_json_line(out, name):
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RunError("%s printed no result:\n%s" % (name, out[-2000:]))


def run_torch1(a, cfg, setting, extra=()):
    argv = torch_argv(a, cfg) + ["--threads", str(setting["threads"])] + list(extra)
    t = time.monotonic()
    env = torch_env(a.blas_dirs[setting["blas"]], setting["threads"])
    out, _ = finish([start(argv, env, "torch1")], ["torch1"], a.timeout)[0]
    r = parse_json_line(out, "torch1")
    r["process_seconds"] = time.monotonic() - t
    r["setting"] = setting
    return r


def run_ddp(a, cfg, setting, extra=()):
    world = int(cfg["workers"])
    port = free_port()
    env = torch_env(a.blas_dirs[setting["blas"]], setting["threads"])
    env["GLOO_SOCKET_IFNAME"] = "lo"
    procs, names = [], []
    t = time.monotonic()
    try:
        for r in range(world):
            names.append("ddp rank %d" % r)
            procs.append(start(torch_argv(a, cfg) + ["--threads", str(setting["threads"]), "--ddp-rank", str(r),
                                                     "--master-port", str(port)] + list(extra), env, names[-1]))
    except RunError:
        for p in procs:
            kill_group(p)
        raise
    outs = finish(procs, names, a.timeout)
    r = parse_json_line(outs[0][0], "ddp rank 0")
    r["process_seconds"] = time.monotonic() - t
    r["setting"] = setting
    return r


def tune(a, cfg, which):
    """The fastest BLAS build and thread count for each PyTorch baseline on this machine: one epoch
    (no early stop) of every candidate; the full runs then use the winner."""
    chosen, trials = {}, []
    one_epoch = ["--epochs", "1", "--target", "2"]
    for w, threads, run in (("torch1", a.torch_threads, run_torch1), ("ddp", a.ddp_threads, run_ddp)):
        if w not in which:
            continue
        cands = [{"blas": b, "threads": t} for b in a.blas_choices for t in threads]
        if len(cands) == 1:
            chosen[w] = cands[0]
            continue
        best = None
        for c in cands:
            r = run(a, cfg, c, one_epoch)
            trials.append({"impl": w, "setting": c, "samples_per_s": r["samples_per_s"],
                           "gemm_gflops": r["gemm_gflops"], "blas_loaded": r["blas_loaded"]})
            print("  tune %-7s blas %-7s threads %d: %8.0f samples/s (one epoch)" %
                  (w, c["blas"], c["threads"], r["samples_per_s"]), flush=True)
            if best is None or r["samples_per_s"] > best[1]:
                best = (c, r["samples_per_s"])
        chosen[w] = best[0]
    return chosen, trials


def first_line(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
        return out.strip().splitlines()[0] if out.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def dpkg_dir(package, pattern):
    try:
        files = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    hits = [f for f in files if re.search(pattern, f)]
    return os.path.dirname(hits[0]) if hits else None


def machine_info(a):
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ucx = first_line(["ucx_info", "-v"])
    pserv_ver = first_line([a.pserv, "--version"])
    pserv_blas = None
    try:
        ldd = subprocess.run(["ldd", a.pserv], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"libopenblas\S*\s+=>\s+(\S+)", ldd)
        pserv_blas = os.path.realpath(m.group(1)) if m else "not linked dynamically"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu_model": cpu or platform.processor(), "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)), "kernel": platform.release(),
            "ucx_version": ucx.lstrip("# ").replace("Version ", "").strip() if ucx else None,
            "pserv_version": pserv_ver.split()[-1] if pserv_ver else None, "pserv_binary": os.path.abspath(a.pserv),
            "pserv_openblas": pserv_blas, "loadavg_before": os.getloadavg()}


def typed_job(cfg):
    """The job's settings as JSON numbers where they are numbers."""
    out = dict(cfg)
    for k in ("workers", "batch", "epochs", "seed", "limit"):
        out[k] = int(out[k])
    for k in ("lr", "target-accuracy"):
        out[k] = float(out[k])
    return out


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec):
    return format(v, spec) if v is not None else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--pserv", default=os.path.join(ROOT, "build", "cli", "pserv"), help="the pserv program")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each (median over them; default 3)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--progress", choices=["auto", "spin", "sleep"],
                    help="exported to pserv train as PSERV_PROGRESS (how its data-path threads wait; default: "
                    "the environment's, else pserv's own default, auto)")
    ap.add_argument("--pserv-args", default="", help="more arguments for pserv train (the PyTorch side follows "
                    "--workers --batch --hidden --optimizer --lr --epochs --seed --target-accuracy --limit --data)")
    ap.add_argument("--torch-python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                    else sys.executable, help="the Python with Debian's python3-torch (default /usr/bin/python3)")
    ap.add_argument("--torch-threads", default="2,1",
                    help="torch threads of the one-process run; a list is tuned (default 2,1)")
    ap.add_argument("--ddp-threads", default="1", help="torch threads of each DDP rank; a list is tuned (default 1)")
    ap.add_argument("--torch-blas", default="openmp,default",
                    help="openmp: Debian's OpenMP OpenBLAS through LD_LIBRARY_PATH; default: whatever the "
                    "alternatives system picks (the pthread build); a list is tuned (default openmp,default)")
    ap.add_argument("--foreach", action="store_true", help="PyTorch's multi-tensor optimizer implementation")
    ap.add_argument("--only", default="pserv,torch1,ddp", help="comma-separated subset of pserv,torch1,ddp")
    ap.add_argument("--timeout", type=int, default=900, help="seconds one run may take (default 900)")
    ap.add_argument("--enforce", action="store_true", help="exit 3 when a goal is missed")
    a = ap.parse_args()
    try:
        a.torch_threads = [int(t) for t in a.torch_threads.split(",")]
        a.ddp_threads = [int(t) for t in a.ddp_threads.split(",")]
    except ValueError:
        ap.error("--torch-threads and --ddp-threads take numbers")
    a.blas_choices = [b for b in a.torch_blas.split(",") if b]
    if a.repeat < 1 or a.timeout < 1 or min(a.torch_threads + a.ddp_threads) < 1:
        ap.error("--repeat, --torch-threads, --ddp-threads and --timeout must be positive")
    if not a.blas_choices or any(b not in ("openmp", "default") for b in a.blas_choices):
        ap.error("--torch-blas takes openmp, default or both")
    which = [w for w in a.only.split(",") if w]
    if not which or any(w not in ("pserv", "torch1", "ddp") for w in which):
        ap.error("--only takes a comma-separated subset of pserv,torch1,ddp")
    cfg = parse_pserv_args(a.pserv_args)
    if cfg["mode"] != "sync":
        ap.error("--pserv-args: the PyTorch baselines are synchronous; compare --mode sync only")
    if "pserv" in which and not os.access(a.pserv, os.X_OK):
        ap.error("%s is not an executable (build pserv, or pass --pserv)" % a.pserv)
    a.blas_dirs = {"default": None}
    if "openmp" in a.blas_choices:
        a.blas_dirs["openmp"] = dpkg_dir("libopenblas0-openmp", r"/libopenblas\.so\.0$")
        if not a.blas_dirs["openmp"]:
            ap.error("libopenblas0-openmp is not installed (scripts/install-deps.sh bench), or pass --torch-blas default")
    if any(w != "pserv" for w in which):
        probe = first_line([a.torch_python, "-c", "import torch, numpy; print(torch.__version__)"])
        if not probe:
            ap.error("%s cannot import torch and numpy (scripts/install-deps.sh bench installs python3-torch)"
                     % a.torch_python)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # pserv train reads every flag from PSERV_<FLAG> too: stray ones would change its defaults.
    # How its threads wait (PSERV_PROGRESS, PSERV_SPIN_US) is what the benchmark may be asked to vary.
    keep = ("PSERV_PROGRESS", "PSERV_SPIN_US")
    pserv_env = {k: v for k, v in os.environ.items() if not k.startswith("PSERV_") or k in keep}
    dropped = sorted(k for k in os.environ if k.startswith("PSERV_") and k not in keep)
    if dropped:
        print("note: not passing %s to pserv train" % ", ".join(dropped))
    progress = a.progress or os.environ.get("PSERV_PROGRESS")
    if progress:
        pserv_env["PSERV_PROGRESS"] = progress
    spin_us = pserv_env.get("PSERV_SPIN_US")

    info = machine_info(a)
    runs = {w: [] for w in which}
    print("train_vs_torch: %s, %d cores; pserv %s, UCX %s; %d repeat(s) of %s" %
          (info["cpu_model"], info["cores"], info["pserv_version"], info["ucx_version"], a.repeat, ", ".join(which)))
    print("job: %s workers x batch %s, hidden %s, %s lr %s, <= %s epochs to %s; PSERV_PROGRESS=%s%s" %
          (cfg["workers"], cfg["batch"], cfg["hidden"], cfg["optimizer"], cfg["lr"], cfg["epochs"],
           cfg["target-accuracy"], progress or "(unset: auto)", " PSERV_SPIN_US=" + spin_us if spin_us else ""))
    try:
        chosen, trials = tune(a, cfg, which)
        for w in chosen:
            print("  %s runs with blas %s (%s), %d thread(s)%s" %
                  (w, chosen[w]["blas"], a.blas_dirs[chosen[w]["blas"]] or "the alternatives' choice",
                   chosen[w]["threads"], " per rank" if w == "ddp" else ""))
        runners = {"pserv": lambda: run_pserv(a, cfg, pserv_env),
                   "torch1": lambda: run_torch1(a, cfg, chosen["torch1"]),
                   "ddp": lambda: run_ddp(a, cfg, chosen["ddp"])}
        for rep in range(a.repeat):
            order = which[rep % len(which):] + which[:rep % len(which)]
            for w in order:
                r = runners[w]()
                r["repeat"] = rep
                runs[w].append(r)
                print("  run %d %-7s %8.0f samples/s  %s s to target  acc %.4f after %d epochs  (%.1f s)" %
                      (rep + 1, w, r["samples_per_s"], fmt(r["time_to_target_s"], ".2f"), r["test_accuracy"],
                       r["epochs"], r["process_seconds"]), flush=True)
    except RunError as e:
        kill_all()
        sys.stderr.write("train_vs_torch: %s\n" % e)
        return 1
    finally:
        kill_all()

    med = {w: {"samples_per_s": median([r["samples_per_s"] for r in runs[w]]),
               "time_to_target_s": median([r["time_to_target_s"] for r in runs[w]]),
               "reached": sum(1 for r in runs[w] if r["reached"]), "runs": len(runs[w]),
               "epochs": median([r["epochs"] for r in runs[w]])} for w in which}
    ratios = {}
    if "pserv" in med:
        for w, goal in (("torch1", GOAL_TORCH1), ("ddp", GOAL_DDP)):
            if w in med:
                ratio = med["pserv"]["samples_per_s"] / med[w]["samples_per_s"]
                tp, tw = med["pserv"]["time_to_target_s"], med[w]["time_to_target_s"]
                ratios["pserv/" + w] = {"samples_per_s_ratio": ratio, "goal": goal, "met": ratio >= goal,
                                        "time_to_target_speedup": tw / tp if tp and tw else None}

    print("\n%-8s %12s %14s %9s %8s" % ("", "samples/s", "s to %s" % cfg["target-accuracy"], "reached", "epochs"))
    labels = {"pserv": "pserv", "torch1": "torch1", "ddp": "ddp-gloo"}
    for w in which:
        m = med[w]
        print("%-8s %12.0f %14s %9s %8s" % (labels[w], m["samples_per_s"], fmt(m["time_to_target_s"], ".2f"),
                                            "%d/%d" % (m["reached"], m["runs"]), fmt(m["epochs"], "g")))
    if ratios:
        print("\n%-14s %10s %6s %5s %18s" % ("ratio", "samples/s", "goal", "met", "time-to-target x"))
        for k, r in ratios.items():
            print("%-14s %10.2f %6.1f %5s %18s" % (k, r["samples_per_s_ratio"], r["goal"], "yes" if r["met"] else "NO",
                                                  fmt(r["time_to_target_speedup"], ".2f")))
    torch_run = next((runs[w][0] for w in ("torch1", "ddp") if w in runs), None)
    for w in ("torch1", "ddp"):
        if w in runs:
            r = runs[w][0]
            print("%s%s: torch %s, %d thread(s), loaded %s; %s GEMM at %.1f GFLOP/s" %
                  ("\n" if r is torch_run else "", w, r["torch"], r["threads"],
                   ", ".join(p for p in r["blas_loaded"] if "libopenblas" in p) or "no OpenBLAS",
                   "x".join(str(d) for d in r["gemm_shape"]), r["gemm_gflops"]))
    info["loadavg_after"] = os.getloadavg()
    if a.json:
        doc = {"benchmark": "train_vs_torch", "machine": info,
               "settings": {"job": typed_job(cfg), "pserv_args": a.pserv_args, "pserv_progress": progress, "pserv_spin_us": spin_us,
                            "torch_python": a.torch_python, "candidates_torch_threads": a.torch_threads,
                            "candidates_ddp_threads": a.ddp_threads, "candidates_torch_blas": a.blas_choices,
                            "blas_dirs": a.blas_dirs, "chosen": chosen, "foreach": a.foreach, "repeat": a.repeat,
                            "samples_per_s": "training samples of all workers / seconds from the first step to the "
                                             "end of the last evaluation (evaluations included, as pserv counts)"},
               "torch": {"version": torch_run["torch"],
                         "blas_loaded": {w: runs[w][0]["blas_loaded"] for w in ("torch1", "ddp") if w in runs},
                         "gemm_gflops": {w: runs[w][0]["gemm_gflops"] for w in ("torch1", "ddp") if w in runs}}
               if torch_run else None,
               "tuning": trials, "runs": runs, "medians": med, "ratios": ratios}
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    if a.enforce and any(not r["met"] for r in ratios.values()):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
