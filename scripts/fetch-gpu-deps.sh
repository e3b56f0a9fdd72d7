#!/usr/bin/env bash
# Downloads, with `apt-get download`, the Debian 12 packages that building and testing pserv needs
# on the lent GPU machine, which has CUDA, CMake, a C compiler and Python but no package registry
# and no network. The .deb files land in .deps/ (git-ignored); tests/gpu/run.sh unpacks them into
# <build>/deps-root there. Carry `.deps` with the device tool (see docs/gpu-validation.md).
#
# The list below is explicit, with the reason for each package. The script then walks the
# Depends/PreDepends closure of that list with apt-cache and fails if it meets a package that is
# neither in the list nor named below as provided by the GPU image or deliberately left out, so the
# list cannot go stale silently. Idempotent: files already in .deps/ are not fetched again.
# Usage: scripts/fetch-gpu-deps.sh [DEST]   (DEST defaults to <repo>/.deps)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$repo/.deps}

# Headers, unversioned .so links and .pc files. Their own Depends (other -dev packages, the
# compiler, pkg-config) are not followed: the build links shared libraries and needs none of them.
dev_packages=(
  libucx-dev              # <ucp/api/ucp.h>, libucp.so/libucs.so links, ucx*.pc (FindUCX)
  libcriterion-dev        # <criterion/criterion.h>, libcriterion.so, criterion.pc (FindCriterion)
  libopenblas-pthread-dev # cblas.h and libopenblas.so under .../openblas-pthread/ (FindOpenBLAS);
                          # libopenblas-dev itself is an empty metapackage and is not fetched
  zlib1g-dev              # zlib.h and libz.so (FindZLIB): the IDX data files are gzip'd
)

# Runtime libraries and data; their closure is checked below.
runtime_packages=(
  # transport
  libucx0                 # libucp/libucs/libuct/libucm and the transport modules (lib/ucx/)
  libnuma1                # libucs/libucp link libnuma; CUDA images usually lack it
  # tests: Criterion and what libcriterion.so.3 links (none is in a stock CUDA image)
  libcriterion3
  libnanomsg5             # Criterion's runner <-> worker protocol
  libgit2-1.5             # Criterion's diff output
  libhttp-parser2.9 libssh2-1 libmbedtls14 libmbedx509-1 libmbedcrypto7  # libgit2's links
  libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1  # libgit2 -> GSSAPI
  libffi8 libssl3         # usually present; run.sh uses the image's copy when it has the soname
  # CPU math
  libopenblas0-pthread    # libopenblas.so.0 (the pthread flavour, as on the dev machines)
  libgfortran5 libquadmath0  # OpenBLAS's LAPACK part links them; run.sh prefers the image's copy
  zlib1g                  # target of zlib1g-dev's libz.so link; at run time the image's libz.so.1 wins
  # data
  dataset-fashion-mnist   # /usr/share/datasets/fashion-mnist/*.gz, read by tests and `pserv train`
  # launch: tests/cli's mpirun test; used only when the image has no mpirun of its own
  openmpi-bin openmpi-common libopenmpi3 libpmix2 libhwloc15 libevent-core-2.1-7 libevent-pthreads-2.1-7
  # pkg-config for FindPkgConfig, used only when the image has none (the find modules also work without)
  pkgconf pkgconf-bin libpkgconf3
)

# In every CUDA image (Ubuntu base): the C runtime, the compiler's runtime, and base-system
# libraries that dpkg, apt, bash and PAM already need.
provided_by_image=(
  libc6 libgcc-s1 gcc-12-base libstdc++6 libgomp1 libatomic1 libcrypt1 libzstd1 liblzma5 libbz2-1.0
  libselinux1 libpcre2-8-0 libacl1 libaudit1 libaudit-common libcap-ng0 libpam0g libpam-modules
  libpam-modules-bin libmd0 libtinfo6 libreadline8 readline-common libudev1 libuuid1 libdb5.3
  libsemanage2 libsemanage-common libsepol2 libbsd0 debconf dpkg tar adduser passwd install-info
  cdebconf libdebian-installer4 libnewt0.52 libslang2 libtextwrap1
)

