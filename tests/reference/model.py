#!/usr/bin/python3
"""model.py — the MicroTensor translation model in PyTorch: the reference the C engine is held to.

The same encoder–decoder Transformer with Multi-head Latent Attention as engine/nn/model.h (equations
there), written the plain PyTorch way, loading a MicroTensor `.mt` file (safetensors: weights under
the same state_dict names, the config as JSON in __metadata__.config).

Subcommands (used by tests/model and the benchmarks):
  check       --model M.mt --data D.safetensors [--tol 1e-4]
              D holds a batch (src, tgt_in, tgt_out: int32) and the engine's results for it
              (logits, loss, grad.<param>); prints the relative errors, exits 1 above tol.
  check-adamw --model M.mt --data D.safetensors --hparams JSON
              runs the same AdamW steps (schedule, clipping) on the batch and compares the losses
              with D's "losses".
Only torch, numpy and safetensors are needed (Debian's python3-torch under /usr/bin/python3).
"""
import argparse
import json
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

MASK_NEG = -1e9
LATENT_EPS = 1e-6


class Config:
    def __init__(self, d):
        self.cross_rope = True  # files written before the key existed
        self.__dict__.update(d)
        self.d_head = self.d_model // self.heads


def load_mt(path):
    """(config, state_dict, metadata) of a .mt file."""
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "microtensor":
        raise SystemExit(f"{path}: not a MicroTensor model file")
    cfg = Config(json.loads(meta["config"]))
    state = load_file(path)
    state = {k: v for k, v in state.items() if not k.startswith("optimizer.")}
    return cfg, state, meta


def rope(x, pos0, base, on=True):
    """Real RoPE on x (..., T, D): pairs (2i, 2i+1) at position pos0+t rotated by (pos0+t)*base^(-2i/D);
    x itself when not on (cross-attention of a model with cross_rope false)."""
    if not on:
        return x
    T, D = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / torch.pow(torch.tensor(base, dtype=torch.float32),
                               torch.arange(0, D, 2, dtype=torch.float32) / D)
    pos = torch.arange(pos0, pos0 + T, dtype=torch.float32)
    ang = pos[:, None] * inv_freq[None, :]  # (T, D/2)
    c, s = torch.cos(ang), torch.sin(ang)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return out.flatten(-2)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def lin(i, o, bias=False):
    return nn.Linear(i, o, bias=bias)


def attend(q, k, v, mask, causal, scale):
    s = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        s = s + mask
    if causal:
        Tq, Tk = s.shape[-2], s.shape[-1]
        cm = torch.ones(Tq, Tk, dtype=torch.bool).triu(1 + Tk - Tq)
        s = s.masked_fill(cm, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


class MLA(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        H, dh, dr = c.heads, c.d_head, c.d_rope
        self.w_dq = lin(c.d_model, c.d_cq)
        self.q_norm = RMSNorm(c.d_cq, LATENT_EPS)
        self.w_uq = lin(c.d_cq, H * dh)
        self.w_qr = lin(c.d_cq, H * dr)
        self.w_dkv = lin(c.d_model, c.d_c)
        self.kv_norm = RMSNorm(c.d_c, LATENT_EPS)
        self.w_uk = lin(c.d_c, H * dh)
        self.w_uv = lin(c.d_c, H * dh)
        self.w_kr = lin(c.d_model, dr)
        self.w_o = lin(H * dh, c.d_model)

    def forward(self, h, mem, mask, causal, pos0=0, rot=True):
        c = self.c
        B, T, _ = h.shape
        S = mem.shape[1]
        H, dh, dr = c.heads, c.d_head, c.d_rope
        cq = self.q_norm(self.w_dq(h))
        qn = self.w_uq(cq).view(B, T, H, dh).transpose(1, 2)
        qr = rope(self.w_qr(cq).view(B, T, H, dr).transpose(1, 2), pos0, c.rope_base, rot)
        ckv = self.kv_norm(self.w_dkv(mem))
        kn = self.w_uk(ckv).view(B, S, H, dh).transpose(1, 2)
        v = self.w_uv(ckv).view(B, S, H, dh).transpose(1, 2)
        kr = rope(self.w_kr(mem).view(B, 1, S, dr), 0, c.rope_base, rot).expand(B, H, S, dr)
        q = torch.cat([qn, qr], -1)
        k = torch.cat([kn, kr], -1)
        o = attend(q, k, v, mask, causal, 1.0 / math.sqrt(dh + dr))
        return self.w_o(o.transpose(1, 2).reshape(B, T, H * dh))


class MHA(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        d = c.d_model
        self.w_q, self.w_k, self.w_v, self.w_o = lin(d, d), lin(d, d), lin(d, d), lin(d, d)

    def forward(self, h, mem, mask, causal, pos0=0, rot=True):
        c = self.c
        B, T, _ = h.shape
        S = mem.shape[1]
        H, dh = c.heads, c.d_head
        q = rope(self.w_q(h).view(B, T, H, dh).transpose(1, 2), pos0, c.rope_base, rot)
        k = rope(self.w_k(mem).view(B, S, H, dh).transpose(1, 2), 0, c.rope_base, rot)
        v = self.w_v(mem).view(B, S, H, dh).transpose(1, 2)
        o = attend(q, k, v, mask, causal, 1.0 / math.sqrt(dh))
        return self.w_o(o.transpose(1, 2).reshape(B, T, H * dh))


def make_attn(c):
    return MLA(c) if c.attention == "mla" else MHA(c)


class FFN(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc1 = lin(c.d_model, c.d_ff, True)
        self.fc2 = lin(c.d_ff, c.d_model, True)
        self.act = F.gelu if c.activation == "gelu" else F.relu

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.self_attn = make_attn(c)
        self.norm2 = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.ffn = FFN(c)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, mask):
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, mask, False))
        return x + self.drop(self.ffn(self.norm2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.self_attn = make_attn(c)
        self.norm2 = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.cross_attn = make_attn(c)
        self.norm3 = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.ffn = FFN(c)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, y, mem, mask):
        h = self.norm1(y)
        y = y + self.drop(self.self_attn(h, h, None, True))
        y = y + self.drop(self.cross_attn(self.norm2(y), mem, mask, False, rot=self.cross_attn.c.cross_rope))
        return y + self.drop(self.ffn(self.norm3(y)))


class Stack(nn.Module):
    def __init__(self, c, layer, n):
        super().__init__()
        self.layers = nn.ModuleList([layer(c) for _ in range(n)])
        self.norm = nn.LayerNorm(c.d_model, eps=c.norm_eps)


class Transformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.encoder = Stack(c, EncoderLayer, c.layers_enc)
        self.decoder = Stack(c, DecoderLayer, c.layers_dec)
        if not c.tie_embeddings:
            self.out_proj = lin(c.d_model, c.vocab_size)
        self.drop = nn.Dropout(c.dropout)

    def init_weights(self, seed=0):
        """Xavier-uniform matrices and embeddings, ones/zeros for norms and biases (as the engine)."""
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if p.dim() == 2:
                    a = math.sqrt(6.0 / (p.shape[0] + p.shape[1]))
                    p.uniform_(-a, a, generator=g)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    p.fill_(1.0)

    def src_mask(self, src):
        return torch.where(src == self.c.pad_id, MASK_NEG, 0.0).to(torch.float32)[:, None, None, :]

    def emb(self, ids):
        return self.drop(self.embed(ids) * math.sqrt(self.c.d_model))

    def encode(self, src, mask):
        x = self.emb(src)
        for layer in self.encoder.layers:
            x = layer(x, mask)
        return self.encoder.norm(x)

    def decode(self, tgt, mem, mask):
        y = self.emb(tgt)
        for layer in self.decoder.layers:
            y = layer(y, mem, mask)
        return self.decoder.norm(y)

    def logits(self, h):
        w = self.out_proj.weight if not self.c.tie_embeddings else self.embed.weight
        return h @ w.t()

    def forward(self, src, tgt_in):
        mask = self.src_mask(src)
        return self.logits(self.decode(tgt_in, self.encode(src, mask), mask))

    def loss(self, src, tgt_in, tgt_out, label_smoothing=0.0):
        logits = self(src, tgt_in)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1).long(),
                               ignore_index=self.c.pad_id, label_smoothing=label_smoothing), logits


