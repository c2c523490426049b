#!/usr/bin/env bash
# compose-test.sh — builds the images and runs the compose deployment (deploy/docker-compose.yml) for
# real, then checks it from the host the way a user would:
#
#   install    docker.io, debootstrap and a compose v2 plugin (deploy/install-deps.sh,
#              MT_INSTALL_DOCKER=1), and checks that compose's exit codes are real
#   dockerd    uses a running daemon, or starts one (and at the end stops only that one, by its PID,
#              restores the host's iptables FORWARD policy, ip_forward, the iptables rules and chains
#              it added, and removes the docker0 bridge it made)
#   base       the local base image (deploy/docker/base-image.sh; kept between runs)
#   image      the CPU image through `docker compose build`
#   cuda-image the CUDA image through the GPU override, when the host build has the CUDA backend
#              (it only builds here: no GPU to run it)
#   up         a small model trained on the host goes into the `models` volume, the demo corpus into
#              `corpora`; `docker compose up -d --wait`; the server is healthy and runs as uid 10001
#   translate  "hello" through the published port with the host's mt-client, the same words as the
#              host's mt-translate with the same model; /healthz and /metrics on the published port
#   train      a short distributed training of the demo across server, worker-1 and worker-2
#              (`train start --min-nodes 3`); worker-2's container killed after the first checkpoint;
#              the job restarts from that checkpoint on the nodes left and finishes (`train watch`)
#   promote    the trained model promoted, and "hello" translated with it as mt-translate does
#   down       `docker compose down -v`: no container or volume of the project left
#
# Then it prints what it checked and the time each stage took. Exit 0: passed; 77: skipped, because
# docker cannot run on this machine (the reason is printed); anything else: failed, with the
# containers' logs. The whole run is bounded by `timeout` (MT_COMPOSE_TEST_TIMEOUT seconds, default
# 1500) and cleans up on every exit.
#
#   deploy/compose-test.sh                 as root, after a build (deploy/test.sh runs it)
#   MT_BUILD_DIR=build                     the host build whose mt-client, mt-train and mt-translate
#                                          are used (default build)
#   MT_CUDA_BUILD_DIR=dir                  the host build with the CUDA backend for the CUDA image
#                                          (default: MT_BUILD_DIR, else build-cuda, when either has it)
#   MT_COMPOSE_TEST_KEEP=1                 leave the deployment up at the end (no `down -v`)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ -z "${MT_COMPOSE_TEST_BOUNDED:-}" ]; then
  export MT_COMPOSE_TEST_BOUNDED=1
  exec timeout --kill-after=120 "${MT_COMPOSE_TEST_TIMEOUT:-1500}" bash "$0" "$@"
fi

build=${MT_BUILD_DIR:-build}
bin=$root/$build/bin
project=mt-compose-test
image=microtensor:cpu
cuda_image=microtensor:cuda
work=$(mktemp -d /tmp/mt-compose-test.XXXXXX)
chmod 755 "$work"

# ---- bookkeeping: checks, stage times, cleanup ----
checks=()
times=()
dockerd_pid=""

compose_up=0
stage_name=""
stage_t0=0

say() { printf '%s\n' "$*"; }
ok() {
  checks+=("$*")
  say "  ok: $*"
}
fail() {
  say "FAILED: $*" >&2
  exit 1
}
skip() {
  say "SKIPPED: deploy/compose-test.sh: $*"
  exit 77
}
stage() {
  stage_end
  stage_name=$1
  stage_t0=$(date +%s)
  say "== $1 =="
}
stage_end() {
  [ -n "$stage_name" ] || return 0
  times+=("$(printf '%-11s %5d s' "$stage_name" $(($(date +%s) - stage_t0)))")
  stage_name=""
}
summary() {
  local rc=$1
  stage_end
  say ""
  say "== compose-test: what was checked =="
  local c t
  for c in "${checks[@]}"; do say "  ok  $c"; done
  say "== compose-test: time per stage =="
  for t in "${times[@]}"; do say "  $t"; done
  if [ "$rc" = 0 ]; then
    say "== compose-test passed: ${#checks[@]} checks in $SECONDS s =="
  elif [ "$rc" != 77 ]; then
    say "== compose-test FAILED (exit $rc) after ${#checks[@]} checks, $SECONDS s =="
  fi
}

