#!/usr/bin/python3
"""quant_quality.py - what int8 costs in translation quality, on the held-out test splits, with the same
search on both sides (greedy): the engine's dynamic int8 (mt-quantize) against the same model in f32,
and the original design's way, PyTorch's quantize_dynamic of the reference model (model.py), against
PyTorch f32, side by side in one run. (`mt-bench decode --int8 --model M --split DIR` scores the
engine's f32 and int8 with beam 4, next to their speed.)

    quant_quality.py --model M.mt --split DIR [--int8 M8.mt] [--threads 2] [--sents N] [--build build]

DIR is what `mt-train --dump-split DIR` wrote (test.0.tsv = Tatoeba, test.1.tsv = Europarl, source TAB
reference). Without --int8 the int8 file is made with BUILD/bin/mt-quantize next to the model. Decoded
greedily: the engine through the Python binding of the ABI (libmicrotensor of BUILD); PyTorch with cached
keys/values (bench.py's loop, the engine's output limit), f32 and quantize_dynamic (every nn.Linear to qint8; the tied output projection is not an
nn.Linear and stays f32). Tokenization, detokenization and BLEU/chrF (sacrebleu's defaults) are the
engine's, for every row. Prints a table, the int8 - f32 differences, and one JSON line.
Needs torch and safetensors: run it with the bench venv's python (tests/bench/venv.sh) or /usr/bin/python3.
"""
import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))


def read_split(path, n):
    src, ref = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 2:
                continue
            src.append(cols[0])
            ref.append(cols[1])
            if n and len(src) >= n:
                break
    return src, ref


def torch_greedy(m, tok, texts, ratio, batch=32):
    """PyTorch greedy outputs of texts (bench.greedy_kvcache), detokenized by the engine's tokenizer."""
    import bench

    c = m.c
    out = []
    for lo in range(0, len(texts), batch):
        ids = [tok.encode(t)[: c.max_len - 1] for t in texts[lo:lo + batch]]
        S = max(len(x) for x in ids) + 1
        src = torch.full((len(ids), S), c.pad_id, dtype=torch.long)
        for b, x in enumerate(ids):
            src[b, :len(x)] = torch.tensor(x, dtype=torch.long)
            src[b, len(x)] = c.eos_id
        rows = []
        bench.greedy_kvcache(m, src, [len(x) for x in ids], ratio, outs=rows)
        out.extend(tok.decode(r) for r in rows)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sents", type=int, default=0, help="first N pairs of each test split (0: all)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--ratio", type=float, default=1.5)
    a = ap.parse_args()

    if not os.environ.get("MT_LIBRARY"):
        os.environ["MT_LIBRARY"] = os.path.join(a.build, "lib", "libmicrotensor.so.0")
    import microtensor as mt
    import model as M

    q8 = a.int8
    if not q8:
        q8 = os.path.splitext(a.model)[0] + ".int8.mt"
        subprocess.run([os.path.join(a.build, "bin", "mt-quantize"), a.model, q8], check=True)
    torch.set_num_threads(a.threads)
    splits = [("tatoeba", os.path.join(a.split, "test.0.tsv")), ("europarl", os.path.join(a.split, "test.1.tsv"))]
    data = {name: read_split(p, a.sents) for name, p in splits}

    f32, i8 = mt.Model(a.model), mt.Model(q8)
    tok = f32.tokenizer
    rows = {}  # system -> {split: (bleu, chrf)}
    secs = {}

    def score(system, fn):
        t0 = time.perf_counter()
        rows[system] = {}
        for name, (src, ref) in data.items():
            hyp = fn(src)
            rows[system][name] = (mt.bleu(hyp, ref), mt.chrf(hyp, ref))
        secs[system] = time.perf_counter() - t0
        print(f"  {system}: {secs[system]:.1f} s", file=sys.stderr)

    for label, model in (("f32", f32), ("int8", i8)):
        tr = mt.Translator(model, threads=a.threads)
        score(f"engine {label} beam 1", lambda s, tr=tr: tr.translate(s, beam=1, max_len_ratio=a.ratio))
    ref_m, _, _ = M.build(a.model)
    ref_m.train(False)
    score("pytorch f32 beam 1", lambda s: torch_greedy(ref_m, tok, s, a.ratio))
    with warnings.catch_warnings():  # PyTorch 2.x marks torch.ao.quantization deprecated; it is the anchor here
        warnings.simplefilter("ignore")
        qd = torch.ao.quantization.quantize_dynamic(ref_m, {torch.nn.Linear}, dtype=torch.qint8)
    score("pytorch quantize_dynamic beam 1", lambda s: torch_greedy(qd, tok, s, a.ratio))

    size = os.path.getsize(q8) / os.path.getsize(a.model)
    print(f"\nmodel {a.model}; int8 file {q8}: {size:.2f} of the f32 file's size; "
          f"{len(data['tatoeba'][0])} + {len(data['europarl'][0])} test pairs; torch {torch.__version__}")
    print(f"{'system':34s} {'Tat BLEU':>9s} {'Tat chrF':>9s} {'Eur BLEU':>9s} {'Eur chrF':>9s}")

    def line(name, v):
        print(f"{name:34s} " + " ".join(f"{x:9.2f}" for x in v))

    deltas = {}
    for a32, a8, label in (("engine f32 beam 1", "engine int8 beam 1", "engine int8 - f32, greedy"),
                           ("pytorch f32 beam 1", "pytorch quantize_dynamic beam 1", "pytorch int8 - f32, greedy")):
        for s in (a32, a8):
            line(s, [x for n in ("tatoeba", "europarl") for x in rows[s][n]])
        d = [rows[a8][n][k] - rows[a32][n][k] for n in ("tatoeba", "europarl") for k in (0, 1)]
        line("  " + label, d)
        deltas[label] = d
    print(json.dumps({"quant_quality": a.model, "size_ratio": size, "scores": rows, "deltas": deltas,
                      "seconds": secs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
