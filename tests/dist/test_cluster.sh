#!/usr/bin/env bash
# test_cluster.sh — cluster mode end to end: a coordinator and two worker nodes, three mt-server
# processes with their own data roots (only the coordinator's holds the corpus). `train start
# --min-nodes 3` trains the demo config on 3 ranks to the end: the workers receive the corpus, the
# three nodes end with weights of the same SHA-256, and the coordinator's model equals a 3-rank
# mt-train run on the same data within the tolerance of test_dist_train.sh. Then the refusals: a
# node joining with a wrong token, with the translate token, or under a name already joined.
set -euo pipefail
source "$(dirname "$0")/cluster_common.sh"
cluster_config "$tmp/coord/cfg.json" 20
echo mt-user-test-token > "$tmp/user.tok"; chmod 600 "$tmp/user.tok"
start_coord --token-file "$tmp/user.tok"
start_worker w1 -
start_worker w2 -
wait_nodes 3
grep -q '^state: TRAIN_STARTING' <<< "$(client train start --config "$tmp/coord/cfg.json" --min-nodes 3)"
timeout 300 "$bin/mt-client" --server "127.0.0.1:$cport" --token-file "$tmp/admin.tok" train watch > "$tmp/watch.log" || {
  echo "FAIL: the cluster run did not end done" >&2; tail -n 20 "$tmp/watch.log" "$tmp"/*.log >&2; exit 1; }
grep -q '^cluster: .*(world 3, 0 restarts)' <<< "$(client train status)" || { echo "FAIL: not a 3-rank job" >&2; exit 1; }
grep '"event":"step"' "$tmp/watch.log" | grep '"node_tokens_per_s":{' | grep '"coord":' | grep '"w1":' | grep '"w2":' > /dev/null || {
  echo "FAIL: step events lack every node's tokens/s" >&2; grep step "$tmp/watch.log" | head -3 >&2; exit 1; }
wait_weights 3
cat "$tmp/status.txt" | grep '^node'
shas=$(sed -n 's/^node .* weights \([0-9a-f]\{64\}\).*/\1/p' "$tmp/status.txt" | sort -u)
[ "$(sed -n 's/^node .* weights \([0-9a-f]\{64\}\).*/\1/p' "$tmp/status.txt" | wc -l)" -eq 3 ] && [ "$(echo "$shas" | wc -l)" -eq 1 ] || {
  echo "FAIL: the three nodes' final weights differ or are missing" >&2; cat "$tmp/status.txt" >&2; exit 1; }
echo "three nodes, one weights sha256: $shas"
for w in w1 w2; do
  cmp -s "$tmp/coord/demo/corpus.tsv" "$tmp/$w/demo/corpus.tsv" || { echo "FAIL: $w did not receive the corpus" >&2; exit 1; }
done
# The same run as 3 local ranks of mt-train.
"$bin/mt-train" --config "$tmp/coord/cfg.json" --corpora "$tmp/coord/demo/corpus.tsv" --out_dir "$tmp/ref" --ranks 3 -q
d=$("$diffbin" "$tmp/ref/model.mt" "$tmp/coord/run/model.mt")
echo "cluster (3 nodes) vs mt-train --ranks 3: $d"
awk -v d="$(echo "$d" | cut -d' ' -f2)" 'BEGIN { exit !(d <= 2e-4) }' || { echo "FAIL: weights differ" >&2; exit 1; }
# The finished model is served after a promote.
grep -q model_generation <<< "$(client train promote run/model.mt)"
"$bin/mt-client" --server "127.0.0.1:$cport" --token-file "$tmp/user.tok" translate "hello" > /dev/null

# Refusals: a wrong token, the translate token, a name already joined.
echo not-the-token > "$tmp/bad.tok"; chmod 600 "$tmp/bad.tok"
start_worker bad "$tmp/bad.tok"; p_bad=$wpid
start_worker usr "$tmp/user.tok"; p_usr=$wpid
start_worker w1 -; p_dup=$wpid
for _ in $(seq 50); do
  grep -q 'AUTH_FAILED' "$tmp/bad.log" && grep -q 'did not grant the cluster role' "$tmp/usr.log" &&
    grep -q "a node named 'w1' is already joined" "$tmp/w1.log" && break
  sleep 0.2
done
grep -q 'ERR_AUTH_FAILED: the token is not valid' "$tmp/bad.log" || { echo "FAIL: wrong token not refused" >&2; cat "$tmp/bad.log" >&2; exit 1; }
grep -q 'did not grant the cluster role' "$tmp/usr.log" || { echo "FAIL: translate token not refused" >&2; cat "$tmp/usr.log" >&2; exit 1; }
grep -q "a node named 'w1' is already joined" "$tmp/w1.log" || { echo "FAIL: duplicate name not refused" >&2; exit 1; }
grep -q '^node bad\|^node usr' <<< "$(client train status)" && { echo "FAIL: a refused node is listed" >&2; exit 1; }
echo "refused: wrong token, translate token, duplicate name"
echo "test_cluster: ok"
