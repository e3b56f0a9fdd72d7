#!/usr/bin/env bash
# Runs pserv's benchmarks and writes their results into one folder: each benchmark's table
# (NAME.txt, what it printed) and JSON (NAME.json); with --plot, PNG charts drawn with gnuplot.
#
#   bench/run.sh [--build DIR] [--out DIR] [--plot] [--quick] [--progress auto|spin|sleep] [--no-deps]
#
#   --build DIR   the CMake build folder with the benchmarks built (default: build)
#   --out DIR     where results go (default: DIR/bench-results under the build folder)
#   --plot        also draw the charts (gnuplot)
#   --quick       short runs: a check that everything works, not numbers to keep
#   --progress    exported to every program as PSERV_PROGRESS (default: not set)
#   --no-deps     do not run scripts/install-deps.sh bench first
#
# A benchmark that fails is reported and the others still run; the exit code is 1 if any failed.
# The GPU benchmarks run when they were built (they say "skipped" without a device).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
build=$root/build
out=""
plot=0
quick=0
progress=""
deps=1

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=${2:?--build needs a folder}; shift 2 ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    --plot) plot=1; shift ;;
    --quick) quick=1; shift ;;
    --progress) progress=${2:?--progress needs auto, spin or sleep}; shift 2 ;;
    --no-deps) deps=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$progress" in "" | auto | spin | sleep) ;; *) echo "run.sh: --progress is auto, spin or sleep" >&2; exit 2 ;; esac
build=$(cd "$build" 2>/dev/null && pwd) || { echo "run.sh: no build folder (build first: make build)" >&2; exit 2; }
out=${out:-$build/bench-results}
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
bench=$build/bench
if [ ! -x "$bench/pserv_bench_pushpull" ]; then
  echo "run.sh: $bench/pserv_bench_pushpull is not built (build first: make build)" >&2
  exit 2
fi
if [ "$deps" = 1 ]; then
  "$root/scripts/install-deps.sh" bench || { echo "run.sh: cannot install the benchmark packages" >&2; exit 2; }
fi
[ -n "$progress" ] && export PSERV_PROGRESS=$progress

failed=()
# step NAME LIMIT_S COMMAND...: runs it under a time limit, its output shown and kept in NAME.txt.
step() {
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$out/$name.txt"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "== $name FAILED (exit code $rc)"
    failed+=("$name")
  fi
}

# pserv push-pull as a user runs it (coordinator and server processes) against raw UCX: with
# the default way of waiting (pushpull.*), then, unless --progress chose one, with spin and
# sleep too (pushpull_spin.*, pushpull_sleep.*).
pp_args=(--json "$out/pushpull.json" --table "$out/pushpull.dat")
[ "$quick" = 1 ] && pp_args+=(--quick)
[ -n "$progress" ] && pp_args+=(--progress "$progress")
step pushpull 1200 "$bench/pserv_bench_pushpull" "${pp_args[@]}"
if [ -z "$progress" ]; then
  for mode in spin sleep; do
    mode_args=(--json "$out/pushpull_$mode.json" --table "$out/pushpull_$mode.dat" --progress "$mode")
    [ "$quick" = 1 ] && mode_args+=(--quick)
    step "pushpull_$mode" 1200 "$bench/pserv_bench_pushpull" "${mode_args[@]}"
  done
fi
# pserv over UCX's shared memory (not its default between processes: transport/README.md).
shm_args=(--json "$out/pushpull_shm.json" --table "$out/pushpull_shm.dat")
[ "$quick" = 1 ] && shm_args+=(--quick)
[ -n "$progress" ] && shm_args+=(--progress "$progress")
step pushpull_shm 1200 env UCX_MM_ERROR_HANDLING=y "$bench/pserv_bench_pushpull" "${shm_args[@]}"

# A model of 200 small tensors, one request at a time, all in flight, and as a group, against
# UCX's active-message round trip x the tensor count.
many_args=(--json "$out/many.json")
[ "$quick" = 1 ] && many_args+=(--steps 5)
step many 900 "$bench/pserv_bench_many" "${many_args[@]}"

# The same push-pull in one process against pserv's own transport (core/transport.h), with the
# staging pipeline's host side.
inproc_args=(--json "$out/pushpull_inproc.json")
[ "$quick" = 1 ] && inproc_args+=(--reps 5 --max-mib 16)
step pushpull_inproc 900 "$bench/pserv_bench_pushpull_inproc" "${inproc_args[@]}"

