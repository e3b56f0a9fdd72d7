#!/usr/bin/env bash
# Builds and tests pserv on the lent GPU machine, which has CUDA, CMake, a C compiler and Python
# with PyTorch but none of pserv's Debian packages and no network. Run from the repo root with
# .deps/ carried along (scripts/fetch-gpu-deps.sh fills it; docs/gpu-validation.md has the whole
# procedure):
#   bash tests/gpu/run.sh
# Unpacks every .deb in .deps/ into <build>/deps-root (never into /), points CMake, pkg-config and the
# loader there, finds NCCL (PyTorch's wheel) for the run-time load, builds with CUDA, runs ctest,
# the GPU tests verbosely, the example (examples/, built against an install of this build), the
# GPU benchmarks with their baselines (PyTorch, bare cudaMemcpyAsync), and compute-sanitizer over
# the GPU tests (last: slowest). Each step's failure is recorded and the rest still run; the script
# ends with a table of steps and of the benchmarks' ratios, and exits non-zero if any step failed.
# Environment:
#   PSERV_GPURUN_BUILD   build directory (default build-gpurun)
#   PSERV_GPURUN_NO_GPU  1: skip the steps that need a GPU (automatic when nvidia-smi is absent)
#   PSERV_GPURUN_SKIP    step groups to leave out, space-separated: ctest gpu-tests example bench
#                        memcheck (e.g. to split a run over several device calls of 600 s each;
#                        the build directory is kept between calls and rebuilds incrementally)
#   PSERV_GPURUN_CMAKE_ARGS  extra configure arguments (split on spaces)
#   PSERV_NCCL_LIBRARY   libnccl.so.2 to load; default: found in PyTorch's wheel (nvidia.nccl)
#   PYTHON               the Python with PyTorch (default python3)
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

skip_groups=" ${PSERV_GPURUN_SKIP:-} "
wanted() { [[ $skip_groups != *" $1 "* ]]; }
python=${PYTHON:-python3}