def build(path):
    cfg, state, meta = load_mt(path)
    m = Transformer(cfg)
    m.load_state_dict(state, strict=True)
    return m, cfg, meta


def rel_err(a, b):
    """max |a - b| / max |b| (b the engine's value)."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def lr_at(step, hp):
    w = hp["warmup_steps"]
    lr = hp["lr"]
    if w > 0:
        lr *= min(step / w, math.sqrt(w / step))
    return lr


def cmd_check(a):
    m, cfg, _ = build(a.model)
    m.train(False)
    d = load_file(a.data)
    src, tgt_in, tgt_out = d["src"].long(), d["tgt_in"].long(), d["tgt_out"]
    ls = float(d["label_smoothing"].item()) if "label_smoothing" in d else 0.0
    loss, logits = m.loss(src, tgt_in, tgt_out, ls)
    loss.backward()
    worst = 0.0
    errs = {"logits": rel_err(logits, d["logits"]), "loss": rel_err(loss, d["loss"])}
    for name, p in m.named_parameters():
        key = "grad." + name
        if key not in d:
            print(f"missing gradient {name} in the engine's results")
            return 1
        errs[key] = rel_err(p.grad if p.grad is not None else torch.zeros_like(p), d[key])
    for k, e in errs.items():
        worst = max(worst, e)
    bad = {k: e for k, e in errs.items() if e > a.tol}
    print(json.dumps({"logits": errs["logits"], "loss": errs["loss"], "worst": worst,
                      "n_grads": len(errs) - 2, "over_tol": bad}))
    return 1 if bad else 0


def cmd_check_adamw(a):
    m, cfg, _ = build(a.model)
    m.train(False)
    hp = json.loads(a.hparams)
    d = load_file(a.data)
    src, tgt_in, tgt_out = d["src"].long(), d["tgt_in"].long(), d["tgt_out"]
    decay = [p for n, p in m.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in m.named_parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])
    want = d["losses"].double().tolist()
    got = []
    for step in range(1, len(want) + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, hp)
        opt.zero_grad()
        loss, _ = m.loss(src, tgt_in, tgt_out, hp["label_smoothing"])
        loss.backward()
        if hp["clip_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(m.parameters(), hp["clip_norm"])
        opt.step()
        got.append(loss.item())
    errs = [abs(x - y) / max(abs(y), 1e-30) for x, y in zip(got, want)]
    print(json.dumps({"torch": got, "engine": want, "rel_err": errs}))
    return 1 if max(errs) > a.tol else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--model", required=True)
    c.add_argument("--data", required=True)
    c.add_argument("--tol", type=float, default=1e-4)
    c = sub.add_parser("check-adamw")
    c.add_argument("--model", required=True)
    c.add_argument("--data", required=True)
    c.add_argument("--hparams", required=True)
    c.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    torch.set_num_threads(1)
    return {"check": cmd_check, "check-adamw": cmd_check_adamw}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
