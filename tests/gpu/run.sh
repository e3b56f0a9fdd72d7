#!/usr/bin/env bash
# Builds and tests pserv on the lent GPU machine, which has CUDA, CMake and a C compiler but none
# of pserv's Debian packages and no network. Run from the repo root with .deps/ carried along
# (scripts/fetch-gpu-deps.sh fills it; docs/gpu-validation.md has the whole procedure):
#   bash tests/gpu/run.sh
# Unpacks every .deb in .deps/ into <build>/deps-root (never into /), points CMake, pkg-config and the
# loader there, builds with CUDA, runs ctest, the GPU tests verbosely and under compute-sanitizer,
# and the benchmarks. Each step's failure is recorded and the rest still run; the script ends with
# a table of steps and exits non-zero if any failed.
# Environment:
#   PSERV_GPURUN_BUILD   build directory (default build-gpurun)
#   PSERV_GPURUN_NO_GPU  1: skip the steps that need a GPU (automatic when nvidia-smi is absent)
#   PSERV_GPURUN_CMAKE_ARGS  extra configure arguments (split on spaces)
#   OUT                  where logs go (the device tool collects it); default the build directory
set -u
set -o pipefail

repo=$(pwd)
deps=$repo/.deps
build=${PSERV_GPURUN_BUILD:-build-gpurun}
# The unpacked tree (about 160 MB) lives in the build directory, not in .deps: .deps travels with
# the device tool (64 MiB limit) and must hold only the .deb files.
mkdir -p "$build"
root=$(cd "$build" && pwd)/deps-root
jobs=$(nproc)
arch=$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
logdir=${OUT:-$repo/$build}
mkdir -p "$logdir"
log=$logdir/gpurun.log # one log for every step; a second file holds the benchmark JSON
: >"$log"

no_gpu=${PSERV_GPURUN_NO_GPU:-0}
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then no_gpu=1; fi

steps=()
failed=0
# step NAME CMD...: runs CMD with its output in the log (and on stdout), records status and time.
step()
{
    local name=$1
    shift
    local t0=$SECONDS rc
    echo "=== $name: $*" | tee -a "$log"
    "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    local status=ok
    if [ "$rc" -ne 0 ]; then
        status="FAIL($rc)"
        failed=1
    fi
    echo "=== $name: $status in $((SECONDS - t0)) s" | tee -a "$log"
    steps+=("$(printf '%-36s %-10s %5d s' "$name" "$status" $((SECONDS - t0)))")
    return "$rc"
}
skip()
{
    echo "=== $1: skipped ($2)" | tee -a "$log"
    steps+=("$(printf '%-36s %-10s %5s   (%s)' "$1" skipped - "$2")")
}
finish()
{
    echo
    printf '%-36s %-10s %7s\n' step status time
    printf '%s\n' "${steps[@]}"
    echo "log: $log"
    exit "$failed"
}

