# lib.sh — helpers of the shell tests in tests/net (sourced, not run): a scratch directory removed
# on exit, servers started on ephemeral loopback ports (their PIDs remembered and stopped on exit),
# and assertions that say what was expected.
set -uo pipefail
export LC_ALL=C

B=${MT_BUILD_DIR:-$PWD/build}
S=${MT_SOURCE_DIR:-$PWD}
work=$(mktemp -d "${TMPDIR:-/tmp}/mt-net-test.XXXXXX")
work=$(cd "$work" && pwd -P)
server_pids=()

cleanup() {
  local p
  for p in "${server_pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  local l
  for l in "$work"/server*.log; do
    [ -f "$l" ] && { echo "---- $l (last 40 lines)" >&2; tail -n 40 "$l" >&2; }
  done
  exit 1
}
ok() { echo "ok - $*"; }

# start_server NAME BINARY ARGS... : sets ADDR, HTTP, PID (log in $work/server-NAME.log).
start_server() {
  local name=$1 bin=$2
  shift 2
  local pf="$work/ports-$name"
  rm -f "$pf"
  "$bin" --listen 127.0.0.1:0 --http 127.0.0.1:0 --port-file "$pf" "$@" 2>"$work/server-$name.log" &
  PID=$!
  server_pids+=("$PID")
  local i
  for ((i = 0; i < 400; i++)); do
    if [ -s "$pf" ]; then
      ADDR=$(sed -n 's/^listen=//p' "$pf")
      HTTP=$(sed -n 's/^http=//p' "$pf")
      return 0
    fi
    kill -0 "$PID" 2>/dev/null || fail "server $name exited at startup"
    sleep 0.05
  done
  fail "server $name did not start listening"
}

# stop_server PID [SIGNAL]: signals the server, waits, sets STOP_RC to its exit status.
stop_server() {
  local pid=$1 sig=${2:-TERM}
  kill -"$sig" "$pid" 2>/dev/null
  wait "$pid"
  STOP_RC=$?
}

# expect_rc N CMD...: runs CMD (stdout to $work/out, stderr to $work/err), checks the exit status.
expect_rc() {
  local want=$1
  shift
  "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  [ "$rc" = "$want" ] || { echo "stdout:" >&2; head -c 2000 "$work/out" >&2; echo "stderr:" >&2; head -c 2000 "$work/err" >&2; fail "exit $rc, wanted $want: $*"; }
}

expect_out() { # expect_out TEXT: $work/out equals TEXT (with a final newline)
  printf '%s\n' "$1" | cmp -s - "$work/out" || { echo "got:" >&2; cat "$work/out" >&2; fail "output differs from: $1"; }
}
expect_grep() { # expect_grep PATTERN FILE
  grep -q -- "$1" "$2" || { echo "---- $2" >&2; head -c 3000 "$2" >&2; fail "'$1' not in $2"; }
}

# http_get PATH: the body of GET http://$HTTP/PATH (bash's /dev/tcp; no curl needed); sets
# HTTP_STATUS.
http_get() {
  local resp
  exec 3<>"/dev/tcp/${HTTP%:*}/${HTTP##*:}" || fail "cannot connect to $HTTP"
  printf 'GET %s HTTP/1.0\r\nHost: test\r\n\r\n' "$1" >&3
  resp=$(timeout 10 cat <&3)
  exec 3<&-
  HTTP_STATUS=$(head -n1 <<<"$resp" | awk '{ print $2 }')
  sed '1,/^\r$/d' <<<"$resp"
}

metric() { # metric SAMPLE: the value of a /metrics sample of the last started server
  http_get /metrics | awk -v s="$1" '$1 == s { print $2 }'
}

make_cert() { # make_cert DIR: DIR/server.crt, DIR/server.key for localhost and 127.0.0.1
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$1/server.key" -out "$1/server.crt" 2>/dev/null ||
    fail "openssl req"
}

# needs_model: skips (77) with the documented message while mt-train is not built.
needs_model() {
  if [ ! -x "$B/bin/mt-train" ]; then
    echo "needs a trained model: mt-train is not built yet"
    exit 77
  fi
}
