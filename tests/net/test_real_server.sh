#!/usr/bin/env bash
# test_real_server.sh — the real mt-server binary (the engine behind the C ABI), where no trained
# model is needed: startup checks (protected mode, a model that cannot load, a missing GPU, bad
# options, the config file), serving without a model (health, ERR_NO_MODEL, a training config the
# engine refuses), /healthz and /metrics, TLS, and the SIGTERM drain with exit status 0.
source "$(dirname "$0")/lib.sh"

server=$B/bin/mt-server
client=$B/bin/mt-client

# ---- startup refusals ----
expect_rc 1 "$server" --listen 0.0.0.0:0 --http off
expect_grep "without a token" "$work/err"
expect_rc 1 "$server" --listen 127.0.0.1:0 --http off --model "$work/missing.mt"
expect_grep "cannot load the model" "$work/err"
expect_rc 1 "$server" --listen 127.0.0.1:0 --http off --gpus 63
expect_grep "not present" "$work/err"
expect_rc 2 "$server" --max-frame-bytes lots
expect_grep "max-frame-bytes" "$work/err"
expect_rc 2 "$server" --tls-cert x.pem
expect_rc 0 "$server" --help
expect_grep "max-batch-tokens" "$work/out"
expect_rc 0 "$server" --version
expect_grep "mt-server" "$work/out"
ok "startup refusals and options"

# ---- serving without a model, from a config file ----
cat >"$work/server.conf" <<CONF
# mt-server config: the same keys as the options
max-sentences = 4
idle-timeout-s = 60
data-root = "$work"
CONF
start_server main "$server" --config "$work/server.conf"
main_pid=$PID
export MT_SERVER=$ADDR
expect_rc 1 "$client" health
expect_grep "state: SERVING_NO_MODEL" "$work/out"
expect_rc 1 "$client" translate hello
expect_grep "ERR_NO_MODEL" "$work/err"
expect_rc 1 "$client" translate 1 2 3 4 5
expect_grep "ERR_TOO_MANY_SENTENCES" "$work/err"
echo '{"no_such_key": 1}' >"$work/bad.json"
expect_rc 1 "$client" train start --config "$work/bad.json"
expect_grep "cannot start training" "$work/err"
expect_rc 0 "$client" train status
expect_grep "state: TRAIN_FAILED" "$work/out"
http_get /healthz >"$work/health.json"
[ "$HTTP_STATUS" = 200 ] || fail "/healthz status $HTTP_STATUS"
expect_grep '"status":"no_model"' "$work/health.json"
[ "$(metric 'mt_limit_hits_total{limit="max_sentences"}')" = 1 ] || fail "max_sentences hit not counted"
[ "$(metric mt_model_loaded)" = 0 ] || fail "mt_model_loaded"
stop_server "$main_pid"
[ "$STOP_RC" = 0 ] || fail "exit status $STOP_RC after SIGTERM"
expect_grep "drain: done" "$work/server-main.log"
ok "no model: health, errors, limits, metrics, drain"

# ---- TLS and tokens with the real binary ----
make_cert "$work"
echo "t0ken" >"$work/token"
chmod 600 "$work/token"
start_server tls "$server" --listen 0.0.0.0:0 --token-file "$work/token" --tls-cert "$work/server.crt" \
  --tls-key "$work/server.key"
tls_pid=$PID
port=${ADDR##*:}
expect_rc 1 env MT_TOKEN=t0ken "$client" --server "127.0.0.1:$port" --ca "$work/server.crt" health
expect_grep "state: SERVING_NO_MODEL" "$work/out"
expect_rc 4 env MT_TOKEN=nope "$client" --server "127.0.0.1:$port" --ca "$work/server.crt" health
expect_rc 3 "$client" --server "127.0.0.1:$port" --tls health
stop_server "$tls_pid"
[ "$STOP_RC" = 0 ] || fail "TLS server exit status $STOP_RC"
ok "TLS and tokens on a non-loopback listener"
echo "all real-server tests passed"
