#!/usr/bin/env bash
# test_dist_train.sh — 2 and 3 CPU ranks as separate processes on loopback train 20 steps on the
# same global batches as one rank: the weights and the losses printed by rank 0 must equal one
# rank's within the tolerance below. Why a tolerance at all: each rank sums the gradient of its
# rows, and the all-reduce adds the ranks' sums, in another order than one process adds the same
# terms (f32 rounding, ~1e-7 relative per addition); AdamW divides by sqrt(v), so a gradient near
# zero can move its weight by up to lr differently per step. Measured here: 6.5e-6 after 20 steps;
# the bound is 2e-4 (still far below the lr-sized steps a wrong shard or weighting would cause).
# Also: exact resume on the same world size (bit for bit), and resume with another world size.
set -euo pipefail
source "$(dirname "$0")/dist_common.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mt-dist-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
steps=20
"$bin/mt-train" "${CFG[@]}" --max_steps $steps --out_dir "$tmp/one"
for w in 2 3; do
  "$bin/mt-train" "${CFG[@]}" --max_steps $steps --out_dir "$tmp/w$w" --ranks $w
  d=$("$diffbin" "$tmp/one/model.mt" "$tmp/w$w/model.mt")
  echo "world $w vs 1: $d"
  awk -v d="$(echo "$d" | cut -d' ' -f2)" 'BEGIN { exit !(d <= 2e-4) }' || { echo "FAIL: world $w weights differ" >&2; exit 1; }
  paste <(losses "$tmp/one/metrics.jsonl") <(losses "$tmp/w$w/metrics.jsonl") > "$tmp/l$w"
  [ "$(wc -l < "$tmp/l$w")" -eq $steps ] || { echo "FAIL: world $w: $(wc -l < "$tmp/l$w") loss lines" >&2; exit 1; }
  awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4 * (1 + $1)) { print "FAIL: loss " NR ": " $1 " vs " $2; bad = 1 } } END { exit bad }' "$tmp/l$w"
done
# Micro-batches of 2 pairs accumulated 3 at a time, on 3 ranks: rank 0 has no row of any micro-batch
# (rows [0,0), [0,1), [1,2)) and sends zeros; still one rank's weights.
"$bin/mt-train" "${CFG[@]}" --max_steps 10 --out_dir "$tmp/acc1" --max_sentences 2 --accum_steps 3
"$bin/mt-train" "${CFG[@]}" --max_steps 10 --out_dir "$tmp/acc3" --max_sentences 2 --accum_steps 3 --ranks 3
d=$("$diffbin" "$tmp/acc1/model.mt" "$tmp/acc3/model.mt")
echo "accum 3 x 2 pairs, world 3 vs 1: $d"
awk -v d="$(echo "$d" | cut -d' ' -f2)" 'BEGIN { exit !(d <= 2e-4) }' || { echo "FAIL: empty shards diverge" >&2; exit 1; }

# Rank 0 alone wrote: one metrics file, checkpoints only from rank 0 (names are per step, not rank).
[ "$(grep -c '"event":"start"' "$tmp/w2/metrics.jsonl")" -eq 1 ] || { echo "FAIL: more than one writer" >&2; exit 1; }

# Exact resume, same world size: 10 steps, then resume to 20, equals 20 uninterrupted (bit for bit).
"$bin/mt-train" "${CFG[@]}" --max_steps 10 --out_dir "$tmp/r2" --ranks 2
"$bin/mt-train" "${CFG[@]}" --max_steps $steps --out_dir "$tmp/r2" --ranks 2 --resume auto
d=$("$diffbin" "$tmp/w2/model.mt" "$tmp/r2/model.mt")
echo "resumed world 2 vs uninterrupted world 2: $d"
[ "$(echo "$d" | cut -d' ' -f2)" = 0 ] || { echo "FAIL: resume is not exact" >&2; exit 1; }

# Resume with another world size: allowed, said so, and it trains on.
"$bin/mt-train" "${CFG[@]}" --max_steps 10 --out_dir "$tmp/r3" --ranks 2
"$bin/mt-train" "${CFG[@]}" --max_steps $steps --out_dir "$tmp/r3" --ranks 3 --resume auto
grep -q '"resumed_world_size":2' "$tmp/r3/metrics.jsonl" || { echo "FAIL: world change not reported" >&2; exit 1; }
d=$("$diffbin" "$tmp/w2/model.mt" "$tmp/r3/model.mt")
echo "resumed 2 -> 3 vs uninterrupted world 2: $d"
awk -v d="$(echo "$d" | cut -d' ' -f2)" 'BEGIN { exit !(d <= 2e-4) }' || { echo "FAIL: world change diverged" >&2; exit 1; }
echo "test_dist_train: ok"
