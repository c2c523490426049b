#!/usr/bin/env bash
# cluster_figures.sh — the figures of cluster mode, each a ratio or a time measured in this one run
# (mt-server processes on loopback, this machine's cores shared by all of them):
#   1. shipping a checkpoint to a worker (read, zstd, frames, decompress, write, SHA-256) against raw
#      TCP over the same loopback link (memory to memory, measured here), and the zstd ratio;
#   2. the time from a worker's kill -9 to the first step of the job restarted on the other nodes;
#   3. training throughput of 3 nodes (one thread each) against the coordinator alone, the same
#      global batches (the demo config), as the ratio of their training times.
# Usage: MT_SOURCE_DIR=$PWD MT_BUILD_DIR=$PWD/build bash tests/dist/cluster_figures.sh
# A table, then one JSON line with every figure.
set -euo pipefail
source "$(dirname "$0")/cluster_common.sh"
ts() { date -d "$(sed -n "s|^\([0-9T:.-]*\)Z .*$1.*|\1|p" "$2" | head -n 1)" +%s.%N; }

# 1. A checkpoint of a larger model (d_model 512, 3+3 layers), then a job resuming from it.
big="dict(d_model=512, d_ff=2048, d_c=128, d_cq=128, layers_enc=3, layers_dec=3)"
cluster_config "$tmp/coord/big0.json" 1 "$big"
"$bin/mt-train" --config "$tmp/coord/big0.json" --corpora "$tmp/coord/demo/corpus.tsv" --out_dir "$tmp/coord/big" \
  --save_every 1 -q
ck=big/checkpoints/step-00000001.mt
size=$(stat -c %s "$tmp/coord/$ck")
cluster_config "$tmp/coord/big.json" 2 "dict($big, resume='$ck', out_dir='big')"
start_coord
start_worker w1 -
wait_nodes 2
client train start --config "$tmp/coord/big.json" --min-nodes 2 > /dev/null
for _ in $(seq 600); do grep -q "received $ck" "$tmp/w1.log" && break; sleep 0.2; done
grep -q "received $ck" "$tmp/w1.log" || { echo "FAIL: the checkpoint did not arrive" >&2; tail "$tmp/w1.log" >&2; exit 1; }
client train stop > /dev/null || true
t0=$(ts "fetching $ck" "$tmp/w1.log"); t1=$(ts "received $ck" "$tmp/w1.log")
wire=$(sed -n "s|.*received $ck ([0-9]* bytes, \([0-9]*\) on the wire.*|\1|p" "$tmp/w1.log")
ship=$(awk -v s="$size" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", s / (b - a) / 1e6 }')
tcp=$(python3 - "$size" <<'PY'
import socket, sys, threading, time
n = int(sys.argv[1]); buf = b"\0" * (1 << 20)
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
def sink():
    c, _ = srv.accept(); left = n
    while left > 0:
        d = c.recv(1 << 20)
        if not d: break
        left -= len(d)
    c.close()
th = threading.Thread(target=sink); th.start()
s = socket.create_connection(srv.getsockname()); t = time.time(); left = n
while left > 0:
    k = min(left, len(buf)); s.sendall(buf[:k]); left -= k
s.close(); th.join(); print("%.1f" % (n / (time.time() - t) / 1e6))
PY
)
ratio=$(awk -v a="$ship" -v b="$tcp" 'BEGIN { printf "%.2f", a / b }')
zratio=$(awk -v s="$size" -v w="$wire" 'BEGIN { printf "%.3f", w / s }')
wait_state CANCELLED 120
kill -KILL "${pids[@]}" 2>/dev/null || true; pids=()

# 2. Recovery: three nodes, kill -9 of a worker mid-run.
rm -f "$tmp/coord.port"
start_coord
start_worker w1 -
start_worker w2 -; p2=$wpid
wait_nodes 3
cluster_config "$tmp/coord/cfg.json" 40 "dict(out_dir='rec')"
( timeout 300 "$bin/mt-client" --server "127.0.0.1:$cport" --token-file "$tmp/admin.tok" train watch 2>/dev/null |
    while IFS= read -r l; do echo "$(date +%s.%N) $l"; done > "$tmp/rec.watch" ) &
wapid=$!
client train start --config "$tmp/coord/cfg.json" --min-nodes 2 > /dev/null
for _ in $(seq 600); do s=$(client train status | sed -n 's/^step: //p'); [ "${s:-0}" -ge 12 ] && break; sleep 0.2; done
t_kill=$(date +%s.%N); kill -KILL "$p2"
wait "$wapid" || true
recover=$(awk -v t0="$t_kill" '/"event":"restart"/ { r = 1 } r && /"event":"step"/ { printf "%.2f", $1 - t0; exit }' "$tmp/rec.watch")
[ -n "$recover" ] || { echo "FAIL: no step after the restart" >&2; tail "$tmp/rec.watch" >&2; exit 1; }

# 3. Throughput: the same 40 steps on three nodes (w1 and a new w2), then on the coordinator alone.
start_worker w2 -
wait_nodes 3
cluster_config "$tmp/coord/t3.json" 40 "dict(out_dir='t3', save_every=0)"
client train start --config "$tmp/coord/t3.json" --min-nodes 3 > /dev/null
wait_state DONE 600
e3=$(client train status | sed -n 's/^status: .*"elapsed_s":\([0-9.e+-]*\).*/\1/p')
kill -KILL "${pids[@]}" 2>/dev/null || true; pids=()
rm -f "$tmp/coord.port"
start_coord
cluster_config "$tmp/coord/t1.json" 40 "dict(out_dir='t1', save_every=0)"
client train start --config "$tmp/coord/t1.json" --min-nodes 1 > /dev/null
wait_state DONE 600
e1=$(client train status | sed -n 's/^status: .*"elapsed_s":\([0-9.e+-]*\).*/\1/p')
scale=$(awk -v a="$e1" -v b="$e3" 'BEGIN { printf "%.2f", a / b }')

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
echo
echo "cluster figures on $cpu, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
printf '%-58s %12s\n' "checkpoint shipped ($((size / 1000000)) MB), MB/s" "$ship"
printf '%-58s %12s\n' "raw TCP over the same loopback link, MB/s" "$tcp"
printf '%-58s %12s\n' "shipping / raw TCP" "$ratio"
printf '%-58s %12s\n' "zstd: bytes on the wire / checkpoint size" "$zratio"
printf '%-58s %12s\n' "kill -9 of a worker -> first step of the restarted job, s" "$recover"
printf '%-58s %12s\n' "40 steps: 1 node (s)" "$e1"
printf '%-58s %12s\n' "40 steps: 3 nodes (s)" "$e3"
printf '%-58s %12s\n' "3 nodes / 1 node throughput, same global batch" "$scale"
echo "{\"ship_mb_s\":$ship,\"tcp_mb_s\":$tcp,\"ship_over_tcp\":$ratio,\"zstd_ratio\":$zratio,\"recover_s\":$recover,\"three_over_one\":$scale}"
