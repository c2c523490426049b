#!/usr/bin/python3
"""bench.py — the PyTorch side of `mt-bench train` and `mt-bench decode`.

  train  --model M.mt --batch B.safetensors --threads 2 --steps 6 --warmup 2 [--label-smoothing 0.1]
         AdamW training steps (dropout as the config says, clipping 1.0) on the batch; prints one JSON
         line {"tokens_per_s", "step_s", "loss", "peak_rss_mb"}.
  decode --model M.mt --src S.safetensors --threads 2 --mode recompute|kvcache [--max-len-ratio 1.5] [--int8]
         greedy decoding of the sources (int32 "src" (B, S) padded, "src_len" (B)):
           recompute  the whole prefix through the decoder at every step (the original MicroTensor loop)
           kvcache    keys/values of every layer cached, one position per step
         --int8: PyTorch's dynamic quantization first (torch.ao.quantization.quantize_dynamic of every
           nn.Linear to qint8: the original design's way; the tied output projection is a matmul with the
           embedding, not an nn.Linear, so it stays f32)
         prints {"tokens", "seconds", "tokens_per_s", "peak_rss_mb"}.
  ct2    --ct2 DIR --src S.safetensors --out OUT.txt --threads 2 --beam K --batch B --compute-type float32|int8
         [--max-len-ratio 1.5] [--max-len N] [--repeat 2] [--pad-id 0]
         CTranslate2 (the model ct2_export.py wrote from the same .mt file) on the same sources, in calls
         of B sentences, intra_threads = --threads, inter_threads 1; the engine's rules: [EOS] appended
         to the source, [PAD] and [SOS] never generated, [EOS] allowed first, length penalty 0 (beam
         hypotheses ranked by log probability, as the engine with alpha 0), at most
         min(floor(ratio x len) + 10, max_len - 1) tokens (the longest of the call's sentences); writes
         each sentence's output ids, one line each, cut at its own limit, to OUT (the best repetition's);
         prints {"tokens", "seconds", "tokens_per_s", "peak_rss_mb"} (tokens: those generated, [EOS]
         included).
The model comes from the engine's .mt file (model.py), so both sides run the same weights.
"""
import argparse
import json
import math
import resource
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import model as M


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cmd_train(a):
    m, cfg, _ = M.build(a.model)
    m.train(True)
    d = load_file(a.batch)
    src, tgt_in, tgt_out = d["src"].long(), d["tgt_in"].long(), d["tgt_out"]
    tokens = int((src != cfg.pad_id).sum() + (tgt_out != cfg.pad_id).sum())
    decay = [p for p in m.parameters() if p.dim() == 2]
    no_decay = [p for p in m.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.98), eps=1e-9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = m.loss(src, tgt_in, tgt_out, a.label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    dt = (time.perf_counter() - t0) / a.steps
    print(json.dumps({"tokens_per_s": tokens / dt, "step_s": dt, "loss": loss, "tokens": tokens,
                      "peak_rss_mb": peak_rss_mb(), "torch": torch.__version__}))
    return 0


def max_out(src_len, ratio, max_len):
    return [min(int(math.floor(ratio * L)) + 10, max_len - 1) for L in src_len]


@torch.no_grad()
def greedy_recompute(m, src, src_len, ratio):
    """The whole prefix through the decoder at every step."""
    c = m.c
    mask = m.src_mask(src)
    mem = m.encode(src, mask)
    B = src.shape[0]
    limit = max_out(src_len, ratio, c.max_len)
    ys = torch.full((B, 1), c.sos_id, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    tokens = 0
    for t in range(max(limit)):
        logits = m.logits(m.decode(ys, mem, mask)[:, -1])
        logits[:, c.pad_id] = float("-inf")
        logits[:, c.sos_id] = float("-inf")
        nxt = logits.argmax(-1)
        for b in range(B):
            if not done[b]:
                tokens += 1
                if nxt[b].item() == c.eos_id or t + 1 >= limit[b]:
                    done[b] = True
        ys = torch.cat([ys, nxt[:, None]], 1)
        if bool(done.all()):
            break
    return tokens


class KVAttn:
    """Incremental self-attention of one layer: caches the (rotated) keys and values of every head."""

    def __init__(self):
        self.k = None
        self.v = None


def attn_kv_step(att, h, t, cache, mem=None, mask=None):
    """One query position of an attention module at position t; cache holds this layer's k/v."""
    c = att.c
    B = h.shape[0]
    H, dh = c.heads, c.d_head
    rot = mem is None or c.cross_rope
    if isinstance(att, M.MLA):
        dr = c.d_rope
        cq = att.q_norm(att.w_dq(h))
        qn = att.w_uq(cq).view(B, 1, H, dh).transpose(1, 2)
        qr = M.rope(att.w_qr(cq).view(B, 1, H, dr).transpose(1, 2), t, c.rope_base, rot)
        q = torch.cat([qn, qr], -1)
        if mem is None:
            ckv = att.kv_norm(att.w_dkv(h))
            kn = att.w_uk(ckv).view(B, 1, H, dh).transpose(1, 2)
            v = att.w_uv(ckv).view(B, 1, H, dh).transpose(1, 2)
            kr = M.rope(att.w_kr(h).view(B, 1, 1, dr), t, c.rope_base).expand(B, H, 1, dr)
            k = torch.cat([kn, kr], -1)
            cache.k = k if cache.k is None else torch.cat([cache.k, k], 2)
            cache.v = v if cache.v is None else torch.cat([cache.v, v], 2)
        scale = 1.0 / math.sqrt(dh + dr)
    else:
        q = M.rope(att.w_q(h).view(B, 1, H, dh).transpose(1, 2), t, c.rope_base, rot)
        if mem is None:
            k = M.rope(att.w_k(h).view(B, 1, H, dh).transpose(1, 2), t, c.rope_base)
            v = att.w_v(h).view(B, 1, H, dh).transpose(1, 2)
            cache.k = k if cache.k is None else torch.cat([cache.k, k], 2)
            cache.v = v if cache.v is None else torch.cat([cache.v, v], 2)
        scale = 1.0 / math.sqrt(dh)
    o = M.attend(q, cache.k, cache.v, mask, False, scale)
    return att.w_o(o.transpose(1, 2).reshape(B, 1, H * dh))


def cross_kv(att, mem):
    """The encoder side's keys and values of a cross-attention module, once."""
    c = att.c
    B, S, _ = mem.shape
    H, dh = c.heads, c.d_head
    cache = KVAttn()
    if isinstance(att, M.MLA):
        dr = c.d_rope
        ckv = att.kv_norm(att.w_dkv(mem))
        kn = att.w_uk(ckv).view(B, S, H, dh).transpose(1, 2)
        cache.v = att.w_uv(ckv).view(B, S, H, dh).transpose(1, 2)
        kr = M.rope(att.w_kr(mem).view(B, 1, S, dr), 0, c.rope_base, c.cross_rope).expand(B, H, S, dr)
        cache.k = torch.cat([kn, kr], -1)
    else:
        cache.k = M.rope(att.w_k(mem).view(B, S, H, dh).transpose(1, 2), 0, c.rope_base, c.cross_rope)
        cache.v = att.w_v(mem).view(B, S, H, dh).transpose(1, 2)
    return cache


@torch.no_grad()
def greedy_kvcache(m, src, src_len, ratio, outs=None):
    """Greedy search with cached keys/values; the count of generated tokens ([EOS] included). With outs
    (a list), each row's output ids (without [EOS]) are appended to it."""
    c = m.c
    mask = m.src_mask(src)
    mem = m.encode(src, mask)
    B = src.shape[0]
    limit = max_out(src_len, ratio, c.max_len)
    layers = m.decoder.layers
    self_c = [KVAttn() for _ in layers]
    cross_c = [cross_kv(L.cross_attn, mem) for L in layers]
    y = torch.full((B, 1), c.sos_id, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    rows = [[] for _ in range(B)]
    tokens = 0
    for t in range(max(limit)):
        x = m.emb(y)
        for i, L in enumerate(layers):
            x = x + attn_kv_step(L.self_attn, L.norm1(x), t, self_c[i])
            x = x + attn_kv_step(L.cross_attn, L.norm2(x), t, cross_c[i], mem=mem, mask=mask)
            x = x + L.ffn(L.norm3(x))
        logits = m.logits(m.decoder.norm(x))[:, -1]
        logits[:, c.pad_id] = float("-inf")
        logits[:, c.sos_id] = float("-inf")
        nxt = logits.argmax(-1)
        for b in range(B):
            if not done[b]:
                tokens += 1
                if nxt[b].item() == c.eos_id or t + 1 >= limit[b]:
                    done[b] = True
                if nxt[b].item() != c.eos_id:
                    rows[b].append(nxt[b].item())
        y = nxt[:, None]
        if bool(done.all()):
            break
    if outs is not None:
        outs.extend(rows)
    return tokens


def cmd_decode(a):
    m, cfg, _ = M.build(a.model)
    m.train(False)
    if a.int8:
        m = torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8)
    d = load_file(a.src)
    src = d["src"].long()
    src_len = d["src_len"].tolist()
    fn = greedy_recompute if a.mode == "recompute" else greedy_kvcache
    fn(m, src[:2], src_len[:2], a.max_len_ratio)  # warm-up
    best = None
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        tokens = fn(m, src, src_len, a.max_len_ratio)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    print(json.dumps({"tokens": tokens, "seconds": best, "tokens_per_s": tokens / best, "peak_rss_mb": peak_rss_mb(),
                      "torch": torch.__version__}))
    return 0


def cmd_ct2(a):
    import ctranslate2

    with open(a.ct2 + "/shared_vocabulary.json", encoding="utf-8") as f:
        vocab = json.load(f)
    ids = {t: i for i, t in enumerate(vocab)}
    with open(a.ct2 + "/config.json", encoding="utf-8") as f:
        conf = json.load(f)
    eos, sos = conf["eos_token"], conf["decoder_start_token"]
    pad = vocab[a.pad_id]  # never generated, like [SOS]
    tr = ctranslate2.Translator(a.ct2, device="cpu", compute_type=a.compute_type, intra_threads=a.threads,
                                inter_threads=1)
    d = load_file(a.src)
    src, src_len = d["src"].tolist(), d["src_len"].tolist()
    sents = [[vocab[i] for i in row[:n]] + [eos] for row, n in zip(src, src_len)]
    limit = [min(int(math.floor(a.max_len_ratio * n)) + 10, a.max_len - 1) for n in src_len]
    cap = list(limit)  # the call's limit, the longest of its sentences'

    def run(lo, hi):
        for i in range(lo, hi):
            cap[i] = max(limit[lo:hi])
        return tr.translate_batch(sents[lo:hi], beam_size=a.beam, max_batch_size=0, length_penalty=0.0,
                                  min_decoding_length=0, max_decoding_length=max(limit[lo:hi]),
                                  suppress_sequences=[[pad], [sos]])

    run(0, min(2, len(sents)))  # warm-up
    best, outs = None, None
    for _ in range(a.repeat):
        res, dt = [], 0.0
        for lo in range(0, len(sents), a.batch):
            t0 = time.perf_counter()
            r = run(lo, min(lo + a.batch, len(sents)))
            dt += time.perf_counter() - t0
            res.extend(h.hypotheses[0] for h in r)
        if best is None or dt < best:
            best, outs = dt, res
    tokens = sum(len(h) + (1 if len(h) < cap[i] else 0) for i, h in enumerate(outs))
    with open(a.out, "w", encoding="utf-8") as f:  # each output as the engine's limit would cut it
        for i, h in enumerate(outs):
            f.write(" ".join(str(ids[t]) for t in h[:limit[i]]) + "\n")
    print(json.dumps({"tokens": tokens, "seconds": best, "tokens_per_s": tokens / best, "peak_rss_mb": peak_rss_mb(),
                      "ctranslate2": ctranslate2.__version__}))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", required=True)
    t.add_argument("--batch", required=True)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--steps", type=int, default=6)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--label-smoothing", type=float, default=0.1)
    d = sub.add_parser("decode")
    d.add_argument("--model", required=True)
    d.add_argument("--src", required=True)
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--mode", choices=["recompute", "kvcache"], required=True)
    d.add_argument("--max-len-ratio", type=float, default=1.5)
    d.add_argument("--repeat", type=int, default=1)
    d.add_argument("--int8", action="store_true")
    c = sub.add_parser("ct2")
    c.add_argument("--ct2", required=True)
    c.add_argument("--src", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--beam", type=int, default=1)
    c.add_argument("--batch", type=int, default=32)
    c.add_argument("--compute-type", choices=["float32", "int8"], default="float32")
    c.add_argument("--max-len-ratio", type=float, default=1.5)
    c.add_argument("--max-len", type=int, default=256)
    c.add_argument("--repeat", type=int, default=2)
    c.add_argument("--pad-id", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    return {"train": cmd_train, "decode": cmd_decode, "ct2": cmd_ct2}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
