#!/usr/bin/env bash
# test_cluster_netns.sh — the 3-node run of test_cluster.sh with each node in its own network
# namespace (10.214.7.1-3 on a bridge of a fourth), so the ranks and the file transfers cross real
# interfaces: the run finishes, the workers receive the corpus, the three nodes' weights agree and
# equal mt-train --ranks 3. Needs root (ip netns); skipped with a message otherwise. The namespaces
# are removed on every exit path.
set -euo pipefail
source "$(dirname "$0")/cluster_common.sh"
p="mtcl$$"
if ! command -v ip >/dev/null || ! ip netns add "${p}b" 2>/dev/null; then
  echo "SKIP: cannot create network namespaces here (needs root and iproute2)"
  exit 77
fi
netns+=("${p}b")
ip -n "${p}b" link add br0 type bridge
ip -n "${p}b" link set br0 up
i=0
for n in c w1 w2; do
  i=$((i + 1))
  ip netns add "$p$n"; netns+=("$p$n")
  ip link add "$p$n" type veth peer name "${p}x$i"
  ip link set "$p$n" netns "$p$n"
  ip link set "${p}x$i" netns "${p}b"
  ip -n "${p}b" link set "${p}x$i" master br0
  ip -n "${p}b" link set "${p}x$i" up
  ip -n "$p$n" addr add "10.214.7.$i/24" dev "$p$n"
  ip -n "$p$n" link set "$p$n" up
  ip -n "$p$n" link set lo up
done
cluster_config "$tmp/coord/cfg.json" 12
COORD_EXEC="ip netns exec ${p}c" COORD_LISTEN=0.0.0.0:0 start_coord
export COORD_EXEC="ip netns exec ${p}c"
JOIN="10.214.7.1:$cport"
NS_EXEC="ip netns exec ${p}w1" start_worker w1 -
NS_EXEC="ip netns exec ${p}w2" start_worker w2 -
wait_nodes 3
client train status | grep '^node'
client train start --config "$tmp/coord/cfg.json" --min-nodes 3 > /dev/null
wait_state DONE 300
wait_weights 3
grep -q '^node w1 10.214.7.2:' "$tmp/status.txt" && grep -q '^node w2 10.214.7.3:' "$tmp/status.txt" || {
  echo "FAIL: the workers did not come over the namespaces' interfaces" >&2; cat "$tmp/status.txt" >&2; exit 1; }
grep -q 'rendezvous 10.214.7.1:' "$tmp/coord.log" || { echo "FAIL: the rendezvous is not on the bridge address" >&2; exit 1; }
n=$(sed -n 's/^node .* weights \([0-9a-f]\{64\}\).*/\1/p' "$tmp/status.txt" | sort -u | wc -l)
[ "$n" -eq 1 ] && [ "$(grep -c '^node .* weights [0-9a-f]\{64\}' "$tmp/status.txt")" -eq 3 ] || {
  echo "FAIL: the nodes' weights differ" >&2; cat "$tmp/status.txt" >&2; exit 1; }
cmp "$tmp/coord/demo/corpus.tsv" "$tmp/w2/demo/corpus.tsv"
"$bin/mt-train" --config "$tmp/coord/cfg.json" --corpora "$tmp/coord/demo/corpus.tsv" --out_dir "$tmp/ref" --ranks 3 -q
d=$("$diffbin" "$tmp/ref/model.mt" "$tmp/coord/run/model.mt")
echo "3 nodes in 3 namespaces vs mt-train --ranks 3: $d"
awk -v d="$(echo "$d" | cut -d' ' -f2)" 'BEGIN { exit !(d <= 2e-4) }' || { echo "FAIL: weights differ" >&2; exit 1; }
echo "test_cluster_netns: ok"