compose() {
  docker compose -p "$project" -f deploy/docker-compose.yml "$@"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ "$compose_up" = 1 ]; then
    if [ "$rc" != 0 ]; then
      say "== containers' logs (last 40 lines each) =="
      timeout 30 docker compose -p "$project" -f deploy/docker-compose.yml logs --no-color --tail 40 2>&1
    fi
    if [ "${MT_COMPOSE_TEST_KEEP:-0}" != 1 ] || [ "$rc" != 0 ]; then
      timeout 90 docker compose -p "$project" -f deploy/docker-compose.yml down -v --timeout 20 >/dev/null 2>&1
    fi
  fi
  if [ -n "$dockerd_pid" ] || docker info >/dev/null 2>&1; then
    # Images of ours that a rebuild left without a tag; the build cache kept to its newest 3 GB
    # (the apt and ccache mounts are used by every build, so they stay).
    timeout 60 docker image prune -f --filter label=org.microtensor.image >/dev/null 2>&1
    timeout 60 docker builder prune -f --keep-storage 3GB >/dev/null 2>&1
  fi
  [ -z "$dockerd_pid" ] || stop_dockerd
  rm -rf "$work"
  summary "$rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' INT TERM

# quietly WHAT COMMAND...: runs COMMAND with its output in a log, shown (its end) only if it fails.
quietly() {
  local what=$1 log
  shift
  log=$work/$(printf '%s' "$what" | tr -c 'a-zA-Z0-9' _).log
  "$@" >"$log" 2>&1 || {
    tail -40 "$log"
    fail "$what"
  }
}

# wait_for SECONDS WHAT COMMAND...: runs COMMAND every second until it succeeds; fails after SECONDS.
wait_for() {
  local limit=$1 what=$2 t0=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ $((SECONDS - t0)) -lt "$limit" ] || fail "$what: not within $limit s"
    sleep 1
  done
}

# ---- dockerd: the running one, or one of ours ----
ipt_tables=(filter nat)
start_dockerd() {
  if docker info >/dev/null 2>&1; then
    ok "docker daemon already running: used as it is"
    return
  fi
  # What dockerd changes on the host, to put back when it stops.
  fwd_policy=$(iptables -S FORWARD 2>/dev/null | awk '$1 == "-P" { print $3 }')
  ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)
  had_docker0=0
  ip link show docker0 >/dev/null 2>&1 && had_docker0=1
  local t
  for t in "${ipt_tables[@]}"; do iptables -t "$t" -S >"$work/ipt.$t.before" 2>/dev/null || :; done
  setsid dockerd -p "$work/dockerd.pid" >"$work/dockerd.log" 2>&1 </dev/null &
  dockerd_pid=$!
  local _
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    tail -5 "$work/dockerd.log"
    stop_dockerd
    dockerd_pid=""
    skip "dockerd does not start on this machine (its log above)"
  fi
  ok "dockerd started (pid $dockerd_pid; stopped at the end)"
}

stop_dockerd() {
  kill -TERM "$dockerd_pid" 2>/dev/null
  local _
  for _ in $(seq 60); do
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 1
  done
  kill -0 "$dockerd_pid" 2>/dev/null && kill -KILL "$dockerd_pid" 2>/dev/null
  wait "$dockerd_pid" 2>/dev/null
  # Undo what it did to the host: the rules and chains it added (those not there before it
  # started), the FORWARD policy, ip_forward, and its bridge.
  local t line chains
  for t in "${ipt_tables[@]}"; do
    [ -f "$work/ipt.$t.before" ] || continue
    iptables -t "$t" -S 2>/dev/null | grep '^-A ' | grep -vxF -f "$work/ipt.$t.before" | tac |
      while read -r line; do eval "iptables -t $t -D ${line#-A }"; done
    chains=$(iptables -t "$t" -S 2>/dev/null | grep '^-N ' | grep -vxF -f "$work/ipt.$t.before" | cut -d' ' -f2)
    for line in $chains; do iptables -t "$t" -F "$line"; done # emptied first: they may jump to each other
    for line in $chains; do iptables -t "$t" -X "$line"; done
  done
  [ -z "${fwd_policy:-}" ] || iptables -P FORWARD "$fwd_policy"
  [ -z "${ip_forward:-}" ] || echo "$ip_forward" >/proc/sys/net/ipv4/ip_forward
  if [ "${had_docker0:-1}" = 0 ] && ip link show docker0 >/dev/null 2>&1; then ip link delete docker0; fi
  say "  dockerd $dockerd_pid stopped; FORWARD policy ${fwd_policy:-?}, ip_forward ${ip_forward:-?}, bridge and rules restored"
}

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# tiny_config CORPUS OUT_DIR MAX_STEPS SAVE_EVERY: a small model of the demo, quick on 2 cores.
tiny_config() {
  cat <<EOF
{
  "corpora": ["$1"], "valid_size": 0, "test_size": 0,
  "tokenizer_model": "bpe", "tokenizer_vocab": 600, "tokenizer_min_frequency": 1,
  "d_model": 64, "heads": 2, "layers_enc": 1, "layers_dec": 1, "d_ff": 128,
  "d_c": 32, "d_cq": 32, "d_rope": 8, "dropout": 0.0, "max_len": 48, "max_tokens": 512,
  "lr": 0.003, "warmup_steps": 5, "max_steps": $3, "max_time": 600, "log_every": 2,
  "valid_every": 0, "save_every": $4, "keep_checkpoints": 2, "seed": 7, "out_dir": "$2", "threads": 1
}
EOF
}

