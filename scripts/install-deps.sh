#!/usr/bin/env bash
# Installs pserv's system dependencies from Debian 12's packages (sudo when not root).
# Quiet and quick when everything is already there.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libucx-dev ucx-utils          # transport
  libcriterion-dev              # tests
  libopenblas-dev               # CPU gradients (cblas)
  zlib1g-dev                    # reading the gzip'd IDX files
  dataset-fashion-mnist         # real data
  openmpi-bin                   # multi-node launch (mpirun)
  iproute2                      # tests: a network namespace and a veth pair for a silent partition
)

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
