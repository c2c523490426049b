#!/usr/bin/env bash
# test_clients.sh — mt-client and mt.sh end to end against mt-server-fake (net/ with the fake
# engine): translate (arguments, a file and stdin, order kept under pipelining and out-of-order
# answers; n-best, target prefix, streaming), exit codes, tokens, health/stats, training start/status/watch/save/stop, promote, TLS.
source "$(dirname "$0")/lib.sh"

client=$B/bin/mt-client
mtsh=$S/clients/mt.sh
fake=$B/tests/mt-server-fake
echo "user-token" >"$work/token"
echo "admin-token" >"$work/admin"
chmod 600 "$work/token" "$work/admin"
printf 'FAKE-MT 1\nprefix=\n' >"$work/a.mt"
mkdir -p "$work/ck"

start_server main "$fake" --model "$work/a.mt" --token-file "$work/token" --admin-token-file "$work/admin" \
  --data-root "$work" --threads 2 --max-wait-ms 2
main_pid=$PID
export MT_SERVER=$ADDR MT_TOKEN=user-token

# ---- mt-client translate ----
expect_rc 0 "$client" translate "hello world"
expect_out "<HELLO WORLD>"
expect_rc 0 "$client" translate --beam 3 "uno" "perché è così"
expect_out "$(printf '<UNO>/b3\n<PERCHé è COSì>/b3')"
expect_rc 0 "$client" --scores translate "abc"
expect_grep $'^-0.3000\t<ABC>$' "$work/out"
ok "mt-client translate TEXT"

# N-best, target prefix and streaming (the fake marks hypothesis j > 0 with "#j", puts the prefix
# first, and streams each translation one character at a time).
expect_rc 0 "$client" translate --beam 3 --n-best 2 --scores "abc" "de"
expect_out "$(printf -- '-0.3000\t<ABC>/b3\n-1.3000\t<ABC>/b3#1\n-0.2000\t<DE>/b3\n-1.2000\t<DE>/b3#1')"
expect_rc 1 "$client" translate --n-best 2 "abc"
expect_grep "ERR_INVALID_ARGUMENT.*n_best 2 is more than the beam size 1" "$work/err"
expect_rc 0 "$client" translate --prefix "pre " "abc"
expect_out "pre <ABC>"
expect_rc 0 "$client" translate --stream "hello world" "second one"
expect_out "$(printf '<HELLO WORLD>\n<SECOND ONE>')"
expect_rc 0 "$client" translate --stream --beam 2 --n-best 2 "abc"
expect_out "$(printf '<ABC>/b2\n<ABC>/b2#1')"
ok "mt-client translate --n-best, --prefix, --stream"

# A file: 1000 lines, some slow (answered out of order), batched 7 per request, 8 in flight.
awk 'BEGIN { for (i = 1; i <= 1000; i++) {
  if (i % 97 == 0) printf "line %d @sleep=40 slow one\n", i; else if (i % 10 == 0) print ""; else printf "line %d: the quick brown fox\n", i } }' >"$work/in.txt"
tr 'a-z' 'A-Z' <"$work/in.txt" | sed 's/^/</; s/$/>/' >"$work/want.txt"
expect_rc 0 "$client" translate -f "$work/in.txt" --batch 7 --window 8
cmp -s "$work/out" "$work/want.txt" || fail "translate -f: output differs from the input's order"
expect_grep "1000 sentences translated" "$work/err"
expect_rc 0 bash -c "'$client' translate --quiet --batch 50 < '$work/in.txt'"
cmp -s "$work/out" "$work/want.txt" || fail "translate from stdin: output differs"
[ ! -s "$work/err" ] || fail "--quiet still wrote to stderr"
ok "mt-client translate -f / stdin: 1000 lines in order"

# ---- tokens and exit codes ----
expect_rc 4 env MT_TOKEN= "$client" translate x
expect_grep "ERR_AUTH_FAILED" "$work/err"
expect_rc 4 env MT_TOKEN=wrong "$client" translate x
expect_rc 0 env MT_TOKEN= "$client" --token-file "$work/token" translate x
expect_rc 4 "$client" train status
expect_grep "ERR_PERMISSION_DENIED" "$work/err"
expect_rc 3 "$client" --server 127.0.0.1:1 health
expect_rc 2 "$client" frobnicate
expect_rc 2 "$client" --beam
expect_rc 0 "$client" --help
expect_grep "exit status" "$work/out"
expect_rc 1 "$client" translate "$(head -c 5000 /dev/zero | tr '\0' a)"
expect_grep "ERR_SENTENCE_TOO_LONG" "$work/err"
ok "mt-client tokens and exit codes"

