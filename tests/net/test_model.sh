#!/usr/bin/env bash
# test_model.sh — mt-server with a real (tiny) model from make_model.sh: translate through
# mt-client, mt.sh and a raw socket (bash's /dev/tcp, frames made by protoc and printf), a file
# through pipelined batches, training start/status/watch/save/stop and promote of the checkpoint,
# then 64 connections x 100 requests with nothing lost and a clean SIGTERM exit.
# Skips (77) while mt-train is not built.
source "$(dirname "$0")/lib.sh"
needs_model

fixture=$B/tests/net-fixture
mkdir -p "$fixture"
bash "$S/tests/net/make_model.sh" "$fixture/tiny.mt"
rc=$?
[ "$rc" = 77 ] && exit 77
[ "$rc" = 0 ] || fail "make_model.sh failed ($rc)"

client=$B/bin/mt-client
mtsh=$S/clients/mt.sh
cp "$fixture/tiny.mt" "$work/tiny.mt"
start_server main "$B/bin/mt-server" --model "$work/tiny.mt" --threads 2 --data-root "$work"
main_pid=$PID
export MT_SERVER=$ADDR

# ---- one sentence three ways ----
expect_rc 0 "$client" translate "hello"
[ "$(wc -l <"$work/out")" = 1 ] || fail "mt-client: one line expected"
cp "$work/out" "$work/via-client"
expect_rc 0 "$mtsh" translate "hello"
cmp -s "$work/out" "$work/via-client" || fail "mt.sh and mt-client disagree: $(cat "$work/out") / $(cat "$work/via-client")"

proto_dir=$S/proto
frame() { # frame TEXT-FORMAT: a length-prefixed frame on stdout
  local body n
  body=$(mktemp "$work/frame.XXXXXX")
  protoc --encode=mt.v1.Frame -I"$proto_dir" microtensor.proto <<<"$1" >"$body" || fail "protoc --encode"
  n=$(wc -c <"$body")
  printf "\\$(printf %03o $((n >> 24 & 255)))\\$(printf %03o $((n >> 16 & 255)))\\$(printf %03o $((n >> 8 & 255)))\\$(printf %03o $((n & 255)))"
  cat "$body"
}
{ frame 'id: 1 hello { protocol_version: 1 }'; frame 'id: 7 translate { texts: "hello" }'; frame 'id: 8 bye { }'; } >"$work/raw.req"
exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR##*:}"
cat "$work/raw.req" >&3
timeout 60 cat <&3 >"$work/raw.resp"
exec 3<&-
# Skip HelloOk, decode the second frame.
read -r b0 b1 b2 b3 < <(od -An -tu1 -N4 "$work/raw.resp")
n1=$(((b0 << 24) | (b1 << 16) | (b2 << 8) | b3))
read -r b0 b1 b2 b3 < <(od -An -tu1 -j $((4 + n1)) -N4 "$work/raw.resp")
n2=$(((b0 << 24) | (b1 << 16) | (b2 << 8) | b3))
tail -c +$((9 + n1)) "$work/raw.resp" | head -c "$n2" | protoc --decode=mt.v1.Frame -I"$proto_dir" microtensor.proto >"$work/raw.txt" ||
  fail "raw answer does not decode"
expect_grep '^id: 7$' "$work/raw.txt"
expect_grep '^translate_ok {' "$work/raw.txt"
ok "translate through mt-client, mt.sh and a raw socket"

# ---- a file through pipelined batches, order kept ----
cut -f1 "$S/tests/net/data/tiny.en-it.tsv" >"$work/en.txt"
expect_rc 0 "$client" translate -f "$work/en.txt" --batch 3 --window 8
[ "$(wc -l <"$work/out")" = "$(wc -l <"$work/en.txt")" ] || fail "translate -f: line count"
cp "$work/out" "$work/pipelined"
expect_rc 0 "$client" translate -f "$work/en.txt" --batch 1000 --window 1
[ "$(wc -l <"$work/out")" = "$(wc -l <"$work/en.txt")" ] || fail "translate -f one request: line count"
ok "translate -f: $(wc -l <"$work/en.txt") lines pipelined"

# ---- training control and promote ----
# A long run (it is stopped below), paths relative to the data root.
MT_TEST_MODEL_STEPS=100000 bash "$S/tests/net/make_model.sh" --config-only "$work" >/dev/null ||
  fail "make_model.sh --config-only"
"$client" train watch >"$work/watch.out" 2>"$work/watch.err" &
watch_pid=$!
sleep 0.3
expect_rc 0 "$client" train start --config "$work/train.json"
expect_grep "state: TRAIN_\(RUNNING\|DONE\)" "$work/out"
expect_rc 0 "$client" train status
expect_grep "state: TRAIN_" "$work/out"
expect_rc 0 "$client" translate "hello"
expect_rc 0 "$client" train save ck/manual.mt
[ -s "$work/ck/manual.mt" ] || fail "train save wrote nothing"
# Stop it (a run that already ended is refused with ERR_TRAINING_STATE, which is fine here).
"$client" train stop >"$work/out" 2>"$work/err" || expect_grep "ERR_TRAINING_STATE" "$work/err"
wait "$watch_pid" || fail "train watch exited $?"
expect_grep '"event":"end"' "$work/watch.out"
expect_rc 0 "$client" train promote ck/manual.mt
expect_grep "model_generation: 2" "$work/out"
expect_rc 0 "$client" translate "hello"
ok "train start/status/watch/save/stop and promote"

# ---- load ----
"$B/bin/mt-bench" serve --server "$ADDR" --connections 64 --requests 100 >"$work/bench.out" 2>&1 ||
  { cat "$work/bench.out"; fail "mt-bench serve"; }
cat "$work/bench.out"
expect_grep '"answered":6400,"errors":0,"lost":0' "$work/bench.out"
stop_server "$main_pid"
[ "$STOP_RC" = 0 ] || fail "server exit status $STOP_RC after SIGTERM"
ok "64 x 100 requests, nothing lost, clean exit"