client() { timeout 120 "$bin/mt-client" --server "127.0.0.1:$port" --timeout 60 "$@"; }
admin() { client --token-file "$work/secrets/admin-token" "$@"; }
translate_hello() { client --token-file "$work/secrets/token" --beam 1 translate "hello"; }
offline_hello() { printf 'hello\n' | "$bin/mt-translate" --model "$1" --beam 1 --quiet; }
http_get() { # http_get PATH: the body of a GET on the published HTTP port
  /usr/bin/python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
    "http://127.0.0.1:$http_port$1"
}

# =====================================================================================================
stage install
[ "$(uname -s)" = Linux ] || skip "not Linux"
if [ "$(id -u)" != 0 ] && ! docker info >/dev/null 2>&1; then
  skip "not root and no docker daemon this user can reach"
fi
for p in mt-client mt-train mt-translate; do
  [ -x "$bin/$p" ] || fail "$bin/$p is missing: build first (cmake --build $build)"
done
if [ "$(id -u)" = 0 ]; then
  MT_INSTALL_DOCKER=1 bash deploy/install-deps.sh
fi
command -v dockerd >/dev/null || docker info >/dev/null 2>&1 || skip "no dockerd on this machine"
version=$(docker compose version --short)
case "$version" in v[2-9].* | [2-9].* | v[1-9][0-9].* | [1-9][0-9].*) ;; *) fail "docker compose is not v2: $version" ;; esac
ok "docker compose $version"
# Compose's exit codes are what the rest relies on: a good file passes, a bad one fails.
printf 'services:\n  a:\n    image: x\n' >"$work/good.yml"
printf 'services:\n  a:\n    image: x\n    no_such_key: 1\n' >"$work/bad.yml"
docker compose -f "$work/good.yml" config -q || fail "docker compose config failed on a valid file"
if docker compose -f "$work/bad.yml" config -q 2>/dev/null; then fail "docker compose config exits 0 on an invalid file"; fi
if docker compose -f "$work/missing.yml" config -q 2>/dev/null; then fail "docker compose config exits 0 on a missing file"; fi
ok "docker compose exits 0 on a valid file, non-zero on an invalid or missing one"

# =====================================================================================================
stage dockerd
start_dockerd
mkdir -p "$work/secrets"
chmod 700 "$work/secrets"
for f in token admin-token cluster-token; do
  openssl rand -hex 24 >"$work/secrets/$f"
  chmod 600 "$work/secrets/$f"
  chown 10001:10001 "$work/secrets/$f" # the image's user `mt` reads its secrets
done
export MT_SECRETS_DIR=$work/secrets MT_IMAGE=$image MT_CUDA_IMAGE=$cuda_image MT_BIND=127.0.0.1
export MT_PORT=${MT_PORT:-$(free_port)} MT_HTTP_PORT=${MT_HTTP_PORT:-$(free_port)}
port=$MT_PORT
http_port=$MT_HTTP_PORT
docker compose -f deploy/docker-compose.yml -f deploy/docker-compose.gpu.yml config -q ||
  fail "docker compose config rejects docker-compose.yml + docker-compose.gpu.yml"
ok "docker-compose.yml and docker-compose.yml + docker-compose.gpu.yml validate (compose config)"

# =====================================================================================================
stage base
bash deploy/docker/base-image.sh