# --- unpack ---------------------------------------------------------------------------------
unpack()
{
    shopt -s nullglob
    local debs=("$deps"/*.deb)
    if [ ${#debs[@]} -eq 0 ]; then
        echo "no .deb files in $deps: run scripts/fetch-gpu-deps.sh where apt works and carry .deps"
        return 1
    fi
    rm -rf "$root"
    mkdir -p "$root"
    local f
    for f in "${debs[@]}"; do dpkg-deb -x "$f" "$root" || return 1; done
    # .pc files name /usr; point them at the unpacked tree (prefix=, libdir=/usr/..., with or
    # without spaces around '=').
    find "$root" -name '*.pc' -print0 |
        xargs -0 -r sed -i -E "s#^([A-Za-z_]+)[[:space:]]*=[[:space:]]*/usr(/|\$)#\1=$root/usr\2#"
    # Libraries the image usually has in a newer version: drop our soname link when the image has
    # the soname, so that the loader takes the image's copy (the .so link for the linker stays).
    local so
    for so in libz.so.1 libssl.so.3 libcrypto.so.3 libffi.so.8 libgfortran.so.5 libquadmath.so.0; do
        if ldconfig -p | grep -q "^[[:space:]]*$so "; then
            rm -f "$root/usr/lib/$arch/$so"
            echo "using the image's $so"
        fi
    done
    echo "unpacked ${#debs[@]} packages into $root ($(du -sh "$root" | cut -f1))"
}
if ! step unpack unpack; then finish; fi

lib=$root/usr/lib/$arch
export CMAKE_PREFIX_PATH=$root/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
# OpenBLAS lives in a flavour subdirectory (Debian's alternatives link is made by postinst, not
# by dpkg -x); these make find_path/find_library see it even without pkg-config.
export CMAKE_INCLUDE_PATH=$root/usr/include/$arch/openblas-pthread
export CMAKE_LIBRARY_PATH=$lib/openblas-pthread
export PKG_CONFIG_PATH=$lib/pkgconfig:$lib/openblas-pthread/pkgconfig:$root/usr/share/pkgconfig
if ! command -v pkg-config >/dev/null 2>&1; then
    export PKG_CONFIG=$root/usr/bin/pkgconf # FindPkgConfig honours $PKG_CONFIG
    export PKG_CONFIG_LIBDIR=$PKG_CONFIG_PATH
fi
export LD_LIBRARY_PATH=$lib:$lib/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export UCX_MODULE_DIR=$lib/ucx
export PSERV_DATA=$root/usr/share/datasets/fashion-mnist
# Open MPI: the image's own when it has one, else the unpacked one, relocated by OPAL_PREFIX.
mpirun_bin=$(command -v mpirun || true)
if [ -z "$mpirun_bin" ]; then
    mpirun_bin=$root/usr/bin/mpirun.openmpi
    export OPAL_PREFIX=$root/usr
    export OPAL_LIBDIR=$lib/openmpi/lib
    export OPAL_SYSCONFDIR=$root/etc/openmpi
    export OPAL_PKGDATADIR=$root/usr/share/openmpi
    export PMIX_INSTALL_PREFIX=$root/usr
    export PMIX_MCA_mca_base_component_path=$lib/pmix2/lib/pmix
    export OMPI_MCA_mca_base_component_path=$lib/openmpi/lib/openmpi3
    export PATH=$root/usr/bin:$PATH
fi
# mpirun as root needs this in some Open MPI versions even with --allow-run-as-root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
cuda_args=()
if [ -n "$nvcc" ]; then
    cuda_args=(-DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES=90)
fi

# --- configure and build --------------------------------------------------------------------
configure()
{
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPSERV_WERROR=ON \
        -DMPIRUN_EXECUTABLE="$mpirun_bin" "${cuda_args[@]}" ${PSERV_GPURUN_CMAKE_ARGS:-} || return 1
    # What the find modules picked: every path should be under $root (or the CUDA toolkit).
    grep -E '^(UCX_|CRITERION_|OPENBLAS_|ZLIB_|MPIRUN_|CMAKE_CUDA_COMPILER:|PKG_CONFIG_EXECUTABLE)[A-Z_]*:' \
        "$build/CMakeCache.txt"
    local bad
    bad=$(grep -E '^(UCX_|CRITERION_|OPENBLAS_|ZLIB_)(INCLUDE_DIR|[A-Z]*_?LIBRARY)[A-Z_]*:[A-Z]+=' \
        "$build/CMakeCache.txt" | grep -v -e "=$root/" -e '-NOTFOUND$')
    if [ -n "$bad" ]; then
        echo "found outside $root:"
        echo "$bad"
        return 1
    fi
}
if step configure configure; then configured=1; else configured=0; fi
# Keep going past a broken target (Makefiles: -k), so that every test that did build still runs.
keep_going=()
grep -q '^CMAKE_GENERATOR:INTERNAL=Unix Makefiles' "$build/CMakeCache.txt" 2>/dev/null && keep_going=(-- -k)
grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja' "$build/CMakeCache.txt" 2>/dev/null && keep_going=(-- -k 0)
if [ $configured -eq 1 ]; then step build cmake --build "$build" -j"$jobs" "${keep_going[@]}"; fi
built=$configured

# --- tests ------------------------------------------------------------------------------------
if [ $built -eq 1 ]; then
    step ctest ctest --test-dir "$build" --output-on-failure -j4 --timeout 300
    gpu_tests=()
    for t in "$build"/tests/test_gpu_*; do [ -x "$t" ] && gpu_tests+=("$t"); done
    if [ ${#gpu_tests[@]} -eq 0 ]; then
        skip gpu-tests "no test_gpu_* binaries (nvcc missing?)"
    elif [ "$no_gpu" = 1 ]; then
        skip gpu-tests "no GPU"
        skip compute-sanitizer "no GPU"
    else
        step nvidia-smi nvidia-smi
        for t in "${gpu_tests[@]}"; do
            step "$(basename "$t")" "$t" --jobs 1 --verbose
        done
        if command -v compute-sanitizer >/dev/null 2>&1; then
            for t in "${gpu_tests[@]}"; do
                # Criterion runs each test in a child process: follow children too.
                step "memcheck $(basename "$t")" compute-sanitizer --tool memcheck --target-processes all \
                    --error-exitcode 99 "$t" --jobs 1
            done
        else
            skip compute-sanitizer "compute-sanitizer not on PATH"
        fi
    fi

    # --- benchmarks -------------------------------------------------------------------------------
    json=$logdir/gpurun-bench.json # one JSON object per benchmark, one after another
    : >"$json"
    if [ -x "$build/bench/pserv_bench_optim" ]; then
        step bench_optim "$build/bench/pserv_bench_optim" --reps 10 --json "$build/bench_optim.json" &&
            { echo '{"bench_optim":'; cat "$build/bench_optim.json"; echo '}'; } >>"$json"
    fi
    for b in "$build"/bench/pserv_bench_*; do
        case $(basename "$b") in
        *gpu* | *cuda*)
            if [ "$no_gpu" = 1 ]; then
                skip "$(basename "$b")" "no GPU"
            else
                step "$(basename "$b")" "$b" --json "$build/$(basename "$b").json" &&
                    { echo "{\"$(basename "$b")\":"; cat "$build/$(basename "$b").json"; echo '}'; } >>"$json"
            fi
            ;;
        esac
    done
else
    skip ctest "configure failed"
fi
finish
