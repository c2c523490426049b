#!/usr/bin/env bash
# test.sh — the whole test suite, as CI runs it: install dependencies, build (CUDA too when nvcc is
# present), run every ctest label, then build the container images and run the compose deployment for
# real (deploy/compose-test.sh: skipped, saying so, where docker cannot run), then rebuild with
# AddressSanitizer + UBSan (CPU build) and run the tests again (the `slow` label excepted), then a
# short run of each fuzz target.
#
#   deploy/test.sh            everything
#   MT_TEST_FAST=1 deploy/test.sh   skip the sanitizer pass (local iteration)
#   MT_TEST_DOCKER=0 deploy/test.sh skip the containers
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=$(nproc 2>/dev/null || echo 2)
start=$(date +%s)

bash deploy/install-deps.sh

echo "== build (Release, -Werror) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMT_WERROR=ON >/dev/null
cmake --build build -j"$jobs"

echo "== tests =="
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== containers (deploy/compose-test.sh) =="
if [ "${MT_TEST_DOCKER:-1}" = 0 ]; then
  echo "SKIPPED: containers: MT_TEST_DOCKER=0"
else
  rc=0
  MT_BUILD_DIR=build bash deploy/compose-test.sh || rc=$?
  if [ "$rc" = 77 ]; then
    echo "SKIPPED: containers: docker cannot run on this machine (the reason is above)"
  elif [ "$rc" != 0 ]; then
    exit "$rc"
  fi
fi

if [ "${MT_TEST_FAST:-0}" != "1" ]; then
  echo "== tests under AddressSanitizer + UBSan =="
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMT_SANITIZE=ON -DMT_CUDA=OFF -DMT_WERROR=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs" -LE 'slow|bench'
fi

if [ -x build/bin/mt-fuzz-run ]; then
  echo "== fuzz =="
  build/bin/mt-fuzz-run
fi

echo "== all tests passed in $(( $(date +%s) - start )) s =="
