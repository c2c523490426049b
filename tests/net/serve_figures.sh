#!/usr/bin/env bash
# serve_figures.sh [MODEL.mt] — the service figures of the mt-server issue, measured side by side:
#   A  mt-translate on the sentences, in batch (the anchor)
#   B  mt-server, 64 connections sending one sentence per request (mt-bench serve)
#   C  the same with batching off (--max-batch-tokens 1)
# It prints B/A (goal >= 0.8) and B/C (goal >= 5) with p50/p99 latency, and A/C (the most batching can
# gain here), medians of MT_SERVE_ROUNDS (3) interleaved rounds, and a final JSON line. It is a
# benchmark: it fails on lost requests, errors or a tool failure, never on a ratio (the figures depend
# on the machine and the model; the tiny fixture model, used when no MODEL is given, decodes so fast
# that per-request overhead dominates — measure with a real model).
# Sentences: the English side of $MT_DATA_DIR/tatoeba.en-it.tsv.zst when present, else the tests'
# tiny corpus repeated. Run by ctest as bench_serve_figures (label bench) with the fixture model;
# standalone: MT_SOURCE_DIR=. MT_BUILD_DIR=build bash tests/net/serve_figures.sh model.mt
source "$(dirname "$0")/lib.sh"
needs_model

if [ -n "${1:-}" ]; then
  model=$1
else
  fixture=$B/tests/net-fixture
  mkdir -p "$fixture"
  bash "$S/tests/net/make_model.sh" "$fixture/tiny.mt"
  rc=$?
  [ "$rc" = 77 ] && exit 77
  [ "$rc" = 0 ] || fail "make_model.sh failed ($rc)"
  model=$fixture/tiny.mt
fi
n=${MT_THROUGHPUT_SENTENCES:-2048}

if [ -f "${MT_DATA_DIR:-}/tatoeba.en-it.tsv.zst" ]; then
  zstd -dc "$MT_DATA_DIR/tatoeba.en-it.tsv.zst" | cut -f1 | head -n "$n" >"$work/in.txt"
else
  for ((i = 0; i < n; i += 80)); do cut -f1 "$S/tests/net/data/tiny.en-it.tsv"; done | head -n "$n" >"$work/in.txt"
fi
n=$(wc -l <"$work/in.txt")

beam=${MT_SERVE_BEAM:-1}        # both sides decode the same way: greedy by default
rounds=${MT_SERVE_ROUNDS:-3}    # A, B, C interleaved this many times; medians reported (a shared
                                # 2-core machine varies by +-15% from one run to the next)

offline() { # sets SPS: mt-translate on the sentences, whole process timed, its default batch of 32
  local t0 t1
  t0=$(date +%s.%N)
  "$B/bin/mt-translate" --model "$model" --beam "$beam" <"$work/in.txt" >"$work/offline.out" 2>"$work/offline.err" ||
    { cat "$work/offline.err"; fail "mt-translate"; }
  t1=$(date +%s.%N)
  [ "$(wc -l <"$work/offline.out")" = "$n" ] || fail "mt-translate: $(wc -l <"$work/offline.out") lines for $n"
  SPS=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", n / (b - a) }')
  echo "mt-translate: $n sentences, $SPS sentences/s"
}

serve() { # serve NAME SERVER-ARGS...: sets SPS P50 P99
  local name=$1
  shift
  start_server "$name" "$B/bin/mt-server" --model "$model" "$@"
  local pid=$PID requests=$((n / 64))
  "$B/bin/mt-bench" serve --server "$ADDR" --connections 64 --requests "$requests" --input "$work/in.txt" --beam "$beam" \
    >"$work/$name.out" 2>&1 || { cat "$work/$name.out"; fail "mt-bench serve ($name)"; }
  cat "$work/$name.out"
  local json
  json=$(tail -n 1 "$work/$name.out")
  SPS=$(sed 's/.*"sentences_per_s":\([0-9.]*\).*/\1/' <<<"$json")
  P50=$(sed 's/.*"p50_ms":\([0-9.]*\).*/\1/' <<<"$json")
  P99=$(sed 's/.*"p99_ms":\([0-9.]*\).*/\1/' <<<"$json")
  stop_server "$pid"
  [ "$STOP_RC" = 0 ] || fail "$name: exit status $STOP_RC"
}

median() { tr ' ' '\n' <<<"$*" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

A="" B_="" B50="" B99="" C="" C50="" C99=""
for ((r = 1; r <= rounds; r++)); do
  echo "== round $r of $rounds =="
  offline
  A="$A $SPS"
  serve batched
  B_="$B_ $SPS" B50="$B50 $P50" B99="$B99 $P99"
  serve unbatched --max-batch-tokens 1
  C="$C $SPS" C50="$C50 $P50" C99="$C99 $P99"
done
anchor=$(median $A)
b_sps=$(median $B_) b_p50=$(median $B50) b_p99=$(median $B99)
u_sps=$(median $C) u_p50=$(median $C50) u_p99=$(median $C99)

r_anchor=$(awk -v a="$b_sps" -v b="$anchor" 'BEGIN { printf "%.3f", a / b }')
r_off=$(awk -v a="$b_sps" -v b="$u_sps" 'BEGIN { printf "%.3f", a / b }')
r_bound=$(awk -v a="$anchor" -v b="$u_sps" 'BEGIN { printf "%.3f", a / b }')
printf '\n%-34s %12s %10s %10s   (medians of %d rounds)\n' "" "sentences/s" "p50 ms" "p99 ms" "$rounds"
printf '%-34s %12s %10s %10s\n' "mt-translate (batch, offline)" "$anchor" "-" "-"
printf '%-34s %12s %10s %10s\n' "mt-server, 64 conns, batching" "$b_sps" "$b_p50" "$b_p99"
printf '%-34s %12s %10s %10s\n' "mt-server, 64 conns, no batching" "$u_sps" "$u_p50" "$u_p99"
printf 'served / offline = %s (goal >= 0.8); batching on / off = %s (goal >= 5)\n' "$r_anchor" "$r_off"
printf 'offline / no batching = %s (what batching can gain with this model on this machine)\n' "$r_bound"
echo "{\"bench\":\"serve_figures\",\"rounds\":$rounds,\"sentences\":$n,\"offline_sps\":$anchor,\"served_sps\":$b_sps,\"served_p50_ms\":$b_p50,\"served_p99_ms\":$b_p99,\"unbatched_sps\":$u_sps,\"unbatched_p50_ms\":$u_p50,\"unbatched_p99_ms\":$u_p99,\"ratio_to_offline\":$r_anchor,\"ratio_to_unbatched\":$r_off,\"offline_to_unbatched\":$r_bound}"
