#!/usr/bin/env bash
# cuda-context.sh — makes deploy/docker/cuda-context/, the build context of deploy/Dockerfile.cuda,
# from a host build with the CUDA backend: the programs, libmicrotensor and the CUDA toolkit's
# libraries they link (CUDA runtime, cuBLAS, cuBLASLt, NCCL), and the list of Debian packages for
# the rest (deploy/docker/stage.sh). Needs the CUDA toolkit (nvcc) on this machine, not a GPU.
#
#   deploy/docker/cuda-context.sh [BUILD_DIR]     default build-cuda; configured with -DMT_CUDA=ON
#                                                 when it has no CMakeCache.txt yet
# then: docker build -f deploy/Dockerfile.cuda -t microtensor:cuda deploy/docker/cuda-context
#   (or `docker compose -f deploy/docker-compose.yml -f deploy/docker-compose.gpu.yml build server`)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-cuda}
out=deploy/docker/cuda-context

if [ ! -f "$build/CMakeCache.txt" ]; then
  command -v nvcc >/dev/null || { echo "cuda-context: nvcc is not on PATH: no CUDA build here" >&2; exit 1; }
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMT_CUDA=ON >/dev/null
fi
grep -q '^MT_CUDA:STRING=OFF' "$build/CMakeCache.txt" && {
  echo "cuda-context: $build is configured with -DMT_CUDA=OFF" >&2
  exit 1
}
# shellcheck disable=SC2046
cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" --target microtensor $(sh deploy/docker/stage.sh --programs) >/dev/null
ldd "$build/lib/libmicrotensor.so" | grep 'libcudart' >/dev/null || {
  echo "cuda-context: $build/lib/libmicrotensor.so has no CUDA backend (no nvcc when it was configured?)" >&2
  exit 1
}
rm -rf "$out"
sh deploy/docker/stage.sh "$build" "$out"
echo "cuda-context: $out ($(du -sh "$out" | cut -f1))"
