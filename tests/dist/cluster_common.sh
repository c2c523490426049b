# cluster_common.sh — shared by the test_cluster_*.sh scripts: a coordinator and worker nodes as
# separate mt-server processes on loopback (or in network namespaces), each with its own data root
# under $tmp; the demo corpus only in the coordinator's. Every process started is killed on exit.
source "$(dirname "${BASH_SOURCE[0]}")/dist_common.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mt-cluster-XXXXXX")
pids=()
netns=()
cluster_cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true; done
  for n in "${netns[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cluster_cleanup EXIT
echo mt-cluster-test-token > "$tmp/cluster.tok"; chmod 600 "$tmp/cluster.tok"
echo mt-admin-test-token > "$tmp/admin.tok"; chmod 600 "$tmp/admin.tok"
mkdir -p "$tmp/coord/demo"
cp deploy/demo/corpus.tsv "$tmp/coord/demo/"
# The demo config, small: 3 ranks must equal mt-train --ranks 3 (dropout 0, see dist_common.sh).
cluster_config() { # OUT STEPS [python dict updates]
  python3 - "$1" "$2" "${3:-}" <<'PY'
import json, sys
c = json.load(open("deploy/demo/config.json"))
c.update(corpora=["demo/corpus.tsv"], max_steps=int(sys.argv[2]), max_time=0, log_every=1, save_every=10,
         dropout=0, threads=1, out_dir="run", comm_timeout_s=6)
if sys.argv[3]: c.update(eval(sys.argv[3]))
json.dump(c, open(sys.argv[1], "w"))
PY
}
HB=1
# start_coord [extra mt-server args]: the coordinator on a free port ($cport), log $tmp/coord.log.
start_coord() {
  ${COORD_EXEC:-} "$bin/mt-server" --listen "${COORD_LISTEN:-127.0.0.1:0}" --http off --port-file "$tmp/coord.port" --data-root "$tmp/coord" \
    --cluster-token-file "$tmp/cluster.tok" --admin-token-file "$tmp/admin.tok" --node-name coord \
    --heartbeat-s $HB --join-timeout-s 60 "$@" > "$tmp/coord.log" 2>&1 &
  cpid=$!; pids+=("$cpid"); disown "$cpid"
  for _ in $(seq 100); do [ -s "$tmp/coord.port" ] && break; sleep 0.1; done
  cport=$(sed -n 's/^listen=.*:\([0-9]*\)$/\1/p' "$tmp/coord.port")
  [ -n "$cport" ] || { echo "FAIL: the coordinator did not start" >&2; cat "$tmp/coord.log" >&2; exit 1; }
}
# start_worker NAME TOKEN_FILE|- [extra args]: a worker node with its own empty data root (- : the
# cluster token); pid in $wpid.
start_worker() {
  local name=$1 tok=$2; shift 2
  [ "$tok" = - ] && tok=$tmp/cluster.tok
  mkdir -p "$tmp/$name"
  ${NS_EXEC:-} "$bin/mt-server" --listen 127.0.0.1:0 --http off --data-root "$tmp/$name" --join "${JOIN:-127.0.0.1:$cport}" \
    --cluster-token-file "$tok" --node-name "$name" "$@" > "$tmp/$name.log" 2>&1 &
  wpid=$!; pids+=("$wpid"); disown "$wpid"
}
client() { ${COORD_EXEC:-} "$bin/mt-client" --server "127.0.0.1:$cport" --token-file "$tmp/admin.tok" --timeout 60 "$@"; }
# wait_nodes N: until N nodes (the coordinator counted) are joined and alive, at most 30 s.
wait_nodes() {
  for _ in $(seq 150); do
    [ "$(grep -c '^node .* state \(idle\|done\|ready\|training\|fetching\|failed\)' <<< "$(client train status)")" -ge "$1" ] && return 0
    sleep 0.2
  done
  echo "FAIL: $1 nodes did not join" >&2; client train status >&2; cat "$tmp"/*.log >&2; exit 1
}
# wait_state STATE SECONDS: until train status says TRAIN_STATE.
wait_state() {
  for _ in $(seq $(($2 * 5))); do grep -q "^state: TRAIN_$1" <<< "$(client train status)" && return 0; sleep 0.2; done
  echo "FAIL: no TRAIN_$1 within $2 s" >&2; client train status >&2; tail -n 30 "$tmp"/*.log >&2; exit 1
}
# wait_weights N: until N nodes report the SHA-256 of the weights their ranks ended with (rank 0 can
# finish before the others' last heartbeat), at most 30 s; the status in $tmp/status.txt.
wait_weights() {
  for _ in $(seq 150); do
    client train status > "$tmp/status.txt"
    [ "$(grep -c '^node .* weights [0-9a-f]\{64\}' "$tmp/status.txt")" -ge "$1" ] && return 0
    sleep 0.2
  done
  echo "FAIL: $1 nodes did not report their final weights" >&2; cat "$tmp/status.txt" >&2; exit 1
}