# ---- health, stats ----
expect_rc 0 "$client" health
expect_grep "state: SERVING_OK" "$work/out"
expect_rc 0 "$client" stats
expect_grep "sentences_total: " "$work/out"
ok "mt-client health / stats"

# ---- training control (admin) ----
export MT_TOKEN=admin-token
cat >"$work/train.json" <<'JSON'
{"steps": 300, "step_ms": 10, "checkpoint_dir": "ck"}
JSON
"$client" train watch >"$work/watch.out" 2>"$work/watch.err" &
watch_pid=$!
sleep 0.2
expect_rc 0 "$client" train start --config "$work/train.json"
expect_grep "state: TRAIN_RUNNING" "$work/out"
sleep 0.3
expect_rc 0 "$client" train status
expect_grep "state: TRAIN_RUNNING" "$work/out"
expect_rc 1 "$client" train start --config "$work/train.json"
expect_grep "ERR_TRAINING_STATE" "$work/err"
expect_rc 0 "$client" train save ck/manual.mt
expect_out "saved: $work/ck/manual.mt"
[ -f "$work/ck/manual.mt" ] || fail "train save wrote nothing"
expect_rc 1 "$client" train save ../outside.mt
expect_grep "ERR_PATH_OUTSIDE_ROOT" "$work/err"
expect_rc 0 "$client" train stop
wait "$watch_pid" || fail "train watch exited $?"
expect_grep '"event":"step"' "$work/watch.out"
expect_grep '"event":"end","state":"cancelled"' "$work/watch.out"
expect_rc 0 "$client" train status
expect_grep "state: TRAIN_CANCELLED" "$work/out"
ok "mt-client train start/status/watch/save/stop"

expect_rc 0 "$client" train promote ck/manual.mt
expect_grep "serving: $work/ck/manual.mt" "$work/out"
expect_rc 0 "$client" translate "after promote"
expect_grep '^ckpt[0-9]*:<AFTER PROMOTE>$' "$work/out"
expect_rc 1 "$client" train promote /etc/passwd
expect_grep "ERR_PATH_OUTSIDE_ROOT" "$work/err"
expect_rc 0 "$client" promote a.mt
ok "mt-client train promote"

# ---- mt.sh ----
export MT_TOKEN=user-token
expect_rc 0 "$mtsh" translate "hello" "perché è così" 'a "quoted" \ back\slash'
expect_out "$(printf '<HELLO>\n<PERCHé è COSì>\n<A "QUOTED" \\ BACK\\SLASH>')"
head -n 60 "$work/in.txt" >"$work/in60.txt"
head -n 60 "$work/want.txt" >"$work/want60.txt"
expect_rc 0 "$mtsh" --batch 9 translate -f "$work/in60.txt"
cmp -s "$work/out" "$work/want60.txt" || fail "mt.sh translate -f: output differs"
expect_rc 0 "$mtsh" health
expect_grep "state: SERVING_OK" "$work/out"
expect_rc 4 env MT_TOKEN=admin-tokenx "$mtsh" translate x
expect_rc 4 "$mtsh" train status
expect_rc 0 env MT_TOKEN= "$mtsh" --token-file "$work/admin" train status
expect_grep "state: TRAIN_CANCELLED" "$work/out"
expect_rc 3 "$mtsh" --server 127.0.0.1:1 health
# The copy in the build tree finds the .proto next to the generated code.
expect_rc 0 "$B/bin/mt.sh" translate "from the build tree"
expect_out "<FROM THE BUILD TREE>"
ok "mt.sh translate / health / train status"

stop_server "$main_pid"
[ "$STOP_RC" = 0 ] || fail "server exit status $STOP_RC after SIGTERM"

# ---- TLS ----
make_cert "$work"
start_server tls "$fake" --model "$work/a.mt" --tls-cert "$work/server.crt" --tls-key "$work/server.key"
tls_pid=$PID
export MT_SERVER=$ADDR MT_TOKEN=
expect_rc 0 "$client" --tls --ca "$work/server.crt" translate "secure"
expect_out "<SECURE>"
expect_rc 0 "$client" --ca "$work/server.crt" --server "localhost:${ADDR##*:}" translate "by name"
expect_rc 3 "$client" --tls translate "untrusted"
expect_grep "certificate" "$work/err"
expect_rc 0 "$mtsh" --tls --ca "$work/server.crt" translate "secure shell"
expect_out "<SECURE SHELL>"
expect_rc 0 "$mtsh" --ca "$work/server.crt" health
ok "TLS: mt-client and mt.sh with a certificate made here"
stop_server "$tls_pid"
[ "$STOP_RC" = 0 ] || fail "TLS server exit status $STOP_RC after SIGTERM"
echo "all client tests passed"
