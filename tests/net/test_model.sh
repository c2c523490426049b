#!/usr/bin/env bash
# test_model.sh — mt-server with a real (tiny) model from make_model.sh: translate through
# mt-client, mt.sh and a raw socket (bash's /dev/tcp, frames made by protoc and printf), streaming
# (partial frames), n-best and target prefixes, a file
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

# ---- streaming, n-best and a target prefix ----
# On a sentence the tiny model translates into two words or more.
sent=""
while IFS=$'\t' read -r en _; do
  expect_rc 0 "$client" translate "$en"
  if [ "$(wc -w <"$work/out")" -ge 2 ]; then sent=$en; break; fi
done <"$S/tests/net/data/tiny.en-it.tsv"
[ -n "$sent" ] || fail "no sentence of tiny.en-it.tsv translates into two words"
# The protocol: partial TranslateResponse frames (final false) before the answer (final true).
{ frame 'id: 1 hello { protocol_version: 1 }'; frame "id: 9 translate { texts: \"$sent\" stream: true }"
  frame 'id: 10 bye { }'; } >"$work/stream.req"
exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR##*:}"
cat "$work/stream.req" >&3
timeout 60 cat <&3 >"$work/stream.resp"
exec 3<&-
size=$(wc -c <"$work/stream.resp")
off=0 partial=0 final=0
while [ "$off" -lt "$size" ]; do
  read -r b0 b1 b2 b3 < <(od -An -tu1 -j "$off" -N4 "$work/stream.resp")
  n=$(((b0 << 24) | (b1 << 16) | (b2 << 8) | b3))
  tail -c +$((off + 5)) "$work/stream.resp" | head -c "$n" |
    protoc --decode=mt.v1.Frame -I"$proto_dir" microtensor.proto >"$work/f.txt" || fail "a streamed frame does not decode"
  if grep -q '^translate_ok {' "$work/f.txt"; then
    expect_grep '^id: 9$' "$work/f.txt"
    if grep -q 'final: true' "$work/f.txt"; then final=$((final + 1)); cp "$work/f.txt" "$work/final.txt"
    else [ "$final" = 0 ] || fail "a partial frame after the final one"; partial=$((partial + 1)); fi
  fi
  off=$((off + 4 + n))
done
[ "$final" = 1 ] || fail "streaming: $final final answers"
[ "$partial" -ge 1 ] || fail "streaming: no partial answer before the final one"
ok "protocol: $partial partial answers, then the final one"

expect_rc 0 "$client" translate "$sent"
cp "$work/out" "$work/greedy"
expect_rc 0 "$client" translate --stream "$sent"
cmp -s "$work/out" "$work/greedy" || fail "--stream printed $(cat "$work/out"), not $(cat "$work/greedy")"
expect_rc 0 "$client" translate --beam 4 "$sent"
cp "$work/out" "$work/beam"
expect_rc 0 "$client" translate --beam 4 --n-best 3 --scores "$sent"
[ "$(wc -l <"$work/out")" = 3 ] || fail "--n-best 3: $(wc -l <"$work/out") lines"
[ "$(head -n 1 "$work/out" | cut -f2-)" = "$(cat "$work/beam")" ] || fail "the first of the n-best is not the 1-best"
[ "$(cut -f2- "$work/out" | sort -u | wc -l)" = 3 ] || fail "--n-best 3: hypotheses not distinct"
first=$(cut -d' ' -f1 "$work/greedy")
expect_rc 0 "$client" translate --prefix "$first" "$sent"
cmp -s "$work/out" "$work/greedy" || fail "its own first word as the prefix changed the translation: $(cat "$work/out")"
expect_rc 0 "$client" translate --prefix "zzz" "$sent"
case "$(cat "$work/out")" in zzz*) ;; *) fail "--prefix zzz: $(cat "$work/out")" ;; esac
ok "mt-client translate --stream, --n-best, --prefix with the real engine"

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
