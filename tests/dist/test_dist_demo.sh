#!/usr/bin/env bash
# test_dist_demo.sh — the acceptance run of data-parallel training (label slow): the demo trained by
# `mt-train --ranks 2` translates "hello" to an Italian greeting. max_time 0: the full 800 steps
# whatever the machine's load (the demo config's own 120 s budget is for people waiting on it).
set -euo pipefail
bin="$MT_BUILD_DIR/bin"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mt-distd-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$MT_SOURCE_DIR"
"$bin/mt-train" --config deploy/demo/config.json --ranks 2 --max_time 0 --out_dir "$tmp/demo" -q
grep -q '"world_size":2' "$tmp/demo/metrics.jsonl"
out=$(printf 'hello\n' | "$bin/mt-translate" --model "$tmp/demo/model.mt" --beam 4)
echo "hello -> $out"
case "$out" in
  ciao*|Ciao*|salve*|buongiorno*|buonasera*) ;;
  *) echo "FAIL: 'hello' gave '$out', not an Italian greeting" >&2; exit 1 ;;
esac
