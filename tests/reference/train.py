#!/usr/bin/python3
"""train.py — the PyTorch reference trainer, for the side-by-side quality figure.

Trains tests/reference/model.py's Transformer on the split that `mt-train --dump-split DIR` wrote
(train.tsv, valid.tsv, tokenizer.json and the resolved config.json: the same data, the same
tokenizer ids through the `tokenizers` package, the same hyper-parameters), for a budget of training
seconds, the way PyTorch users write it: token-budget batches of similar lengths shuffled per epoch,
AdamW with warm-up and inverse-square-root decay, clipping, label smoothing, dropout. It then writes
the weights as a MicroTensor .mt file (safetensors + __metadata__), so the engine's mt-translate
decodes both models with the same search and the comparison is about training only.

  train.py --split DIR --out DIR [--max-time 3600] [--threads 2]
Writes OUT/model.mt (last), OUT/best.mt (best validation loss) and OUT/metrics.jsonl.
"""
import argparse
import hashlib
import json
import math
import os
import random
import sys
import time

import torch
from tokenizers import Tokenizer

import model as M

MODEL_KEYS = ["vocab_size", "d_model", "heads", "layers_enc", "layers_dec", "d_ff", "d_c", "d_cq", "d_rope",
              "attention", "activation", "dropout", "max_len", "rope_base", "cross_rope", "tie_embeddings", "norm_eps",
              "pad_id", "sos_id", "eos_id"]


def read_tsv(path):
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            s, t = line.rstrip("\n").split("\t")
            pairs.append((s, t))
    return pairs


def encode(tok, pairs, c):
    """(src, tgt) id lists framed like the engine: src = x [EOS], tgt = [SOS] y [EOS]; too long: dropped."""
    srcs = tok.encode_batch([p[0] for p in pairs], add_special_tokens=False)
    tgts = tok.encode_batch([p[1] for p in pairs], add_special_tokens=False)
    out = []
    for s, t in zip(srcs, tgts):
        s = s.ids + [c.eos_id]
        t = [c.sos_id] + t.ids + [c.eos_id]
        if len(s) <= c.max_len and len(t) <= c.max_len:
            out.append((s, t))
    return out


def batches(examples, max_tokens, rng, shuffle=True):
    """Token-budget batches (B * (S + T) <= max_tokens with padding) of similar lengths."""
    idx = list(range(len(examples)))
    if shuffle:
        rng.shuffle(idx)
    idx.sort(key=lambda i: (len(examples[i][0]) + len(examples[i][1])))
    out, cur, smax, tmax = [], [], 0, 0
    for i in idx:
        s, t = examples[i]
        ns, nt = max(smax, len(s)), max(tmax, len(t) - 1)
        if cur and (len(cur) + 1) * (ns + nt) > max_tokens:
            out.append(cur)
            cur, ns, nt = [], len(s), len(t) - 1
        cur.append(i)
        smax, tmax = ns, nt
    if cur:
        out.append(cur)
    if shuffle:
        rng.shuffle(out)
    return out


def tensors(examples, idx, pad):
    S = max(len(examples[i][0]) for i in idx)
    T = max(len(examples[i][1]) for i in idx) - 1
    src = torch.full((len(idx), S), pad, dtype=torch.long)
    tin = torch.full((len(idx), T), pad, dtype=torch.long)
    tout = torch.full((len(idx), T), pad, dtype=torch.long)
    for r, i in enumerate(idx):
        s, t = examples[i]
        src[r, :len(s)] = torch.tensor(s)
        tin[r, :len(t) - 1] = torch.tensor(t[:-1])
        tout[r, :len(t) - 1] = torch.tensor(t[1:])
    return src, tin, tout


