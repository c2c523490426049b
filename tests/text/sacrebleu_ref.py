#!/usr/bin/env python3
"""sacrebleu_ref.py — reference values for test_text_sacrebleu: sacrebleu's corpus BLEU (13a, exp
smoothing) and chrF2, the 13a tokenization of every line, and CER/WER by the torchmetrics
definitions (torchmetrics itself when importable, else the same definition written here).

usage: sacrebleu_ref.py HYPS REFS OUT.json TOK13A_OUT
"""
import json
import sys

import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a


def read_lines(path):
    text = open(path, encoding="utf-8", newline="").read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
        prev = cur
    return prev[len(b)]


def main():
    hyps, refs = read_lines(sys.argv[1]), read_lines(sys.argv[2])
    bleu = sacrebleu.corpus_bleu(hyps, [refs])
    chrf = sacrebleu.corpus_chrf(hyps, [refs])
    try:
        from torchmetrics.functional.text import char_error_rate, word_error_rate

        cer = float(char_error_rate(hyps, refs))
        wer = float(word_error_rate(hyps, refs))
        cer_impl = "torchmetrics"
    except Exception:  # torchmetrics not installed: its definition, by hand
        ce = sum(edit_distance(list(h), list(r)) for h, r in zip(hyps, refs))
        we = sum(edit_distance(h.split(), r.split()) for h, r in zip(hyps, refs))
        cer = ce / sum(len(r) for r in refs)
        wer = we / sum(len(r.split()) for r in refs)
        cer_impl = "python (torchmetrics definition)"
    tok = Tokenizer13a()
    with open(sys.argv[4], "w", encoding="utf-8", newline="") as f:
        for s in hyps + refs:
            f.write(tok(s.rstrip()) + "\n")
    json.dump({"bleu": bleu.score, "counts": bleu.counts, "totals": bleu.totals, "sys_len": bleu.sys_len,
               "ref_len": bleu.ref_len, "chrf": chrf.score, "cer": cer, "wer": wer, "cer_impl": cer_impl,
               "sacrebleu": sacrebleu.__version__}, open(sys.argv[3], "w"))


if __name__ == "__main__":
    main()
