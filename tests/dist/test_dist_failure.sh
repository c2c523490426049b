#!/usr/bin/env bash
# test_dist_failure.sh — lost ranks and refused ranks, with mt-train processes on loopback:
#  * a rank killed with SIGKILL mid-run, and one stopped with SIGSTOP: rank 0 exits non-zero within
#    comm_timeout_s + 5 s naming the lost rank; the checkpoint directory holds only complete,
#    verified checkpoints (no temporary file); `--resume auto` on both ranks finishes the run;
#  * a config that differs (lr) or a world size that differs: every rank fails at the rendezvous
#    with a message naming the difference, and none hangs;
#  * GPU ranks (`--gpus 0,1`) on a machine without two CUDA devices: a clear error at once, naming
#    the missing device (with two devices the run itself is tests/gpu/test_gpu_dist's).
set -euo pipefail
source "$(dirname "$0")/dist_common.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mt-distf-XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
T=4   # comm_timeout_s of these runs
steps=400

# start NAME WORLD RANK PORT [extra args]: a rank in the background; its pid in $pid.
start() {
  local name=$1 w=$2 r=$3 port=$4; shift 4
  "$bin/mt-train" "${CFG[@]}" --max_steps $steps --save_every 5 --comm_timeout_s $T --out_dir "$tmp/$name" \
    --world-size "$w" --rank "$r" --rendezvous "127.0.0.1:$port" "$@" > "$tmp/$name.$r.log" 2>&1 &
  pid=$!; pids+=("$pid")
}

# Waits until rank 0 of run NAME has written a checkpoint.
wait_ckpt() {
  for _ in $(seq 1 600); do
    ls "$tmp/$1/checkpoints"/step-*.mt >/dev/null 2>&1 && return 0; sleep 0.1
  done
  echo "FAIL: no checkpoint in $1" >&2; exit 1
}

verify_ckpts() {
  local dir="$tmp/$1/checkpoints" n=0
  for f in "$dir"/*; do
    case "$(basename "$f")" in step-*.mt) ;; *) echo "FAIL: stray file $f" >&2; exit 1 ;; esac
    "$diffbin" "$f" || { echo "FAIL: checkpoint $f does not verify" >&2; exit 1; }
    n=$((n + 1))
  done
  echo "$1: $n complete checkpoints"
}

for sig in KILL STOP; do
  name=lost$sig; port=$(free_port)
  start $name 2 0 "$port"; p0=$pid
  start $name 2 1 "$port"; p1=$pid
  wait_ckpt $name
  sleep 1
  kill -$sig "$p1"
  t0=$(date +%s.%N)
  wait_pid "$p0" $((T + 30))
  t1=$(date +%s.%N)
  took=$(sub "$t0" "$t1")
  echo "SIG$sig of rank 1: rank 0 exit $rc after $took s: $(grep -o 'failed: [^(]*' "$tmp/$name.0.log" | head -1)"
  [ "$rc" -eq 1 ] || { echo "FAIL: rank 0 exit $rc (want 1: mt-train's error)"; cat "$tmp/$name.0.log"; exit 1; } >&2
  awk -v t="$took" -v T=$T 'BEGIN { exit !(t <= T + 5) }' || { echo "FAIL: took $took s > $T + 5" >&2; exit 1; }
  grep -q "rank 1 \(died\|stopped answering\)" "$tmp/$name.0.log" || { echo "FAIL: rank 1 not named" >&2; cat "$tmp/$name.0.log" >&2; exit 1; }
  kill -CONT "$p1" 2>/dev/null || true; kill -KILL "$p1" 2>/dev/null || true; wait "$p1" 2>/dev/null || true
  verify_ckpts $name
  # Resume finishes the run (a short one: 10 more steps).
  last=$(ls "$tmp/$name/checkpoints" | sed -n 's/step-0*\([0-9]*\)\.mt/\1/p' | sort -n | tail -1)
  port=$(free_port)
  start $name 2 0 "$port" --resume auto --max_steps $((last + 10)); r0=$pid
  start $name 2 1 "$port" --resume auto --max_steps $((last + 10)); r1=$pid
  wait_pid "$r0" 120; rc0=$rc; wait_pid "$r1" 120; rc1=$rc
  [ "$rc0" -eq 0 ] && [ "$rc1" -eq 0 ] || { echo "FAIL: resume exit $rc0/$rc1" >&2; cat "$tmp/$name.0.log" >&2; exit 1; }
  [ -f "$tmp/$name/model.mt" ] || { echo "FAIL: resume wrote no model" >&2; exit 1; }
  echo "SIG$sig: resumed from step $last and finished"
done

# Refusals: a config key that differs, a world size that differs.
for case in lr world; do
  port=$(free_port)
  start ref$case 2 0 "$port"; p0=$pid
  if [ $case = lr ]; then start ref$case 2 1 "$port" --lr 0.003; else start ref$case 3 1 "$port"; fi
  p1=$pid
  wait_pid "$p0" 60; rc0=$rc; wait_pid "$p1" 60; rc1=$rc
  for r in 0 1; do echo "$case rank $r: $(tail -1 "$tmp/ref$case.$r.log")"; done
  [ "$rc0" -eq 1 ] && [ "$rc1" -eq 1 ] || { echo "FAIL: exits $rc0/$rc1 (want 1/1)" >&2; exit 1; }
  want=$([ $case = lr ] && echo "config key 'lr' is 0.003 here but 0.002 on rank 0" || echo "asked for a world of 3 ranks")
  for r in 0 1; do grep -qF "$want" "$tmp/ref$case.$r.log" || { echo "FAIL: rank $r does not say '$want'" >&2; exit 1; }; done
done
# GPU ranks where the devices are missing: refused before any rank starts.
t0=$(date +%s.%N)
set +e; timeout 60 "$bin/mt-train" "${CFG[@]}" --max_steps 1 --out_dir "$tmp/gpus" --gpus 0,1 > "$tmp/gpus.log" 2>&1; rc=$?; set -e
took=$(sub "$t0" "$(date +%s.%N)")
if [ $rc -eq 0 ]; then
  echo "--gpus 0,1: this machine has two CUDA devices; the run finished"
else
  echo "--gpus 0,1: exit $rc after $took s: $(head -1 "$tmp/gpus.log")"
  [ $rc -eq 1 ] || { echo "FAIL: --gpus 0,1 exit $rc (want 1)" >&2; cat "$tmp/gpus.log" >&2; exit 1; }
  grep -q "gpus '0,1': cuda:[01] " "$tmp/gpus.log" || { echo "FAIL: --gpus 0,1 does not name the device" >&2; exit 1; }
  awk -v t="$took" 'BEGIN { exit !(t <= 10) }' || { echo "FAIL: --gpus 0,1 took $took s" >&2; exit 1; }
fi
echo "test_dist_failure: ok"