steps=()
results=() # one line per benchmark ratio, printed after the steps
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
    {
        echo
        printf '%-36s %-10s %7s\n' step status time
        printf '%s\n' "${steps[@]}"
        if [ ${#results[@]} -gt 0 ]; then
            echo
            printf '%s\n' "${results[@]}"
        fi
        echo "log: $log"
    } | tee -a "$log"
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
# PyTorch (the GPU benchmark's baseline) runs with the image's own library path, not ours.
image_ld_library_path=${LD_LIBRARY_PATH:-}
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

# --- NCCL ----------------------------------------------------------------------------------------
# libpserv dlopen()s libnccl.so.2 (it does not link NCCL). On the GPU machines NCCL comes with
# PyTorch's wheel (nvidia-nccl-cu*: nvidia/nccl/lib/libnccl.so.2, nvidia/nccl/include/nccl.h).
# nccl.h is optional for the build (cuda/nccl_loader.cu checks its own declarations against it
# when present): the toolkit's, else the wheel's, else the copy scripts/fetch-gpu-deps.sh carries
# in .deps/include/.
nccl_setup()
{
    local wheel lib_path="" inc=""
    wheel=$("$python" -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null || true)
    if [ -n "${PSERV_NCCL_LIBRARY:-}" ]; then
        lib_path=$PSERV_NCCL_LIBRARY
    elif [ -n "$wheel" ] && [ -e "$wheel/lib/libnccl.so.2" ]; then
        lib_path=$wheel/lib/libnccl.so.2
    else
        # Any site-packages (a wheel not importable as nvidia.nccl), then the loader's cache.
        local sp
        local sites
        sites=$("$python" -c 'import site; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' \
            2>/dev/null || true)
        for sp in $sites; do
            [ -d "$sp" ] || continue
            lib_path=$(find "$sp" -name libnccl.so.2 2>/dev/null | head -n 1)
            [ -n "$lib_path" ] && break
        done
        if [ -z "$lib_path" ]; then
            lib_path=$(ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2 /{print $NF; exit}')
        fi
    fi
    if [ -n "$lib_path" ] && [ -e "$lib_path" ]; then
        export PSERV_NCCL_LIBRARY=$lib_path
        # A wheel's folder is not in the loader's cache: put it on the path too.
        if ! ldconfig -p 2>/dev/null | grep -q "=> $lib_path\$"; then
            LD_LIBRARY_PATH=$(dirname "$lib_path"):$LD_LIBRARY_PATH
        fi
        echo "NCCL: PSERV_NCCL_LIBRARY=$lib_path"
    else
        echo "NCCL: libnccl.so.2 not found (wheel: ${wheel:-none}); pserv falls back to device copies for one GPU"
    fi
    local cuda_inc=""
    [ -n "$nvcc" ] && cuda_inc=$(cd "$(dirname "$nvcc")/../include" 2>/dev/null && pwd)
    if [ -n "$cuda_inc" ] && [ -e "$cuda_inc/nccl.h" ]; then
        inc=$cuda_inc
    elif [ -n "$wheel" ] && [ -e "$wheel/include/nccl.h" ]; then
        inc=$wheel/include
    elif [ -e "$deps/include/nccl.h" ]; then
        inc=$deps/include
    fi
    if [ -n "$inc" ]; then
        # NCCL_INCLUDE_DIR for CMake's FindNCCL; CPATH so that nvcc's __has_include(<nccl.h>) sees it.
        cuda_args+=(-DNCCL_INCLUDE_DIR="$inc")
        [ "$inc" = "$cuda_inc" ] || export CPATH=$inc${CPATH:+:$CPATH}
        echo "NCCL: nccl.h in $inc"
    else
        echo "NCCL: no nccl.h (the build does not need it)"
    fi
}
nccl_setup 2>&1 | tee -a "$log"
# (again outside the pipeline, whose subshell cannot export)
nccl_setup >/dev/null 2>&1

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
gpu_tests=()
if [ $built -eq 1 ]; then
    if wanted ctest; then step ctest ctest --test-dir "$build" --output-on-failure -j4 --timeout 300; fi
    for t in "$build"/tests/test_gpu_*; do [ -x "$t" ] && gpu_tests+=("$t"); done
    if ! wanted gpu-tests; then
        :
    elif [ ${#gpu_tests[@]} -eq 0 ]; then
        skip gpu-tests "no test_gpu_* binaries (nvcc missing?)"
    elif [ "$no_gpu" = 1 ]; then
        skip gpu-tests "no GPU"
    else
        step nvidia-smi nvidia-smi
        for t in "${gpu_tests[@]}"; do
            step "$(basename "$t")" "$t" --jobs 1 --verbose
        done
        # The whole training job on the GPU(s): one worker per GPU, to the 0.88 target.
        train_cuda()
        {
            local out="$build/train-cuda.out"
            local rc=0 acc
            timeout 400 "$build/cli/pserv" train --device cuda --data "$PSERV_DATA" >"$out" 2>&1 || rc=$?
            cat "$out"
            [ $rc -eq 0 ] || return 1
            acc=$(train_accuracy "$out")
            awk -v a="${acc:-0}" 'BEGIN { exit !(a >= 0.88) }'
        }
        train_accuracy() { sed -n 's/.*summary: test accuracy \([0-9.]*\).*/\1/p' "$1" | tail -n 1; }
        step train-cuda train_cuda
        # step runs its command in a pipeline (a subshell): the result line is read here
        results+=("pserv train --device cuda: test accuracy $(train_accuracy "$build/train-cuda.out") (goal >= 0.88)")
    fi
else
    skip ctest "configure failed"
fi

# --- the example, built against an install of this build, as a user's project ---------------------
# Without a GPU it prints "skipped: no GPU" and exits 0, so it runs either way.
if [ $built -eq 1 ] && wanted example; then
    if [ -z "$nvcc" ]; then
        skip example "no nvcc"
    else
        prefix=$(cd "$build" && pwd)/install
        example_build()
        {
            rm -rf "$prefix" "$build/examples"
            cmake --install "$build" --prefix "$prefix" >/dev/null || return 1
            cmake -S examples -B "$build/examples" -DCMAKE_PREFIX_PATH="$prefix" -DPSERV_EXAMPLES_WERROR=ON \
                -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES=90 || return 1
            cmake --build "$build/examples" -j"$jobs"
        }
        if step example-build example_build; then
            # The installed libpserv has no RUNPATH: it finds cuBLAS through the toolkit's lib dir.
            cuda_lib=$(cd "$(dirname "$nvcc")/.." && pwd)
            step example-linear_regression env \
                LD_LIBRARY_PATH="$prefix/lib:$prefix/lib64:$cuda_lib/lib64:$cuda_lib/lib:$LD_LIBRARY_PATH" \
                timeout 120 "$build/examples/linear_regression" --local
        fi
    fi
fi

# --- benchmarks ---------------------------------------------------------------------------------
# summarize KIND FILE: one line per ratio of a benchmark's JSON into the final table.
summarize()
{
    "$python" - "$1" "$2" <<'EOF' 2>/dev/null || true
import json, sys
kind, path = sys.argv[1], sys.argv[2]
d = json.load(open(path))
if kind == "gpu_step":
    for r in d["rows"]:
        print("gpu step %s %s: pserv %.3f ms, torch %.3f ms, ratio %.3f (pserv/torch time; goal <= %.2f)"
              % ("-".join(map(str, d.get("dims", []))), r["precision"], r["pserv_s"] * 1e3, r["torch_s"] * 1e3,
                 r["ratio"], d.get("goal", 1.10)))
elif kind == "cuda_pushpull":
    for r in d["rows"]:
        print("cuda push-pull %3d MiB: copies %.2f GB/s, pserv %.2f GB/s, ratio %.3f (pserv/copies GB/s)"
              % (r["bytes"] >> 20, r["copy_gbs"], r["pserv_gbs"], r["ratio"]))
EOF
}
if [ $built -eq 1 ] && wanted bench; then
    json=$logdir/gpurun-bench.json # one JSON object per benchmark, one after another
    : >"$json"
    if [ -x "$build/bench/pserv_bench_optim" ]; then
        step bench_optim "$build/bench/pserv_bench_optim" --reps 10 --json "$build/bench_optim.json" &&
            { echo '{"bench_optim":'; cat "$build/bench_optim.json"; echo '}'; } >>"$json"
    fi
    if [ "$no_gpu" = 1 ]; then
        skip gpu-benchmarks "no GPU"
    else
        # A benchmark that skips (no device after all) writes no JSON; remove last run's first.
        b=$build/bench/pserv_bench_cuda_pushpull
        if [ -x "$b" ]; then
            rm -f "$build/cuda_pushpull.json"
            step cuda_pushpull timeout 300 "$b" --json "$build/cuda_pushpull.json" &&
                if [ -s "$build/cuda_pushpull.json" ]; then
                    { echo '{"cuda_pushpull":'; cat "$build/cuda_pushpull.json"; echo '}'; } >>"$json"
                    while IFS= read -r line; do results+=("$line"); done < <(summarize cuda_pushpull "$build/cuda_pushpull.json")
                fi
        else
            skip cuda_pushpull "not built"
        fi
        b=$build/bench/pserv_bench_gpu_step
        if [ -x "$b" ]; then
            # pserv and PyTorch alternately, 3 times each; PyTorch with the image's library path.
            rm -f "$build/gpu_step_vs_torch.json"
            step gpu_step_vs_torch timeout 400 "$python" bench/gpu_step_vs_torch.py --bench "$b" --repeat 3 \
                --python "$python" --torch-ld-library-path "$image_ld_library_path" \
                --json "$build/gpu_step_vs_torch.json" &&
                if [ -s "$build/gpu_step_vs_torch.json" ]; then
                    { echo '{"gpu_step_vs_torch":'; cat "$build/gpu_step_vs_torch.json"; echo '}'; } >>"$json"
                    while IFS= read -r line; do results+=("$line"); done < <(summarize gpu_step "$build/gpu_step_vs_torch.json")
                fi
        else
            skip gpu_step_vs_torch "not built"
        fi
    fi
fi

# --- compute-sanitizer last: it is the slowest step ------------------------------------------------
if [ $built -eq 1 ] && wanted memcheck && [ ${#gpu_tests[@]} -gt 0 ]; then
    sanitizer=$(command -v compute-sanitizer || true)
    if [ -z "$sanitizer" ] && [ -n "$nvcc" ] && [ -x "$(dirname "$nvcc")/compute-sanitizer" ]; then
        sanitizer=$(dirname "$nvcc")/compute-sanitizer
    fi
    if [ "$no_gpu" = 1 ]; then
        skip compute-sanitizer "no GPU"
    elif [ -n "$sanitizer" ]; then
        for t in "${gpu_tests[@]}"; do
            # Criterion runs each test in a child process: follow children too.
            step "memcheck $(basename "$t")" "$sanitizer" --tool memcheck --target-processes all \
                --error-exitcode 99 "$t" --jobs 1
        done
    else
        skip compute-sanitizer "compute-sanitizer not on PATH nor next to nvcc"
    fi
fi
finish