# Reachable through Depends but not needed here: RDMA/InfiniBand/OmniPath providers (UCX's ib and
# rdmacm modules and Open MPI's ofi/psm components fail to load without them and fall back to
# shared memory and TCP, which is all one machine uses), hwloc's GUI/GPU plugins, munge
# authentication for PMIx, ssh for remote launch (mpirun here starts local processes only).
left_out=(
  ibverbs-providers libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200 libfabric1
  libpsm-infinipath1 libpsm2-2 libhwloc-plugins libxnvctrl0 libpciaccess0 libx11-6 libx11-data
  libxau6 libxcb1 libxdmcp6 libxext6 libxml2 libicu72 ocl-icd-libopencl1 libmunge2
  openssh-client libedit2 libfido2-1 libcbor0.8
)

if ! apt-cache show --no-all-versions libucx0 dataset-fashion-mnist >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "fetch-gpu-deps: package lists lack pserv's packages; running apt-get update"
  $sudo apt-get update -qq
fi

# Closure check: every package reachable through Depends/PreDepends must be classified above.
declare -A known=()
for p in "${runtime_packages[@]}" "${provided_by_image[@]}" "${left_out[@]}"; do known[$p]=1; done
unknown=()
while read -r p; do
  p=${p%%:*} # strip :amd64
  [ -n "${known[$p]:-}" ] || unknown+=("$p")
done < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
           --no-replaces --no-enhances "${runtime_packages[@]}" | grep -v '^[ <]' | sort -u)
if [ ${#unknown[@]} -ne 0 ]; then
  echo "fetch-gpu-deps: unclassified dependencies (add each to a list above): ${unknown[*]}" >&2
  exit 1
fi

# Candidate versions, one apt-cache call for all.
declare -A version=()
while read -r p v; do version[$p]=$v; done < <(apt-cache policy "${dev_packages[@]}" "${runtime_packages[@]}" |
  awk '/^[^ ]/{sub(":$","",$1); p=$1} /Candidate:/{print p, $2}')

# apt's _apt sandbox user cannot write into a root-owned checkout; fetching as root is fine here.
sandbox=()
[ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
mkdir -p "$dest"
cd "$dest"
fetched=0
declare -A wanted=()
for p in "${dev_packages[@]}" "${runtime_packages[@]}"; do
  v=${version[$p]:-}
  if [ -z "$v" ] || [ "$v" = "(none)" ]; then
    echo "fetch-gpu-deps: no candidate for $p" >&2
    exit 1
  fi
  # apt-get download names files <name>_<version, ':' as %3a>_<arch>.deb
  f=$(compgen -G "${p}_${v//:/%3a}_*.deb" || true)
  if [ -z "$f" ]; then
    apt-get download -qq "${sandbox[@]}" "$p=$v"
    fetched=$((fetched + 1))
    f=$(compgen -G "${p}_${v//:/%3a}_*.deb")
  fi
  wanted[$f]=1
done
# Older versions left by an earlier run would travel twice; keep only the current ones.
for f in *.deb; do
  [ -n "${wanted[$f]:-}" ] || { echo "fetch-gpu-deps: removing stale $f"; rm -f -- "$f"; }
done

# nccl.h (25 KB), for the GPU build when neither the GPU machine's CUDA toolkit nor its PyTorch wheel
# has one (tests/gpu/run.sh prefers those, and the build works without it: libpserv loads NCCL at
# run time and only checks its own declarations against the header when there is one).
nccl_h=""
for d in /usr/local/cuda/include /usr/include; do
  if [ -e "$d/nccl.h" ]; then nccl_h=$d/nccl.h; break; fi
done
if [ -n "$nccl_h" ]; then
  mkdir -p include
  cp -f "$nccl_h" include/nccl.h
  echo "fetch-gpu-deps: copied $nccl_h (NCCL $(awk '/^#define NCCL_(MAJOR|MINOR|PATCH) /{printf "%s%s", sep, $3; sep="."}' "$nccl_h")) into $dest/include"
else
  echo "fetch-gpu-deps: no nccl.h on this machine; the GPU build will use the GPU machine's, if any"
fi

n=$(ls -1 *.deb | wc -l)
echo "fetch-gpu-deps: $n packages in $dest ($fetched fetched now), $(du -ch *.deb | tail -1 | cut -f1) in all"
