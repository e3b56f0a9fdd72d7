#!/usr/bin/env bash
# Installs the built pserv into a scratch prefix and builds and runs a project that uses it
# through find_package(pserv).
set -euo pipefail
build=$1
shift # the rest: extra CMake arguments for the user's project (e.g. sanitizer flags)
src=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" > /dev/null
cmake -S "$src" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" "$@" > /dev/null
cmake --build "$work/build" > /dev/null
LD_LIBRARY_PATH="$work/prefix/lib:$work/prefix/lib64:${LD_LIBRARY_PATH:-}" "$work/build/consumer"
