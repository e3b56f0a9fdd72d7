#!/usr/bin/env bash
# Installs the built pserv into a scratch prefix and builds and runs a project that uses it
# through find_package(pserv). When the package says pserv_HAS_CUDA and nvcc is here, also builds
# examples/ (a CUDA training loop) against the same install and runs it with --local: without a
# GPU it prints "skipped: ..." and exits 0; with one it must converge.
#   tests/package/run.sh BUILD_DIR [extra CMake arguments for the user's project]
set -euo pipefail
build=$1
shift # the rest: extra CMake arguments for the user's project (e.g. sanitizer flags)
src=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$src/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" > /dev/null
cmake -S "$src" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" "$@" > /dev/null
cmake --build "$work/build" > /dev/null
export LD_LIBRARY_PATH="$work/prefix/lib:$work/prefix/lib64:${LD_LIBRARY_PATH:-}"
"$work/build/consumer"

# --- examples/ -----------------------------------------------------------------------------------
config=$(ls "$work"/prefix/lib*/cmake/pserv/pservConfig.cmake | head -n 1)
if ! grep -Eq '^set\(pserv_HAS_CUDA (ON|TRUE|1)\)' "$config"; then
    echo "examples: skipped: this pserv was built without CUDA ($(grep pserv_HAS_CUDA "$config"))"
    exit 0
fi
nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
if [ -z "$nvcc" ]; then
    echo "examples: skipped: no nvcc"
    exit 0
fi
# The user's C flags (sanitizers) apply to the example's host code and link too: a program that
# loads an instrumented libpserv must carry the same runtime.
example_args=()
for a in "$@"; do
    case $a in
    -DCMAKE_C_FLAGS=*)
        flags=${a#-DCMAKE_C_FLAGS=}
        example_args+=("-DCMAKE_CUDA_FLAGS=$flags" "-DCMAKE_EXE_LINKER_FLAGS=$flags")
        ;;
    *) example_args+=("$a") ;;
    esac
done
# nvcc prints its configure noise only on failure (the log is kept in $work until then).
if ! cmake -S "$repo/examples" -B "$work/examples" -DCMAKE_PREFIX_PATH="$work/prefix" \
    -DCMAKE_CUDA_COMPILER="$nvcc" -DPSERV_EXAMPLES_WERROR=ON ${example_args[@]+"${example_args[@]}"} \
    > "$work/examples.log" 2>&1; then
    cat "$work/examples.log"
    exit 1
fi
if ! cmake --build "$work/examples" > "$work/examples.log" 2>&1; then
    cat "$work/examples.log"
    exit 1
fi
"$work/examples/linear_regression" --local
