#!/usr/bin/env bash
# test_cluster_failure.sh — a node lost mid-run. Three nodes train (--min-nodes 2); kill -9 of a
# worker: the job restarts on the two that remain from the newest checkpoint and finishes. Then a
# SIGSTOPped worker: found lost after three missed heartbeats, the same restart once the ranks' collectives
# time out (comm_timeout_s). A worker shut down (SIGTERM): its ranks stop every rank at a step with a
# checkpoint, and the job goes on without it. Translation requests sent to the coordinator all the while are all
# answered. Prints the time from each loss to the first step of the restarted job.
set -euo pipefail
source "$(dirname "$0")/cluster_common.sh"
"$bin/mt-train" --config deploy/demo/config.json --corpora "$tmp/coord/demo/corpus.tsv" --out_dir "$tmp/coord/serve" \
  --max_steps 10 --max_time 0 --threads 1 -q
start_coord --model "$tmp/coord/serve/model.mt"
start_worker w1 -
start_worker w2 -; p2=$wpid
wait_nodes 3
# Translations throughout: every answer must come back.
( ok=0; bad=0
  while [ ! -e "$tmp/stop-translate" ]; do
    if "$bin/mt-client" --server "127.0.0.1:$cport" --token-file "$tmp/admin.tok" --timeout 30 translate "hello" > /dev/null 2>>"$tmp/translate.err"; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
    sleep 0.2
  done
  echo "$ok $bad" > "$tmp/translate.count" ) &
tpid=$!

watch_run() { # NAME: train watch with a timestamp per line, in the background
  ( timeout 400 "$bin/mt-client" --server "127.0.0.1:$cport" --token-file "$tmp/admin.tok" train watch 2>/dev/null |
      while IFS= read -r l; do echo "$(date +%s.%N) $l"; done > "$tmp/$1.watch" ) &
  wapid=$!
}
wait_step() { # STEP SECONDS: until rank 0 passed STEP
  for _ in $(seq $(($2 * 5))); do
    s=$(client train status | sed -n 's/^step: //p'); [ "${s:-0}" -ge "$1" ] && return 0; sleep 0.2
  done
  echo "FAIL: step $1 not reached" >&2; client train status >&2; exit 1
}
# since LOSS_TIME WATCHFILE: seconds from the loss to the first step event after the restart event.
since() {
  awk -v t0="$1" '/"event":"restart"/ { r = 1 } r && /"event":"step"/ { printf "%.1f", $1 - t0; exit }' "$2"
}

# lose NAME SIGNAL PID OUT_DIR: a job on the nodes joined (--min-nodes 2), the worker PID sent SIGNAL
# once rank 0 passed step 15, then train watch until the job's end ($tmp/NAME.watch); $t_loss is when.
lose() {
  cluster_config "$tmp/coord/$1.json" 60 "dict(out_dir='$4')"
  watch_run "$1"
  client train start --config "$tmp/coord/$1.json" --min-nodes 2 > /dev/null
  wait_step 15 120
  t_loss=$(date +%s.%N); kill -"$2" "$3"
  wait "$wapid" || true
  grep -q '"event":"end","state":"done"' "$tmp/$1.watch" || {
    echo "FAIL: the job did not finish after SIG$2 of a worker" >&2; tail -n 20 "$tmp/$1.watch" "$tmp/coord.log" >&2; exit 1; }
}

lose kill KILL "$p2" run
grep -q '"event":"restart","lost":"w2"' "$tmp/kill.watch" || { echo "FAIL: no restart without w2" >&2; tail -n 30 "$tmp/kill.watch" "$tmp/coord.log" >&2; exit 1; }
grep -q '^cluster: .*(world 2, 1 restart)' <<< "$(client train status)" || { echo "FAIL: not restarted on 2 ranks" >&2; client train status >&2; exit 1; }
grep -q '"from_checkpoint":"run/checkpoints/step-000000[0-9]0.mt"' "$tmp/kill.watch" || { echo "FAIL: not restarted from a checkpoint" >&2; exit 1; }
echo "kill -9 of a worker: restarted on 2 nodes and finished; loss -> first step of the restarted job $(since "$t_loss" "$tmp/kill.watch") s"

start_worker w3 -; p3=$wpid
wait_nodes 3
lose stop STOP "$p3" run2
kill -KILL "$p3"
grep -q '"event":"node_lost","node":"w3","why":"no heartbeat' "$tmp/stop.watch" || { echo "FAIL: the stopped node was not found lost" >&2; tail -n 30 "$tmp/stop.watch" >&2; exit 1; }
echo "SIGSTOP of a worker: found lost, restarted and finished; loss -> first step of the restarted job $(since "$t_loss" "$tmp/stop.watch") s"

start_worker w4 -; p4=$wpid
wait_nodes 3
lose term TERM "$p4" run3
grep -q '"event":"restart","lost":"w4"' "$tmp/term.watch" || { echo "FAIL: no restart after a worker's SIGTERM" >&2; tail -n 20 "$tmp/term.watch" "$tmp/coord.log" >&2; exit 1; }
echo "SIGTERM of a worker: its ranks stopped the job at a checkpoint, which restarted without it and finished"

touch "$tmp/stop-translate"; wait "$tpid"
read -r ok bad < "$tmp/translate.count"
echo "translations during the runs: $ok answered, $bad failed"
[ "$bad" -eq 0 ] && [ "$ok" -gt 10 ] || { echo "FAIL: translations failed" >&2; cat "$tmp/translate.err" >&2; exit 1; }
echo "test_cluster_failure: ok"
