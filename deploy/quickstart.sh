#!/usr/bin/env bash
# quickstart.sh — from a fresh clone: install the dependencies, build, train the demo model when there
# is none yet (deploy/demo: a few hundred everyday English-Italian pairs; about two minutes on 2 CPU
# cores), then translate a few sentences with it.
#
#   deploy/quickstart.sh            the whole thing
#   MT_DEMO_DIR=dir deploy/quickstart.sh   train / look for the demo model in dir (default demo-run)
#   MT_CMAKE_ARGS="-DMT_CUDA=OFF" deploy/quickstart.sh   extra arguments for the CMake configure step
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh
echo "== build =="
# shellcheck disable=SC2086
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${MT_CMAKE_ARGS:-} >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null

dir=${MT_DEMO_DIR:-demo-run}
model="$dir/model.mt"
if [ ! -f "$model" ]; then
  echo "== training the demo model into $dir (about two minutes; Ctrl-C saves a checkpoint) =="
  build/bin/mt-train --config deploy/demo/config.json --out_dir "$dir"
fi

echo "== translating with $model =="
sentences=$'hello\ngood morning\nthank you very much\nwhere is the station?\nthe cat sleeps on the sofa'
paste <(printf '%s\n' "$sentences") <(printf '%s\n' "$sentences" | build/bin/mt-translate --model "$model" --beam 4) |
  awk -F'\t' '{ printf "  %-32s -> %s\n", $1, $2 }'
echo "Next: build/bin/mt-translate --model $model < your.txt ; README.md lists the other tools."