# Optimizer steps against memcpy and a STREAM triad.
optim_args=(--json "$out/optim.json")
[ "$quick" = 1 ] && optim_args+=(--elems 1048576 --reps 5)
step optim 900 "$bench/pserv_bench_optim" "${optim_args[@]}"

# Checkpoints: a shard's write against a plain write + fsync of the same bytes, the pause training
# sees, and resuming against a fresh start. The work folder goes under --out (a disk; /tmp may be tmpfs).
ckpt_args=(--json "$out/checkpoint.json" --dir "$out")
[ "$quick" = 1 ] && ckpt_args+=(--mib 16 --reps 2)
step checkpoint 900 "$bench/pserv_bench_checkpoint" "${ckpt_args[@]}"

# Replicated shards: push-pull with --replicas 1 against --replicas 0, and the time a job takes to
# get past a server killed with SIGKILL.
repl_args=(--json "$out/replication.json")
[ "$quick" = 1 ] && repl_args+=(--quick)
step replication 900 "$bench/pserv_bench_replication" "${repl_args[@]}"

# Servers joining and drained: the pause of the rounds that go on, against one chunk's transfer
# over raw UCX.
memb_args=(--json "$out/membership.json")
[ "$quick" = 1 ] && memb_args+=(--quick)
step membership 600 "$bench/pserv_bench_membership" "${memb_args[@]}"

# GPU benchmarks, when built (libpserv with its CUDA part).
if [ -x "$bench/pserv_bench_cuda_pushpull" ]; then
  cuda_args=(--json "$out/cuda_pushpull.json")
  [ "$quick" = 1 ] && cuda_args+=(--reps 5 --max-mib 16)
  step cuda_pushpull 600 "$bench/pserv_bench_cuda_pushpull" "${cuda_args[@]}"
fi

# ---- end-to-end training against PyTorch ------------------------------------------------------
# pserv train with its defaults against PyTorch one process and 2-rank DDP over gloo (Debian's
# python3-torch, from bench_packages). --quick: one repeat of one epoch, no tuning of torch.
e2e_args=(--pserv "$build/cli/pserv" --json "$out/train_vs_torch.json")
[ "$quick" = 1 ] && e2e_args+=(--repeat 1 --pserv-args=--epochs=1 --torch-blas openmp --torch-threads 2)
[ -n "$progress" ] && e2e_args+=(--progress "$progress")
step train_vs_torch 3600 python3 "$here/train_vs_torch.py" "${e2e_args[@]}"
# ------------------------------------------------------------------------------------------------

if [ "$plot" = 1 ] && [ -s "$out/train_vs_torch.json" ]; then
  # label samples/s seconds-to-target, one line per kind of run, from the medians
  python3 - "$out/train_vs_torch.json" > "$out/train.dat" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
names = {"pserv": "pserv train", "torch1": "PyTorch, 1 process", "ddp": "DDP gloo, 2 ranks"}
for kind, med in doc["medians"].items():
    label = names.get(kind, kind)
    print('"%s" %s %s' % (label, med["samples_per_s"] or 0, med["time_to_target_s"] or 0))
PY
  if gnuplot -e "data='$out/train.dat'; out='$out'; title='pserv train vs PyTorch (same model, data, optimizer)'" \
       "$here/plot_train.gp"; then
    echo "== chart: $out/train_samples.png"
  else
    echo "== train plot FAILED"
    failed+=(plot_train)
  fi
fi
if [ "$plot" = 1 ]; then
  if [ -s "$out/pushpull.dat" ]; then
    title="pserv $(sed -n 's/.*"pserv_version": "\([^"]*\)".*/\1/p' "$out/pushpull.json" 2>/dev/null | head -1) vs UCX"
    if gnuplot -e "data='$out/pushpull.dat'; out='$out'; title='$title'" "$here/plot_pushpull.gp"; then
      echo "== charts: $out/pushpull_goodput.png $out/pushpull_oneway.png $out/pushpull_latency.png"
    else
      echo "== plot FAILED"
      failed+=(plot)
    fi
  else
    echo "== plot: no push-pull results to draw"
    failed+=(plot)
  fi
fi

echo "== results in $out"
if [ ${#failed[@]} -gt 0 ]; then
  echo "== failed: ${failed[*]}"
  exit 1
fi
