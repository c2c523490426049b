#!/usr/bin/env bash
# quickstart.sh — from a fresh clone: install the dependencies, build, train the demo model when there
# is none yet (deploy/demo: a few hundred everyday English-Italian pairs; about two minutes on 2 CPU
# cores), translate a few sentences with it offline, then serve it: the script ends with mt-server
# running in the background on 127.0.0.1:7700, answering `build/bin/mt-client translate "hello"`.
#
#   deploy/quickstart.sh            the whole thing
#   MT_DEMO_DIR=dir deploy/quickstart.sh   train / look for the demo model in dir (default demo-run)
#   MT_QUICKSTART_SERVE=0 deploy/quickstart.sh   stop after the offline translations
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

[ "${MT_QUICKSTART_SERVE:-1}" = 1 ] || exit 0
echo "== serving $model: mt-server on 127.0.0.1:7700 =="
pidfile="$dir/mt-server.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  kill -TERM "$(cat "$pidfile")" # a server left by an earlier run drains and exits
  for _ in $(seq 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
fi
rm -f "$dir/mt-server.addr"
setsid nohup build/bin/mt-server --model "$model" --listen 127.0.0.1:7700 --http 127.0.0.1:7701 \
  --port-file "$dir/mt-server.addr" >"$dir/mt-server.log" 2>&1 </dev/null &
echo $! >"$pidfile"
for _ in $(seq 100); do [ -s "$dir/mt-server.addr" ] && break; sleep 0.1; done
[ -s "$dir/mt-server.addr" ] || { echo "mt-server did not start:"; tail -20 "$dir/mt-server.log"; exit 1; }
echo "\$ build/bin/mt-client translate \"hello\""
build/bin/mt-client translate "hello"
echo "mt-server is running (pid $(cat "$pidfile"), log $dir/mt-server.log); try:"
echo "  build/bin/mt-client translate \"good morning\" ; build/bin/mt-client health ; curl -s 127.0.0.1:7701/metrics"
echo "stop it with: kill $(cat "$pidfile")"
