#!/usr/bin/env bash
# test_kill9.sh — kill -9 at random moments of a training run, 20 times: every restart with
# --resume auto succeeds (no torn checkpoint, no stale temporary file, no step listed twice in
# metrics.jsonl), and the final model is byte-identical to the one of an uninterrupted run. Bounded:
# the run is about a second on the demo corpus, each kill comes in the restart's startup or first
# few steps, and every wait has a limit.
set -euo pipefail
bin="$MT_BUILD_DIR/bin"
src="$MT_SOURCE_DIR"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mt-kill9-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -x "$bin/mt-train" ] || { echo "mt-train is not built" >&2; exit 1; }

# One thread: the CPU kernels are deterministic for a thread count, so runs are comparable bit for bit.
cfg() {
  cat <<JSON
{"corpora": ["$src/deploy/demo/corpus.tsv"], "valid_size": 0, "test_size": 0, "tokenizer_vocab": 300,
 "tokenizer_min_frequency": 1, "d_model": 32, "heads": 2, "layers_enc": 1, "layers_dec": 1, "d_ff": 64,
 "d_c": 16, "d_cq": 16, "d_rope": 4, "max_len": 48, "max_tokens": 800, "lr": 0.004, "warmup_steps": 10,
 "max_steps": 300, "log_every": 1, "valid_every": 0, "save_every": 3, "keep_checkpoints": 2, "threads": 1,
 "seed": 5, "resume": "auto", "out_dir": "$1"}
JSON
}
cfg "$tmp/whole" > "$tmp/whole.json"
cfg "$tmp/killed" > "$tmp/killed.json"

# The uninterrupted run, timed: its startup (data, tokenizer, model) and its steps.
start=$(date +%s%N)
"$bin/mt-train" --config "$tmp/whole.json" 2> "$tmp/whole.log" &
pid=$!
startup_ms=0
while kill -0 "$pid" 2>/dev/null; do
  if [ "$startup_ms" = 0 ] && grep -q '"event":"step","step":1,' "$tmp/whole/metrics.jsonl" 2>/dev/null; then
    startup_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  fi
  sleep 0.01
done
wait "$pid" || { cat "$tmp/whole.log"; fail "uninterrupted run"; }
run_ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$startup_ms" -gt 0 ] || startup_ms=$run_ms
step_ms=$(( (run_ms - startup_ms) / 300 + 1 ))

sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }
# Each kill's moment is drawn by progress, not only by the clock, so that a slow or busy machine
# cannot let a restart finish: a random moment of the startup, or a random moment within the step
# after 1 to 5 new steps (a checkpoint is written every 3). The 20 restarts advance 100 of the 300
# steps at most.
kills=0
for i in $(seq 20); do
  "$bin/mt-train" --config "$tmp/killed.json" 2> "$tmp/killed.$i.log" &
  pid=$!
  k=$(( RANDOM % 6 ))
  if [ "$k" = 0 ]; then
    sleep_ms $(( RANDOM % startup_ms + 1 ))
  else
    # k steps of this restart: its own progress lines on stderr (one per step, unbuffered). Counting start
    # events of metrics.jsonl could miss a restart: a resume cuts the file back to its checkpoint,
    # which may drop the start event of a run killed before its first checkpoint.
    for _ in $(seq 30000); do
      kill -0 "$pid" 2>/dev/null || break
      [ "$(grep -c '^step ' "$tmp/killed.$i.log" 2>/dev/null || true)" -ge "$k" ] && break
      sleep 0.005
    done
    sleep_ms $(( RANDOM % step_ms ))
  fi
  kill -9 "$pid" 2>/dev/null || true
  set +e
  wait "$pid" 2>/dev/null
  rc=$?
  set -e
  case "$rc" in
    137) kills=$((kills + 1)) ;;
    0) fail "restart $i finished before its kill" ;;
    *) cat "$tmp/killed.$i.log"; fail "restart $i exited $rc (a resume failed)" ;;
  esac
done
reached=$(ls "$tmp/killed/checkpoints" 2>/dev/null | tail -1)
"$bin/mt-train" --config "$tmp/killed.json" 2> "$tmp/final.log" || { cat "$tmp/final.log"; fail "the final resume"; }
echo "killed $kills times, the last at ${reached:-no checkpoint} (uninterrupted run: $run_ms ms, startup $startup_ms ms)"

cmp "$tmp/whole/model.mt" "$tmp/killed/model.mt" || fail "the final weights differ from the uninterrupted run's"
leftover=$(find "$tmp/killed" -name '*.tmp.*')
[ -z "$leftover" ] || fail "temporary files left: $leftover"
dups=$(grep -o '"event":"step","step":[0-9]*' "$tmp/killed/metrics.jsonl" | sort | uniq -d)
[ -z "$dups" ] || fail "steps listed twice in metrics.jsonl: $dups"
[ "$(grep -c '"event":"step"' "$tmp/killed/metrics.jsonl")" = 300 ] || fail "metrics.jsonl does not list the 300 steps"
echo "ok"
