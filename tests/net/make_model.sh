#!/usr/bin/env bash
# make_model.sh — the fixture of the net tests that need a real model: trains a tiny model with
# build/bin/mt-train in a few steps. This is the ONLY place that knows mt-train's command line and
# the training config's keys; adjust it here when they change.
#
#   tests/net/make_model.sh OUT.mt            train (or reuse a cached OUT.mt newer than mt-train)
#   tests/net/make_model.sh --config-only DIR write DIR/corpus.tsv and DIR/train.json (paths relative
#                                             to DIR, for `train start` on a server whose
#                                             --data-root is DIR) and print the config's path
#
# Exit 77 ("needs a trained model: mt-train is not built yet") while mt-train does not exist, so the
# calling tests skip; any other failure is a real failure.
#
# Overrides: MT_TEST_TRAIN_CONFIG (a config to use instead of the one below; its paths must be
# relative to the directory it is copied into), MT_TEST_TRAIN_ARGS (extra mt-train arguments),
# MT_TEST_MODEL_STEPS (default 300).
set -euo pipefail
B=${MT_BUILD_DIR:-$PWD/build}
S=${MT_SOURCE_DIR:-$PWD}
train=$B/bin/mt-train

if [ ! -x "$train" ]; then
  echo "needs a trained model: mt-train is not built yet"
  exit 77
fi

steps=${MT_TEST_MODEL_STEPS:-300}

# The corpus: the project's demo corpus when deploy/demo has one, else the tests' own tiny one.
corpus=""
for c in "$S"/deploy/demo/*.tsv "$S"/deploy/demo/*.tsv.zst; do
  if [ -f "$c" ]; then corpus=$c; break; fi
done
[ -n "$corpus" ] || corpus=$S/tests/net/data/tiny.en-it.tsv

# write_config DIR: DIR/corpus.tsv(.zst) and DIR/train.json, every path relative to DIR.
write_config() {
  local dir=$1 name=corpus.tsv
  [[ $corpus == *.zst ]] && name=corpus.tsv.zst
  mkdir -p "$dir/ck"
  cp "$corpus" "$dir/$name"
  if [ -n "${MT_TEST_TRAIN_CONFIG:-}" ]; then
    cp "$MT_TEST_TRAIN_CONFIG" "$dir/train.json"
    return
  fi
  # ---- ADJUST HERE: the config keys of engine/train/README.md ----
  cat >"$dir/train.json" <<JSON
{
  "corpora": ["$name"],
  "valid": ["$name"],
  "valid_size": 0,
  "test_size": 0,
  "tokenizer_model": "bpe",
  "tokenizer_vocab": 400,
  "tokenizer_min_frequency": 1,
  "d_model": 32,
  "heads": 2,
  "layers_enc": 1,
  "layers_dec": 1,
  "d_ff": 64,
  "d_c": 16,
  "d_cq": 16,
  "d_rope": 8,
  "dropout": 0.0,
  "max_len": 64,
  "max_tokens": 512,
  "lr": 0.003,
  "max_steps": $steps,
  "log_every": 10,
  "valid_every": 0,
  "valid_sentences": 0,
  "save_every": 0,
  "seed": 1,
  "out_dir": "ck"
}
JSON
}

if [ "${1:-}" = "--config-only" ]; then
  write_config "$2"
  echo "$2/train.json"
  exit 0
fi

out=${1:?usage: make_model.sh OUT.mt | --config-only DIR}
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9
if [ -s "$out" ] && [ "$out" -nt "$train" ]; then
  exit 0
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/mt-net-model.XXXXXX")
trap 'rm -rf "$dir"' EXIT
write_config "$dir"
# ---- ADJUST HERE: mt-train's command line ----
# shellcheck disable=SC2086
(cd "$dir" && "$train" --config train.json --max_steps "$steps" --out_dir "$dir/ck" ${MT_TEST_TRAIN_ARGS:-}) \
  >"$dir/train.log" 2>&1 || { tail -n 30 "$dir/train.log" >&2; echo "make_model.sh: mt-train failed" >&2; exit 1; }
[ -s "$dir/ck/model.mt" ] || { echo "make_model.sh: mt-train wrote no model" >&2; exit 1; }
mv "$dir/ck/model.mt" "$out"
