#!/usr/bin/env bash
# test_tools.sh — mt-train and mt-translate from the command line: help, config errors naming the key,
# a short training on the demo corpus (model, checkpoints, metrics lines), Ctrl-C saving a checkpoint
# (exit 130) and --resume auto continuing from it, translation of a file with an empty line and with
# --ref (BLEU/chrF on stderr), mt-quantize (an int8 model translates; training from it is refused),
# and a missing or corrupt model file as a clear error.
set -euo pipefail
bin="$MT_BUILD_DIR/bin"
src="$MT_SOURCE_DIR"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mt-tools-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cat > "$tmp/cfg.json" <<JSON
{"corpora": ["$src/deploy/demo/corpus.tsv"], "valid_size": 20, "test_size": 0, "tokenizer_vocab": 300,
 "tokenizer_min_frequency": 1, "d_model": 32, "heads": 2, "layers_enc": 1, "layers_dec": 1, "d_ff": 64,
 "d_c": 16, "d_cq": 16, "d_rope": 4, "max_len": 48, "max_tokens": 800, "lr": 0.004, "warmup_steps": 10,
 "max_steps": 30, "log_every": 10, "valid_every": 15, "valid_sentences": 10, "save_every": 10,
 "keep_checkpoints": 2, "threads": 2, "out_dir": "$tmp/run"}
JSON

"$bin/mt-train" --help > "$tmp/help"
grep -q -- "--d_model" "$tmp/help" || fail "mt-train --help does not list the keys"
if "$bin/mt-train" --config "$tmp/cfg.json" --d_modle 64 2> "$tmp/err"; then fail "an unknown key was accepted"; fi
grep -q "d_modle" "$tmp/err" || fail "the error does not name the key: $(cat "$tmp/err")"
if "$bin/mt-train" --config "$tmp/cfg.json" --d_model 30 --heads 4 2> "$tmp/err"; then fail "d_model 30, 4 heads accepted"; fi
grep -q "d_model (30) is not divisible by heads (4)" "$tmp/err" || fail "inconsistent values: $(cat "$tmp/err")"

# A corpus path starting with $MT_DATA_DIR/ is under the real corpora's directory.
MT_DATA_DIR="$src/deploy/demo" "$bin/mt-train" --config "$tmp/cfg.json" --corpora '$MT_DATA_DIR/corpus.tsv' \
  --dump-split "$tmp/split" 2> "$tmp/err" || fail "a \$MT_DATA_DIR corpus: $(cat "$tmp/err")"
[ -s "$tmp/split/train.tsv" ] || fail "no split of the \$MT_DATA_DIR corpus"
if MT_DATA_DIR="$tmp/nowhere" "$bin/mt-train" --config "$tmp/cfg.json" --corpora '$MT_DATA_DIR/corpus.tsv' \
  --dump-split "$tmp/split2" 2> "$tmp/err"; then fail "a missing \$MT_DATA_DIR corpus was accepted"; fi
grep -q "$tmp/nowhere/corpus.tsv" "$tmp/err" || fail "the error does not name the expanded path: $(cat "$tmp/err")"

"$bin/mt-train" --config "$tmp/cfg.json" 2> "$tmp/train.log" || { cat "$tmp/train.log"; fail "mt-train"; }
grep -q "Finished after 30 steps" "$tmp/train.log" || fail "no summary: $(cat "$tmp/train.log")"
[ -f "$tmp/run/model.mt" ] || fail "no model.mt"
[ "$(ls "$tmp/run/checkpoints" | wc -l)" = 2 ] || fail "keep_checkpoints 2: $(ls "$tmp/run/checkpoints")"
[ "$(grep -c '"event":"step"' "$tmp/run/metrics.jsonl")" = 3 ] || fail "metrics lines"
grep -q '"event":"valid".*"bleu"' "$tmp/run/metrics.jsonl" || fail "no validation BLEU in the metrics"

# Ctrl-C: a checkpoint, exit 130; then --resume auto goes on from it.
"$bin/mt-train" --config "$tmp/cfg.json" --out_dir "$tmp/int" --max_steps 100000 --log_every 1 --save_every 0 \
  2> "$tmp/int.log" &
pid=$!
for _ in $(seq 600); do
  grep -q '"event":"step","step":3,' "$tmp/int/metrics.jsonl" 2>/dev/null && break
  sleep 0.1
