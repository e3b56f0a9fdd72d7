#!/usr/bin/env bash
# Installs pserv's system dependencies from Debian 12's packages (sudo when not root).
# Quiet and quick when everything is already there.
#   scripts/install-deps.sh          what pserv needs to build, test and run (CI installs this)
#   scripts/install-deps.sh bench    also what only the benchmarks need (bench/run.sh calls this)
set -euo pipefail

case "${1:-}" in
  "" | bench) ;;
  *) echo "usage: $0 [bench]" >&2; exit 2 ;;
esac

packages=(
  build-essential cmake pkg-config
  libucx-dev ucx-utils          # transport
  libcriterion-dev              # tests
  libopenblas-dev               # CPU gradients (cblas)
  zlib1g-dev                    # reading the gzip'd IDX files
  libisal-dev                   # CRC32C of checkpoint sections (ISA-L's crc32_iscsi)
  dataset-fashion-mnist         # real data
  openmpi-bin                   # multi-node launch (mpirun)
  iproute2                      # tests: a network namespace and a veth pair for a silent partition
)

# Benchmark-only packages: installed with the argument `bench`, never by default (CI must not).
bench_packages=(
  gnuplot-nox                   # bench/run.sh --plot: the PNG charts
  python3-torch                 # bench/train_vs_torch.py: the PyTorch baselines
  libopenblas0-openmp           # the OpenMP OpenBLAS torch is tried with (LD_LIBRARY_PATH), its fastest here
)
if [ "${1:-}" = bench ]; then
  packages+=("${bench_packages[@]}")
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