# =====================================================================================================
stage image
quietly "docker compose build server" compose build --build-arg JOBS="$(nproc)" server
size_mb() { docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.0f MB", $1 / 1e6 }'; }
ok "image $image built: $(size_mb "$image") (base microtensor-base:bookworm $(size_mb microtensor-base:bookworm))"
[ "$(docker run --rm --entrypoint id "$image" -u)" = 10001 ] || fail "$image does not run as uid 10001"
ok "$image runs as the unprivileged user mt (uid 10001)"

cuda_build=${MT_CUDA_BUILD_DIR:-}
if [ -z "$cuda_build" ]; then
  for d in "$build" build-cuda; do
    if [ -f "$d/lib/libmicrotensor.so" ] && ldd "$d/lib/libmicrotensor.so" | grep libcudart >/dev/null; then
      cuda_build=$d
      break
    fi
  done
fi
if [ -n "$cuda_build" ]; then
  stage cuda-image
  quietly "deploy/docker/cuda-context.sh $cuda_build" bash deploy/docker/cuda-context.sh "$cuda_build"
  quietly "docker compose -f docker-compose.yml -f docker-compose.gpu.yml build server" \
    docker compose -p "$project" -f deploy/docker-compose.yml -f deploy/docker-compose.gpu.yml build server
  for lib in libcudart.so libcublas.so libcublasLt.so libnccl.so; do
    docker run --rm --entrypoint sh "$cuda_image" -c "ldconfig -p | grep -q '$lib'" ||
      fail "$cuda_image carries no $lib"
  done
  ok "image $cuda_image built from $cuda_build: $(size_mb "$cuda_image"), with the CUDA runtime, cuBLAS, cuBLASLt and NCCL (not run: no GPU here)"
else
  say "  CUDA image: not built (no host build with the CUDA backend; deploy/docker/cuda-context.sh makes one where nvcc is)"
fi

# =====================================================================================================
stage up
# The model served from the start: the tiny demo config, trained on the host for a few seconds
# (enough steps to say something for "hello": an empty translation fails the test).
tiny_config "$root/deploy/demo/corpus.tsv" "$work/model0" 40 0 >"$work/model0.json"
quietly "mt-train of the model to serve" "$bin/mt-train" --config "$work/model0.json"
compose_up=1
quietly "docker compose create" compose create
quietly "docker compose cp model.mt" compose cp "$work/model0/model.mt" server:/data/models/model.mt
quietly "docker compose cp corpus.tsv" compose cp deploy/demo/corpus.tsv server:/data/corpora/demo.tsv
ok "model (host mt-train) and demo corpus copied into the models and corpora volumes"
quietly "docker compose up -d --wait" timeout 240 docker compose -p "$project" -f deploy/docker-compose.yml up -d --wait
[ "$(docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q server)")" = healthy ] || fail "server not healthy"
ok "docker compose up -d --wait: server healthy (mt-client health inside the container)"
for w in worker-1 worker-2; do
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q "$w")")" = healthy ] || fail "$w not healthy"
done
ok "worker-1 and worker-2 healthy (their /healthz), started after the server was healthy"
[ "$(compose exec -T server id -u)" = 10001 ] || fail "mt-server does not run as uid 10001"
[ "$(compose exec -T server sh -c 'cat /proc/1/comm')" = docker-init ] || fail "init: true gave no init as PID 1"
ok "mt-server runs as uid 10001 under docker-init (init: true)"

# =====================================================================================================
stage translate
want=$(offline_hello "$work/model0/model.mt")
got=$(translate_hello) || fail "mt-client translate through 127.0.0.1:$port"
[ -n "$got" ] || fail "empty translation of hello"
[ "$got" = "$want" ] || fail "hello -> '$got' through the container, '$want' from mt-translate"
ok "translate \"hello\" through published port $port with the host's mt-client: '$got' (= mt-translate's)"
rc=0
env -u MT_TOKEN "$bin/mt-client" --server "127.0.0.1:$port" --timeout 10 translate "hello" >/dev/null 2>&1 || rc=$?
[ "$rc" = 4 ] || fail "a client with no token: exit $rc, not 4 (token refused)"
ok "a client with no token is refused, exit 4 (the token is the compose secret)"
http_get /healthz | grep . >/dev/null || fail "/healthz on $http_port"
http_get /metrics | grep '^mt_request_latency_seconds' >/dev/null || fail "/metrics on $http_port has no mt_ series"
ok "/healthz and /metrics through published port $http_port"