done
kill -INT "$pid"
set +e
wait "$pid"
rc=$?
set -e
[ "$rc" = 130 ] || fail "Ctrl-C: exit $rc, expected 130 ($(tail -3 "$tmp/int.log"))"
ck=$(ls "$tmp/int/checkpoints")
[ -n "$ck" ] || fail "Ctrl-C saved no checkpoint"
"$bin/mt-train" --config "$tmp/cfg.json" --out_dir "$tmp/int" --resume auto --max_steps 40 2> "$tmp/res.log" ||
  { cat "$tmp/res.log"; fail "resume"; }
grep -q "resumed from .*$ck" "$tmp/res.log" || fail "did not resume from $ck: $(head -2 "$tmp/res.log")"

# Translation: line for line, an empty line stays empty; --ref prints BLEU and chrF.
printf 'hello\n\ngood morning\nthank you\n' > "$tmp/in.txt"
printf 'ciao\n\nbuongiorno\ngrazie\n' > "$tmp/ref.txt"
"$bin/mt-translate" --model "$tmp/run/model.mt" --beam 2 --ref "$tmp/ref.txt" < "$tmp/in.txt" > "$tmp/out.txt" \
  2> "$tmp/tr.log" || { cat "$tmp/tr.log"; fail "mt-translate"; }
[ "$(wc -l < "$tmp/out.txt")" = 4 ] || fail "expected 4 output lines, got $(wc -l < "$tmp/out.txt")"
[ -z "$(sed -n 2p "$tmp/out.txt")" ] || fail "the empty line did not stay empty"
grep -q "BLEU = .*chrF = " "$tmp/tr.log" || fail "no BLEU/chrF: $(cat "$tmp/tr.log")"
# A compressed copy of a checkpoint is a model path too.
zstd -q -o "$tmp/ck.mt.zst" "$tmp/run/checkpoints/$(ls "$tmp/run/checkpoints" | tail -1)"
"$bin/mt-translate" --model "$tmp/ck.mt.zst" -q < "$tmp/in.txt" > /dev/null || fail "a .mt.zst checkpoint"

# mt-quantize: an int8 model translates through the same tools (line for line) and is smaller; training
# from it is refused, naming the file.
"$bin/mt-quantize" "$tmp/run/model.mt" "$tmp/q8.mt" > "$tmp/q.log" || fail "mt-quantize: $(cat "$tmp/q.log")"
[ "$(stat -c %s "$tmp/q8.mt")" -lt "$(stat -c %s "$tmp/run/model.mt")" ] || fail "the int8 file is not smaller"
"$bin/mt-translate" --model "$tmp/q8.mt" -q < "$tmp/in.txt" > "$tmp/q8.txt" || fail "mt-translate of an int8 model"
[ "$(wc -l < "$tmp/q8.txt")" = 4 ] || fail "int8: expected 4 output lines"
if "$bin/mt-train" --config "$tmp/cfg.json" --out_dir "$tmp/q8run" --resume "$tmp/q8.mt" 2> "$tmp/err"; then
  fail "training from an int8 model was accepted"; fi
grep -q "MT_ERR_UNSUPPORTED.*$tmp/q8.mt.*int8\|$tmp/q8.mt.*int8.*inference only" "$tmp/err" || fail "int8 training: $(cat "$tmp/err")"
if "$bin/mt-quantize" "$tmp/none.mt" "$tmp/q9.mt" 2> "$tmp/err"; then fail "mt-quantize of a missing file"; fi
[ ! -e "$tmp/q9.mt" ] || fail "mt-quantize left a file behind"

# Bad model files are errors that say which.
if "$bin/mt-translate" --model "$tmp/none.mt" < "$tmp/in.txt" 2> "$tmp/err"; then fail "missing model accepted"; fi
grep -q "MT_ERR_NOT_FOUND" "$tmp/err" || fail "missing: $(cat "$tmp/err")"
head -c 1000 "$tmp/run/model.mt" > "$tmp/cut.mt"
if "$bin/mt-translate" --model "$tmp/cut.mt" < "$tmp/in.txt" 2> "$tmp/err"; then fail "truncated model accepted"; fi
grep -q "truncated" "$tmp/err" || fail "truncated: $(cat "$tmp/err")"
echo "tools: all checks passed"
