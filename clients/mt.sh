#!/usr/bin/env bash
# mt.sh — talk to mt-server from plain shell, with no compiled code of ours: frames are encoded and
# decoded by protoc (Debian's protobuf-compiler) from proto/microtensor.proto, the 4-byte big-endian
# length prefix is written with printf and read with od, and the bytes travel through socat (TCP) or
# openssl s_client (TLS). One connection per command: Hello, the request(s), Bye; the server answers
# and closes. See proto/README.md for the protocol.
#
#   mt.sh [options] translate TEXT...      one request; one line out per text
#   mt.sh [options] translate -f FILE      FILE (or - for stdin) line by line, in order
#   mt.sh [options] health
#   mt.sh [options] train status
#
# options: --server HOST:PORT (default $MT_SERVER, else 127.0.0.1:7700), --tls, --ca FILE,
#          --token-file FILE (default: $MT_TOKEN), --timeout S (default 600), --beam N, --batch N
# exit status (as mt-client): 0 ok; 1 the server answered with an error; 2 bad usage; 3 cannot
# connect / TLS failure; 4 token refused or admin needed; 5 timeout or protocol error.
set -u
export LC_ALL=C

server=${MT_SERVER:-127.0.0.1:7700}
tls=0
ca=""
token=${MT_TOKEN:-}
timeout=600
beam=0
batch=32
file=""

die() { echo "mt.sh: $2" >&2; exit "$1"; }

here=$(cd "$(dirname "$0")" && pwd)
proto=${MT_PROTO:-}
if [ -z "$proto" ]; then
  for p in "$here/../proto/microtensor.proto" "$here/../share/microtensor/microtensor.proto"; do
    if [ -f "$p" ]; then proto=$p; break; fi
  done
fi
[ -n "$proto" ] && [ -f "$proto" ] || die 2 "cannot find microtensor.proto (set MT_PROTO)"
proto_dir=$(dirname "$proto")
proto_file=$(basename "$proto")
command -v protoc >/dev/null || die 2 "protoc not found (apt install protobuf-compiler)"

args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --server) server=${2:?}; shift 2 ;;
    --tls) tls=1; shift ;;
    --ca) ca=${2:?}; tls=1; shift 2 ;;
    --token-file) [ -r "${2:?}" ] || die 2 "cannot read $2"; token=$(head -n1 "$2" | tr -d '\r' | sed 's/^[[:space:]]*//; s/[[:space:]]*$//'); shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --beam) beam=${2:?}; shift 2 ;;
    --batch) batch=${2:?}; shift 2 ;;
    -f) file=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; args+=("$@"); break ;;
    -*) die 2 "unknown option $1" ;;
    *) args+=("$1"); shift ;;
  esac