# =====================================================================================================
stage train
# 1000 steps (about 20 s on the 3 ranks of a 2-core machine): the kill below must land while the job
# runs; at 100 steps the whole job once took 2 s and ended between the last status and the kill.
tiny_config corpora/demo.tsv runs/cluster 1000 5 >"$work/train.json"
nodes3() { [ "$(admin train status | grep -cE '^node (server|worker-1|worker-2) ')" -ge 3 ]; }
wait_for 120 "worker-1 and worker-2 joined to the server" nodes3
# --min-nodes 2: the job takes every joined node (3), and goes on with 2 after losing one.
# train watch from before the start (a subscription covers the runs that start later), so that it
# sees the job's end however fast the job is.
timeout 600 "$bin/mt-client" --server "127.0.0.1:$port" --token-file "$work/secrets/admin-token" \
  train watch >"$work/watch.log" 2>&1 &
watch_pid=$!
subscribed() { grep -q '^mt-client: training ' "$work/watch.log"; }
wait_for 30 "train watch subscribed" subscribed
quietly "train start --min-nodes 2" admin train start --config "$work/train.json" --min-nodes 2
ranks3() { admin train status | grep '^cluster: .*(world 3,' >/dev/null; }
wait_for 120 "a job over the ranks of server, worker-1 and worker-2" ranks3
sum_of() { compose exec -T "$1" sha256sum /data/corpora/demo.tsv | cut -d' ' -f1; }
want_sum=$(sum_of server)
for w in worker-1 worker-2; do
  [ "$(sum_of "$w")" = "$want_sum" ] || fail "$w did not receive the corpus (its /data/corpora/demo.tsv differs or is missing)"
done
ok "train start --min-nodes 2: a job over 3 ranks (server, worker-1, worker-2); both workers received the corpus (same sha256)"
ckpt() { compose exec -T server sh -c 'ls /data/runs/cluster/checkpoints/step-*.mt'; }
wait_for 300 "a first checkpoint of the distributed run" ckpt
admin train status | grep '^state: TRAIN_RUNNING' >/dev/null || fail "the run was not running any more before the kill"
compose kill worker-2 >/dev/null 2>&1
ok "worker-2's container killed after checkpoint $(ckpt | head -1 | xargs -n1 basename)"
restarted() { compose exec -T server grep -q '"event":"start".*"resumed_from":"' /data/runs/cluster/metrics.jsonl; }
wait_for 180 "the job restarting from the checkpoint without worker-2" restarted
ok "the job restarted from its last checkpoint on the nodes left"
run=runs/cluster
wait "$watch_pid" || {
  tail -5 "$work/watch.log"
  fail "train watch did not end with the run done"
}
admin train status | grep '^state: TRAIN_DONE$' >/dev/null || fail "train status after watch: $(admin train status | head -1)"
ok "train watch: the run ended done, state TRAIN_DONE ($(grep -c '"event":"step"' "$work/watch.log") step events)"

# =====================================================================================================
stage promote
quietly "docker compose cp the trained model" compose cp "server:/data/$run/model.mt" "$work/trained.mt"
admin train promote "$run/model.mt" >"$work/promote.log" || fail "train promote $run/model.mt"
grep -q "^serving: .*$run/model.mt" "$work/promote.log" && grep -q '^model_generation: 2$' "$work/promote.log" ||
  fail "promote answered: $(cat "$work/promote.log")"
want=$(offline_hello "$work/trained.mt")
got=$(translate_hello) || fail "translate after promote"
[ -n "$got" ] || fail "empty translation of hello after promote"
[ "$got" = "$want" ] || fail "after promote: hello -> '$got' through the container, '$want' from mt-translate"
ok "train promote $run/model.mt: model generation 2; \"hello\" -> '$got' with it (= mt-translate's on the same file)"

# =====================================================================================================
stage down
if [ "${MT_COMPOSE_TEST_KEEP:-0}" = 1 ]; then
  say "  MT_COMPOSE_TEST_KEEP=1: left up (docker compose -p $project -f deploy/docker-compose.yml down -v)"
else
  timeout 120 docker compose -p "$project" -f deploy/docker-compose.yml down -v --timeout 30 >/dev/null 2>&1 ||
    fail "docker compose down -v"
  compose_up=0
  [ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$project")" ] || fail "containers left after down"
  [ -z "$(docker volume ls -q --filter "label=com.docker.compose.project=$project")" ] || fail "volumes left after down -v"
  ok "docker compose down -v: no container, network or volume of the project left"
fi
stage_end
exit 0