def save_mt(path, m, model_cfg, tok_json):
    """A MicroTensor model file: safetensors with the engine's __metadata__ and payload SHA-256."""
    items = [(n, t.detach().contiguous().to(torch.float32).numpy()) for n, t in m.state_dict().items()]
    payload = b"".join(a.tobytes() for _, a in items)
    header = {"__metadata__": {"format": "microtensor", "format_version": "1", "kind": "model",
                               "config": json.dumps(model_cfg), "tokenizer": tok_json,
                               "sha256": hashlib.sha256(payload).hexdigest()}}
    off = 0
    for n, a in items:
        header[n] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-time", type=float, default=None, help="training seconds (default: the config's)")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.split, "config.json")))
    torch.set_num_threads(a.threads or cfg.get("threads") or 2)
    torch.manual_seed(cfg["seed"])
    rng = random.Random(cfg["seed"])
    tok_path = os.path.join(a.split, "tokenizer.json")
    tok = Tokenizer.from_file(tok_path)
    tok_json = open(tok_path, encoding="utf-8").read()
    model_cfg = {k: cfg[k] for k in MODEL_KEYS}
    c = M.Config(model_cfg)
    train = encode(tok, read_tsv(os.path.join(a.split, "train.tsv")), c)
    valid = encode(tok, read_tsv(os.path.join(a.split, "valid.tsv")), c)
    m = M.Transformer(c)
    m.init_weights(cfg["seed"])
    decay = [p for p in m.parameters() if p.dim() == 2]
    no_decay = [p for p in m.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["adam_eps"])
    hp = {"lr": cfg["lr"], "warmup_steps": cfg["warmup_steps"]}
    os.makedirs(a.out, exist_ok=True)
    log = open(os.path.join(a.out, "metrics.jsonl"), "w")
    budget = a.max_time if a.max_time is not None else cfg["max_time"]
    step, elapsed, best = 0, 0.0, None
    iv_loss, iv_tok, iv_t, epoch = 0.0, 0, time.perf_counter(), 0
    print(f"train.py: {sum(p.numel() for p in m.parameters())} parameters, {len(train)} training pairs, "
          f"budget {budget:.0f} s", file=sys.stderr)

    def validate():
        m.train(False)
        tot, n = 0.0, 0
        with torch.no_grad():
            for b in batches(valid, cfg["max_tokens"], rng, shuffle=False):
                src, tin, tout = tensors(valid, b, c.pad_id)
                loss, _ = m.loss(src, tin, tout, 0.0)
                k = int((tout != c.pad_id).sum())
                tot += loss.item() * k
                n += k
        m.train(True)
        return tot / max(n, 1)

    done = False
    while not done:
        for b in batches(train, cfg["max_tokens"], rng):
            t0 = time.perf_counter()
            m.train(True)
            src, tin, tout = tensors(train, b, c.pad_id)
            step += 1
            lr = M.lr_at(step, hp)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss, _ = m.loss(src, tin, tout, cfg["label_smoothing"])
            loss.backward()
            if cfg["clip_norm"] > 0:
                torch.nn.utils.clip_grad_norm_(m.parameters(), cfg["clip_norm"])
            opt.step()
            elapsed += time.perf_counter() - t0
            iv_loss += loss.item()
            iv_tok += int((src != c.pad_id).sum() + (tout != c.pad_id).sum())
            if step % cfg["log_every"] == 0:
                t = time.perf_counter()
                ev = {"event": "step", "step": step, "loss": iv_loss / cfg["log_every"], "lr": lr,
                      "tokens_per_s": iv_tok / (t - iv_t), "elapsed_s": elapsed, "epoch": epoch}
                print(json.dumps(ev), file=log, flush=True)
                print(f"step {step} | loss {ev['loss']:.4f} | {ev['tokens_per_s']:.0f} tok/s | "
                      f"{elapsed:.0f}/{budget:.0f} s", file=sys.stderr, flush=True)
                iv_loss, iv_tok, iv_t = 0.0, 0, t
            if cfg["valid_every"] and step % cfg["valid_every"] == 0:
                v = validate()
                improved = best is None or v < best
                if improved:
                    best = v
                    save_mt(os.path.join(a.out, "best.mt"), m, model_cfg, tok_json)
                print(json.dumps({"event": "valid", "step": step, "valid_loss": v, "best": improved}), file=log,
                      flush=True)
                print(f"valid @ {step}: loss {v:.4f}{' (best)' if improved else ''}", file=sys.stderr, flush=True)
                iv_t = time.perf_counter()
            if elapsed >= budget or step >= cfg["max_steps"]:
                done = True
                break
        epoch += 1
    v = validate()
    if best is None or v < best:
        best = v
        save_mt(os.path.join(a.out, "best.mt"), m, model_cfg, tok_json)
    save_mt(os.path.join(a.out, "model.mt"), m, model_cfg, tok_json)
    print(json.dumps({"event": "done", "step": step, "elapsed_s": elapsed, "valid_loss": v, "best_valid_loss": best}),
          file=log, flush=True)
    print(f"done: {step} steps in {elapsed:.0f} s of training, valid loss {v:.4f} (best {best:.4f})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