done
[ ${#args[@]} -ge 1 ] || die 2 "usage: mt.sh [options] translate TEXT... | translate -f FILE | health | train status"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mt.sh.XXXXXX") || die 2 "cannot make a temporary directory"
trap 'rm -rf "$tmp"' EXIT

# A protobuf text-format string literal of $1 (UTF-8 passes through as is).
quote() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/\\t}
  s=${s//$'\r'/\\r}
  s=${s//$'\n'/\\n}
  printf '"%s"' "$s"
}

# Appends one frame (text format $1) with its length prefix to file $2.
frame() {
  protoc --encode=mt.v1.Frame -I"$proto_dir" "$proto_file" <<<"$1" >"$tmp/body" || die 2 "protoc could not encode a frame"
  local n
  n=$(wc -c <"$tmp/body")
  printf "\\$(printf %03o $(((n >> 24) & 255)))\\$(printf %03o $(((n >> 16) & 255)))\\$(printf %03o $(((n >> 8) & 255)))\\$(printf %03o $((n & 255)))" >>"$2"
  cat "$tmp/body" >>"$2"
}

# Undoes protoc's C escapes (\n \t \" \\ \ooo ...) in a string literal's content, byte-exact.
unescape() {
  awk 'BEGIN { oct["0"]=0; for (i = 0; i < 8; i++) oct[i ""] = i }
  {
    s = $0; out = ""; n = length(s)
    for (i = 1; i <= n; i++) {
      c = substr(s, i, 1)
      if (c != "\\") { out = out c; continue }
      d = substr(s, ++i, 1)
      if (d ~ /[0-7]/) {
        v = oct[d]; k = 1
        while (k < 3 && substr(s, i + 1, 1) ~ /[0-7]/) { v = v * 8 + oct[substr(s, ++i, 1)]; k++ }
        out = out sprintf("%c", v)
      } else if (d == "n") out = out "\n"
      else if (d == "t") out = out "\t"
      else if (d == "r") out = out "\r"
      else out = out d
    }
    print out
  }'
}

# Sends $tmp/req and leaves the server's bytes in $tmp/resp.
exchange() {
  local host=${server%:*} port=${server##*:} rc
  host=${host#[}; host=${host%]}
  if [ "$tls" = 1 ]; then
    command -v openssl >/dev/null || die 2 "openssl not found"
    local v=(-verify_return_error)
    if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then v+=(-verify_ip "$host"); else v+=(-verify_hostname "$host" -servername "$host"); fi
    [ -n "$ca" ] && v+=(-CAfile "$ca")
    timeout "$timeout" openssl s_client -quiet -connect "$server" "${v[@]}" <"$tmp/req" >"$tmp/resp" 2>"$tmp/err"
    rc=$?
  else
    command -v socat >/dev/null || die 2 "socat not found (apt install socat)"
    timeout "$timeout" socat -t "$timeout" -T "$timeout" STDIO "TCP:$host:$port,nodelay" <"$tmp/req" >"$tmp/resp" 2>"$tmp/err"
    rc=$?
  fi
  if [ "$rc" = 124 ]; then die 5 "timed out after $timeout s"; fi
  if [ ! -s "$tmp/resp" ]; then
    die 3 "no answer from $server: $(tr '\n' ' ' <"$tmp/err" | cut -c1-300)"
  fi
}

# Splits $tmp/resp into frames: $tmp/f.N (text format), in arrival order; sets nframes.
split_frames() {
  local size off=0 n len
  size=$(wc -c <"$tmp/resp")
  nframes=0
  while [ $((off + 4)) -le "$size" ]; do
    read -r b0 b1 b2 b3 < <(od -An -tu1 -j "$off" -N4 "$tmp/resp")
    len=$(((b0 << 24) | (b1 << 16) | (b2 << 8) | b3))
    [ $((off + 4 + len)) -le "$size" ] || die 5 "truncated frame from the server"
    tail -c +$((off + 5)) "$tmp/resp" | head -c "$len" | protoc --decode=mt.v1.Frame -I"$proto_dir" "$proto_file" >"$tmp/f.$nframes" ||
      die 5 "undecodable frame from the server"
    off=$((off + 4 + len))
    nframes=$((nframes + 1))
  done
}

frame_id() { sed -n 's/^id: \([0-9]*\)$/\1/p' "$1"; }

# Exits with mt-client's code when frame file $1 is an Error.
check_error() {
  grep -q '^error {' "$1" || return 0
  local code msg
  code=$(sed -n 's/^  code: //p' "$1")
  msg=$(sed -n 's/^  message: "\(.*\)"$/\1/p' "$1" | unescape)
  echo "mt.sh: ${code:-ERR_NONE}: $msg" >&2
  case "$code" in
    ERR_AUTH_FAILED|ERR_PERMISSION_DENIED|ERR_NOT_AUTHENTICATED) exit 4 ;;
    ERR_BAD_FRAME|ERR_FRAME_TOO_LARGE|ERR_VERSION_UNSUPPORTED|ERR_UNKNOWN_BODY) exit 5 ;;
    *) exit 1 ;;
  esac
}

# Request file: Hello (id 1), the bodies given (ids 2..), Bye.
start_request() {
  : >"$tmp/req"
  frame "id: 1 hello { protocol_version: 1 token: $(quote "$token") client: \"mt.sh\" }" "$tmp/req"
}
end_request() { frame "id: $1 bye { }" "$tmp/req"; }

# Checks the Hello's answer (frame 0).
check_hello() {
  [ "$nframes" -ge 1 ] || die 3 "the server closed the connection"
  check_error "$tmp/f.0"
  grep -q '^hello_ok {' "$tmp/f.0" || die 5 "no HelloOk from the server"
}

texts_of() { sed -n 's/^  texts: "\(.*\)"$/\1/p' "$1" | unescape; }

cmd=${args[0]}
case "$cmd" in
  translate)
    start_request
    nreq=0
    if [ -n "$file" ] || [ ${#args[@]} -eq 1 ]; then
      src=${file:--}
      [ "$src" = - ] && src=/dev/stdin
      [ -r "$src" ] || die 2 "cannot read $src"
      body="" k=0
      while IFS= read -r line || [ -n "$line" ]; do
        line=${line%$'\r'}
        body+="texts: $(quote "$line") "
        k=$((k + 1))
        if [ "$k" -ge "$batch" ]; then
          frame "id: $((nreq + 2)) translate { $body beam_size: $beam }" "$tmp/req"
          nreq=$((nreq + 1)); body="" k=0
        fi
      done <"$src"
      if [ "$k" -gt 0 ]; then frame "id: $((nreq + 2)) translate { $body beam_size: $beam }" "$tmp/req"; nreq=$((nreq + 1)); fi
      [ "$nreq" -gt 0 ] || exit 0
    else
      body=""
      for t in "${args[@]:1}"; do body+="texts: $(quote "$t") "; done
      frame "id: 2 translate { $body beam_size: $beam }" "$tmp/req"
      nreq=1
    fi
    end_request $((nreq + 2))
    exchange
    split_frames
    check_hello
    # Answers may come in any order: file them by id, print in request order.
    for ((i = 1; i < nframes; i++)); do
      id=$(frame_id "$tmp/f.$i")
      check_error "$tmp/f.$i"
      grep -q '^translate_ok {' "$tmp/f.$i" && cp "$tmp/f.$i" "$tmp/answer.$id"
    done
    for ((i = 0; i < nreq; i++)); do
      [ -f "$tmp/answer.$((i + 2))" ] || die 5 "no answer to request $((i + 2))"
      texts_of "$tmp/answer.$((i + 2))"
    done
    ;;
  health)
    start_request
    frame "id: 2 health { }" "$tmp/req"
    end_request 3
    exchange
    split_frames
    check_hello
    [ "$nframes" -ge 2 ] || die 5 "no answer to health"
    check_error "$tmp/f.1"
    sed -n 's/^  \([a-z_]*\): /\1: /p' "$tmp/f.1"
    grep -q 'state: SERVING_OK' "$tmp/f.1" || exit 1
    ;;
  train)
    [ "${args[1]:-}" = status ] || die 2 "mt.sh supports 'train status' only (use mt-client for the rest)"
    start_request
    frame "id: 2 train_status { }" "$tmp/req"
    end_request 3
    exchange
    split_frames
    check_hello
    [ "$nframes" -ge 2 ] || die 5 "no answer to train status"
    check_error "$tmp/f.1"
    grep -q '^train_status_ok {' "$tmp/f.1" || die 5 "unexpected answer to train status"
    state=$(sed -n 's/^  state: //p' "$tmp/f.1")
    echo "state: ${state:-TRAIN_NONE}"
    sed -n 's/^  \(step\|loss\|tokens_per_s\): /\1: /p' "$tmp/f.1"
    json=$(sed -n 's/^  status_json: "\(.*\)"$/\1/p' "$tmp/f.1" | unescape)
    [ -n "$json" ] && echo "status: $json"
    ;;
  *) die 2 "unknown command '$cmd' (translate, health, train status)" ;;
esac
exit 0
