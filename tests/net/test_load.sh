#!/usr/bin/env bash
# test_load.sh — 64 connections x 100 requests (one sentence each) through mt-bench serve against
# mt-server-fake: every request answered, no error, the server exits 0 on SIGTERM (under the
# sanitizer build that includes LeakSanitizer: nothing leaked). A shorter load with batching off
# (--max-batch-tokens 1) must be clearly slower: the fake engine charges a fixed cost per batch,
# as a real model does, so this checks that the batcher really groups concurrent requests.
source "$(dirname "$0")/lib.sh"

bench=$B/bin/mt-bench
fake=$B/tests/mt-server-fake
printf 'FAKE-MT 1\nprefix=it:\n' >"$work/a.mt"
export MT_FAKE_BATCH_MS=4 MT_FAKE_SENTENCE_MS=0.1

run_load() { # run_load NAME REQUESTS SERVER-ARGS...: sets SPS from the bench's JSON line
  local name=$1 requests=$2 total=$((64 * $2))
  shift 2
  start_server "$name" "$fake" --model "$work/a.mt" --threads 2 "$@"
  local pid=$PID
  "$bench" serve --server "$ADDR" --connections 64 --requests "$requests" >"$work/bench-$name.out" 2>&1
  local rc=$?
  cat "$work/bench-$name.out"
  [ "$rc" = 0 ] || fail "mt-bench serve ($name) exit $rc"
  local json
  json=$(tail -n 1 "$work/bench-$name.out")
  [[ $json == *"\"answered\":$total,"* ]] || fail "$name: not every request answered: $json"
  [[ $json == *'"errors":0,'* && $json == *'"lost":0,'* ]] || fail "$name: errors or lost requests: $json"
  SPS=$(sed 's/.*"sentences_per_s":\([0-9.]*\).*/\1/' <<<"$json")
  MEAN_BATCH=$(http_get /metrics | awk '$1 == "mt_batch_sentences_sum" { s = $2 } $1 == "mt_batch_sentences_count" { c = $2 } END { if (c) printf "%.2f", s / c }')
  [ "$(metric mt_sentences_total)" = "$total" ] || fail "$name: the server counted $(metric mt_sentences_total) sentences"
  stop_server "$pid"
  [ "$STOP_RC" = 0 ] || fail "$name: server exit status $STOP_RC after SIGTERM (leak or crash?)"
  ok "$name: $total of $total answered, $SPS sentences/s, mean batch $MEAN_BATCH sentences, clean exit"
}

run_load batched 100 --max-wait-ms 5
batched=$SPS
batched_mean=$MEAN_BATCH
run_load unbatched 20 --max-batch-tokens 1
unbatched=$SPS
awk -v m="$batched_mean" 'BEGIN { exit !(m > 4) }' || fail "mean batch only $batched_mean sentences with 64 concurrent clients"
awk -v a="$batched" -v b="$unbatched" 'BEGIN { exit !(a >= 2 * b) }' ||
  fail "batching gives only $batched vs $unbatched sentences/s"
ok "batching: $batched vs $unbatched sentences/s without it"
