#!/usr/bin/python3
"""quant_ref.py - the reference int8 implementation of the engine's dynamic quantization (engine/nn/
quant.c, engine/cpu/qgemm.c), in PyTorch on the model of model.py, and its greedy search.

    quant_ref.py MODEL_INT8.mt SRC.txt QMAX OUT.txt

Reads an int8 .mt file (every linear weight I8 (n, k) plus "<name>_scale" F32 (n)), builds model.py's
Transformer on the dequantized weights (scale * q), and replaces every linear layer (and the tied
output projection) by the int8 computation, written independently of the engine:

    x row r:  sx = max|x[r]| / QMAX,  qx = round_half_even(x[r] / sx) clamped to [-QMAX, QMAX]
              (an all-zero row: sx = 0, qx = 0)
    y[r, i] = float32(sum_j qx[j] q[i, j]) * sx * scale[i] + b[i]     (integer sums exact)

The tied output projection quantizes the f32 embedding per row with QMAX 127. SRC.txt holds one
source per line as space-separated ids (without [EOS]); OUT.txt gets the greedy output ids per line
(without [SOS]/[EOS]), with the engine's length limit, never choosing [PAD] or [SOS]. MHA models only: the engine decodes MLA with
absorbed projections, which this reference does not model.
"""
import math
import os
import sys

import torch
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as ref  # noqa: E402

LEN_EXTRA = 10  # MT_DECODE_LEN_EXTRA
LEN_RATIO = 1.5  # the default max_len_ratio


def quantize_rows(x, qmax):
    """(sx (R,), qx (R, K) float64 holding integers) of x (R, K) float32."""
    amax = x.abs().amax(dim=1)
    sx = amax / qmax
    safe = torch.where(sx > 0, sx, torch.ones_like(sx))
    q = torch.round(x / safe[:, None]).clamp(-qmax, qmax)
    q = torch.where(sx[:, None] > 0, q, torch.zeros_like(q))
    return sx, q.to(torch.float64)


class QLinear(torch.nn.Module):
    def __init__(self, q, scale, bias, qmax):
        super().__init__()
        self.q, self.scale, self.bias, self.qmax = q.to(torch.float64), scale, bias, qmax

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(torch.float32)
        sx, qx = quantize_rows(x2, self.qmax)
        acc = (qx @ self.q.t()).to(torch.float32)  # exact integers, rounded to f32 as the engine does
        y = acc * sx[:, None] * self.scale[None, :]
        if self.bias is not None:
            y = y + self.bias[None, :]
        return y.reshape(*shape[:-1], -1)


def build_int8(path, qmax):
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("quantization") != "int8":
        raise SystemExit(f"{path}: not an int8 model")
    cfg = ref.Config(__import__("json").loads(meta["config"]))
    if cfg.attention != "mha":
        raise SystemExit(f"{path}: the reference covers MHA models only")
    state, qs = {}, {}
    for k, v in tensors.items():
        if k.endswith("_scale"):
            continue
        if v.dtype == torch.int8:
            s = tensors[k + "_scale"]
            state[k] = s[:, None] * v.to(torch.float32)
            qs[k] = (v, s)
        else:
            state[k] = v
    m = ref.Transformer(cfg)
    m.load_state_dict(state, strict=True)
    for name, mod in list(m.named_modules()):
        for cname, child in list(mod.named_children()):
            full = f"{name}.{cname}" if name else cname
            if isinstance(child, torch.nn.Linear):
                q, s = qs[full + ".weight"]
                setattr(mod, cname, QLinear(q, s, child.bias.detach() if child.bias is not None else None, qmax))
    if cfg.tie_embeddings:
        sx, qe = quantize_rows(m.embed.weight.detach(), 127)
        out = QLinear(qe, sx, None, qmax)
    else:
        out = m.out_proj
    m.logits = lambda h: out(h)
    return m.eval(), cfg


def greedy(m, cfg, src):
    L = len(src)
    maxo = min(int(math.floor(LEN_RATIO * L)) + LEN_EXTRA, cfg.max_len - 1)
    s = torch.tensor([src[: cfg.max_len - 1] + [cfg.eos_id]], dtype=torch.int64)
    mask = m.src_mask(s)
    mem = m.encode(s, mask)
    out = []
    while len(out) < maxo:
        tgt = torch.tensor([[cfg.sos_id] + out], dtype=torch.int64)
        logits = m.logits(m.decode(tgt, mem, mask))[0, -1].clone()
        logits[cfg.pad_id] = logits[cfg.sos_id] = float("-inf")  # never emitted (as the engine)
        nxt = int(logits.argmax())
        if nxt == cfg.eos_id:
            break
        out.append(nxt)
    return out


def main():
    if len(sys.argv) != 5:
        raise SystemExit("usage: quant_ref.py MODEL_INT8.mt SRC.txt QMAX OUT.txt")
    torch.set_num_threads(1)
    m, cfg = build_int8(sys.argv[1], int(sys.argv[3]))
    with open(sys.argv[2]) as f:
        srcs = [[int(t) for t in line.split()] for line in f]
    with torch.no_grad(), open(sys.argv[4], "w") as f:
        for s in srcs:
            f.write(" ".join(str(t) for t in greedy(m, cfg, s)) + "\n")


if __name__ == "__main__":
    main()
