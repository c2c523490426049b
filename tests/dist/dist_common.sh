# dist_common.sh — shared by the test_dist_*.sh scripts: a small config on the demo corpus, a free
# loopback port, and a bounded wait for a process.
bin="$MT_BUILD_DIR/bin"
diffbin="$MT_BUILD_DIR/tests/mt_weights_diff"
cd "$MT_SOURCE_DIR"
# dropout 0: the ranks' dropout streams differ from one rank's, the rest must not.
CFG=(--config deploy/demo/config.json --dropout 0 --max_time 0 --log_every 1 --threads 1 -q)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_pid PID SECONDS: waits for PID to exit (it must be our child); its status in $rc, 124 if it
# did not end in time.
wait_pid() {
  local pid=$1 limit=$2 t=0
  while kill -0 "$pid" 2>/dev/null; do
    if ! ps -o stat= -p "$pid" | grep -v Z >/dev/null; then break; fi
    sleep 0.2; t=$((t + 1))
    if [ "$t" -ge $((limit * 5)) ]; then rc=124; return; fi
  done
  set +e; wait "$pid"; rc=$?; set -e
}

# sub A B: B - A (seconds from date +%s.%N).
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# The losses of a run's metrics.jsonl, one per line.
losses() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e=json.loads(l)
    if e.get("event")=="step": print(repr(e["loss"]))' "$1"; }
