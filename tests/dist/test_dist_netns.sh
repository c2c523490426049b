#!/usr/bin/env bash
# test_dist_netns.sh — 2 ranks in two network namespaces joined by a veth pair, so the ranks talk
# over a real interface (10.213.7.1 <-> 10.213.7.2), not loopback: the run equals one rank's within
# the tolerance of test_dist_train.sh; then the link is cut mid-run (a dropped network) and both
# ranks leave within comm_timeout_s + 5 s naming the other. Needs root (ip netns); skipped with a
# message otherwise. The namespaces are removed on every exit path.
set -euo pipefail
source "$(dirname "$0")/dist_common.sh"
A="mtdist$$a"; B="mtdist$$b"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mt-distn-XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
if ! command -v ip >/dev/null || ! ip netns add "$A" 2>/dev/null; then
  echo "SKIP: cannot create network namespaces here (needs root and iproute2)"
  exit 77
fi
ip netns add "$B"
ip link add "v$$a" type veth peer name "v$$b"
ip link set "v$$a" netns "$A"
ip link set "v$$b" netns "$B"
ip -n "$A" addr add 10.213.7.1/24 dev "v$$a"
ip -n "$B" addr add 10.213.7.2/24 dev "v$$b"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set "v$$a" up
ip -n "$B" link set "v$$b" up
T=4
run() { # NS RANK NAME STEPS [args]
  local ns=$1 r=$2 name=$3 steps=$4; shift 4
  ip netns exec "$ns" "$bin/mt-train" "${CFG[@]}" --max_steps "$steps" --comm_timeout_s $T --out_dir "$tmp/$name" \
    --world-size 2 --rank "$r" --rendezvous 10.213.7.1:29400 "$@" > "$tmp/$name.$r.log" 2>&1 &
  pid=$!; pids+=("$pid")
}
"$bin/mt-train" "${CFG[@]}" --max_steps 10 --out_dir "$tmp/one"
run "$A" 0 veth 10; p0=$pid
run "$B" 1 veth 10; p1=$pid
wait_pid "$p0" 300; rc0=$rc; wait_pid "$p1" 300; rc1=$rc
[ "$rc0" -eq 0 ] && [ "$rc1" -eq 0 ] || { echo "FAIL: exits $rc0/$rc1" >&2; cat "$tmp"/veth.*.log >&2; exit 1; }
d=$("$diffbin" "$tmp/one/model.mt" "$tmp/veth/model.mt")
echo "2 ranks over veth vs 1 rank: $d"
awk -v d="$(echo "$d" | cut -d' ' -f2)" 'BEGIN { exit !(d <= 2e-4) }' || { echo "FAIL: weights differ" >&2; exit 1; }

# The link drops mid-run.
run "$A" 0 drop 100000 --save_every 5; p0=$pid
run "$B" 1 drop 100000 --save_every 5; p1=$pid
for _ in $(seq 1 600); do ls "$tmp/drop/checkpoints"/step-*.mt >/dev/null 2>&1 && break; sleep 0.1; done
ip -n "$A" link set "v$$a" down
t0=$(date +%s.%N)
wait_pid "$p0" 60; rc0=$rc; t1=$(date +%s.%N)
wait_pid "$p1" 60; rc1=$rc; t2=$(date +%s.%N)
for r in 0 1; do echo "link down: rank $r: $(grep -o 'failed: [^(]*' "$tmp/drop.$r.log" | head -1)"; done
echo "rank 0 left after $(sub "$t0" "$t1") s, rank 1 after $(sub "$t0" "$t2") s"
[ "$rc0" -eq 1 ] && [ "$rc1" -eq 1 ] || { echo "FAIL: exits $rc0/$rc1 (want 1/1)" >&2; cat "$tmp"/drop.*.log >&2; exit 1; }
awk -v t="$(sub "$t0" "$t2")" -v T=$T 'BEGIN { exit !(t <= T + 5) }' || { echo "FAIL: too slow" >&2; exit 1; }
grep -q "rank 1 stopped answering" "$tmp/drop.0.log" || { echo "FAIL: rank 0 does not name rank 1" >&2; exit 1; }
grep -q "rank 0 (the rendezvous host) does not answer" "$tmp/drop.1.log" || { echo "FAIL: rank 1 does not name rank 0" >&2; exit 1; }
for f in "$tmp/drop/checkpoints"/*; do "$diffbin" "$f" || { echo "FAIL: $f" >&2; exit 1; }; done
echo "test_dist_netns: ok"
