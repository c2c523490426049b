#!/usr/bin/env bash
# quality.sh — the quality figure, side by side on this machine: the engine (mt-train) and the PyTorch
# reference (train.py) each train for the same budget of training seconds on the same data
# ($MT_DATA_DIR: Tatoeba + Europarl, deterministic per-corpus split, the same BPE tokenizer), one
# after the other; then mt-translate decodes both models with the same beam search, and BLEU/chrF
# (sacrebleu-compatible) are reported on the held-out Tatoeba test split (corpus 0) and the Europarl one.
#
#   tests/reference/quality.sh [SECONDS]       default 3600 each (2 hours in all); run from the checkout
#   MT_QUALITY_DIR=dir  MT_BUILD_DIR=build  MT_TORCH_PYTHON=/usr/bin/python3  MT_DATA_DIR=DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-3600}
build=${MT_BUILD_DIR:-build}
py=${MT_TORCH_PYTHON:-/usr/bin/python3}
data=${MT_DATA_DIR:-../shared/data}
out=${MT_QUALITY_DIR:-runs/quality-$secs}
cfg=deploy/configs/en-it.json
mkdir -p "$out"
corpora="$data/tatoeba.en-it.tsv.zst,$data/europarl-v7-lowercased.en-it.tsv.zst"
common=(--config "$cfg" --corpora "$corpora" --max_time "$secs" --max_steps 100000000)

echo "== split and tokenizer =="
"$build/bin/mt-train" "${common[@]}" --out_dir "$out/engine" --dump-split "$out/split"
echo "== engine: $secs s of training =="
"$build/bin/mt-train" "${common[@]}" --out_dir "$out/engine" 2> >(tee "$out/engine.log" >&2)
echo "== PyTorch reference: $secs s of training =="
OMP_NUM_THREADS=2 "$py" tests/reference/train.py --split "$out/split" --out "$out/torch" --max-time "$secs" \
  2> >(tee "$out/torch.log" >&2)

score() { # model test-tsv -> "BLEU chrF"
  cut -f1 "$2" > "$out/src.txt"
  cut -f2 "$2" > "$out/ref.txt"
  "$build/bin/mt-translate" --model "$1" --beam 4 --ref "$out/ref.txt" -q < "$out/src.txt" > "$out/hyp.txt" \
    2> "$out/score.txt"
  sed -n 's/BLEU = \([0-9.]*\)  chrF = \([0-9.]*\).*/\1 \2/p' "$out/score.txt"
}
steps() { grep -o '"step": *[0-9]*' "$1" | tail -1 | tr -dc '0-9'; }
printf '\n%-34s %10s %10s %8s %8s %8s %8s\n' "model (best valid loss)" "steps" "train s" "Tat BLEU" "Tat chrF" \
  "Eur BLEU" "Eur chrF"
for side in engine torch; do
  read -r tb tc < <(score "$out/$side/best.mt" "$out/split/test.0.tsv")
  read -r eb ec < <(score "$out/$side/best.mt" "$out/split/test.1.tsv")
  printf '%-34s %10s %10s %8s %8s %8s %8s\n' "$side" "$(steps "$out/$side/metrics.jsonl")" "$secs" "$tb" "$tc" "$eb" "$ec"
  echo "{\"quality\": \"$side\", \"seconds\": $secs, \"tatoeba_bleu\": $tb, \"tatoeba_chrf\": $tc, \"europarl_bleu\": $eb, \"europarl_chrf\": $ec}" >> "$out/summary.jsonl"
done
echo "(beam 4, held-out test splits of 1000 pairs each; details in $out)"
