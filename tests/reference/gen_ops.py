#!/usr/bin/python3
"""gen_ops.py — PyTorch golden files for every op of engine/ops (format: tests/reference/README.md).

Each op gets deterministic random cases (its own numpy seed): random shapes with size-1 dims, odd
sizes and broadcasting on either side; inputs never zero and kept inside the op's domain. The
reference is computed by PyTorch in float64 from the float32 inputs, then stored as float32: the
forward output and, for a random upstream gradient gy, the gradient of every float input
(PyTorch autograd).

  /usr/bin/python3 tests/reference/gen_ops.py                  # rewrite tests/reference/golden/
  /usr/bin/python3 tests/reference/gen_ops.py --out DIR        # write elsewhere
  /usr/bin/python3 tests/reference/gen_ops.py --check DIR      # regenerate into DIR and compare with
                                                               # the committed files (exit 0/1; 77 = no torch)
"""
import argparse
import math
import os
import struct
import sys
import zlib

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # the check test skips (ctest SKIP_RETURN_CODE 77)
    print(f"gen_ops.py: PyTorch/numpy not importable ({e}); run it with Debian's /usr/bin/python3", file=sys.stderr)
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
DT_F32, DT_I32 = 0, 3
DIMS = [1, 2, 3, 4, 5, 7, 8, 11]

torch.set_num_threads(1)  # summation order, hence the last bit, independent of the machine


# ---------------------------------------------------------------------------------------------
# random data: never zero, inside the op's domain
# ---------------------------------------------------------------------------------------------

def rshape(rng, lo=1, hi=4, dims=DIMS, max_numel=400):
    """Random shape with lo..hi dims; small enough that a finite-difference check over every element
    stays fast."""
    while True:
        s = tuple(int(rng.choice(dims)) for _ in range(rng.randint(lo, hi + 1)))
        if np.prod(s) <= max_numel:
            return s


def nonzero(rng, shape, lo=0.1, hi=2.0):
    """Uniform magnitude in [lo, hi), random sign: never 0, never close to 0."""
    mag = rng.uniform(lo, hi, size=shape)
    sign = np.where(rng.uniform(size=shape) < 0.5, -1.0, 1.0)
    return (mag * sign).astype(np.float32)


def positive(rng, shape, lo=0.2, hi=3.0):
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def distinct(rng, shape):
    """Distinct values at least 0.02 apart (max/argmax: no ties, finite differences do not cross)."""
    n = int(np.prod(shape)) if len(shape) else 1
    v = (rng.permutation(n) - n / 2.0 + 0.5) * 0.05 + rng.uniform(0.0, 0.01, size=n)
    v = np.where(np.abs(v) < 0.015, v + 0.03, v)
    return v.reshape(shape).astype(np.float32)


def bcast_pair(rng, kind):
    """Two shapes that broadcast: kind in same, a1 (a broadcast), b1, both, rank, scalar."""
    out = rshape(rng, 1, 4)
    def squash(s, p=0.5):
        return tuple(1 if (d > 1 and rng.uniform() < p) else d for d in s)
    if kind == "same":
        return out, out
    if kind == "a1":
        a = squash(out)
        if a == out:
            a = (1,) + out[1:]
        return a, out
    if kind == "b1":
        b = squash(out)
        if b == out:
            b = out[:-1] + (1,)
        return out, b
    if kind == "both":
        out = rshape(rng, 2, 4, [2, 3, 5, 7])
        a = tuple(1 if i % 2 == 0 else d for i, d in enumerate(out))
        b = tuple(d if i % 2 == 0 else 1 for i, d in enumerate(out))
        return a, b
    if kind == "rank":  # b has fewer dims (numpy aligns on the right)
        b = squash(out[-(rng.randint(1, len(out) + 1)):], 0.3)
        return out, b
    if kind == "rank_a":
        a = squash(out[-(rng.randint(1, len(out) + 1)):], 0.3)
        return a, out
    if kind == "scalar":
        return out, ()
    raise ValueError(kind)


# ---------------------------------------------------------------------------------------------
# references (float64 torch)
# ---------------------------------------------------------------------------------------------

def t64(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def ref_rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def ref_rope(x, pos0, base):
    T, D = x.shape[-2], x.shape[-1]
    i = torch.arange(0, D // 2, dtype=torch.float64)
    inv = 1.0 / (base ** (2.0 * i / D))
    ang = (pos0 + torch.arange(T, dtype=torch.float64))[:, None] * inv[None, :]
    c, s = torch.cos(ang), torch.sin(ang)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y0 = x0 * c - x1 * s
    y1 = x0 * s + x1 * c
    return torch.stack([y0, y1], dim=-1).reshape(x.shape)


def ref_attention(q, k, v, mask, causal, scale):
    H, Hk = q.shape[1], k.shape[1]
    g = H // Hk
    kk = k.repeat_interleave(g, dim=1)
    vv = v.repeat_interleave(g, dim=1)
    s = scale * (q @ kk.transpose(-1, -2))
    if mask is not None:
        s = s + mask
    if causal:
        Tq, Tk = q.shape[2], k.shape[2]
        i = torch.arange(Tq)[:, None]
        j = torch.arange(Tk)[None, :]
        s = s.masked_fill(j > i + (Tk - Tq), float("-inf"))
    return torch.softmax(s, dim=-1) @ vv


UNARY = {
    "neg": lambda x: -x, "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "tanh": torch.tanh,
    "sigmoid": torch.sigmoid, "relu": torch.relu, "gelu": F.gelu, "silu": F.silu,
}
SCALAR = {
    "add_scalar": lambda x, s: x + s, "sub_scalar": lambda x, s: x - s, "mul_scalar": lambda x, s: x * s,
    "div_scalar": lambda x, s: x / s, "rsub_scalar": lambda x, s: s - x, "rdiv_scalar": lambda x, s: s / x,
    "pow": lambda x, s: x ** s,
}
BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}


def reference(op, xs, at):
    """The op's output from float64 torch tensors xs and the attributes at."""
    if op in UNARY:
        return UNARY[op](xs[0])
    if op in SCALAR:
        return SCALAR[op](xs[0], at["s"])
    if op in BINARY:
        return BINARY[op](xs[0], xs[1])
    if op in ("sum", "mean", "max"):
        n = int(at["naxes"])
        axes = [int(at[f"ax{i}"]) for i in range(n)] if n else list(range(xs[0].dim()))
        kd = bool(at["keepdim"])
        if op == "sum":
            return xs[0].sum(dim=axes, keepdim=kd)
        if op == "mean":
            return xs[0].mean(dim=axes, keepdim=kd)
        return torch.amax(xs[0], dim=axes, keepdim=kd)
    if op == "argmax":
        return torch.argmax(xs[0], dim=int(at["axis"]), keepdim=bool(at["keepdim"])).to(torch.int32)
    if op == "matmul":
        a, b = xs
        if at["ta"]:
            a = a.transpose(-1, -2)
        if at["tb"]:
            b = b.transpose(-1, -2)
        return a @ b
    if op == "linear":
        return F.linear(xs[0], xs[1], xs[2] if len(xs) > 2 else None)
    if op == "softmax":
        return torch.softmax(xs[0], dim=int(at["axis"]))
    if op == "log_softmax":
        return torch.log_softmax(xs[0], dim=int(at["axis"]))
    if op == "layer_norm":
        C = xs[0].shape[-1]
        return F.layer_norm(xs[0], (C,), xs[1], xs[2] if len(xs) > 2 else None, eps=at["eps"])
    if op == "rms_norm":
        return ref_rms_norm(xs[0], xs[1], at["eps"])
    if op == "embedding":
        return F.embedding(xs[1].long(), xs[0])
    if op == "masked_fill":
        return xs[0].masked_fill(xs[1] != 0, at["value"])
    if op == "cross_entropy":
        return F.cross_entropy(xs[0], xs[1].long(), ignore_index=int(at["ignore_index"]), label_smoothing=at["eps"])
    if op == "attention":
        return ref_attention(xs[0], xs[1], xs[2], xs[3] if len(xs) > 3 else None, bool(at["causal"]), at["scale"])
    if op == "reshape":
        return xs[0].reshape([int(at[f"s{i}"]) for i in range(int(at["ndim"]))])
    if op == "permute":
        return xs[0].permute([int(at[f"p{i}"]) for i in range(xs[0].dim())])
    if op == "transpose":
        return xs[0].transpose(int(at["a0"]), int(at["a1"]))
    if op == "narrow":
        return xs[0].narrow(int(at["axis"]), int(at["start"]), int(at["length"]))
    if op == "concat":
        return torch.cat(xs, dim=int(at["axis"]))
    if op == "rope":
        return ref_rope(xs[0], int(at["pos0"]), at["base"])
    if op == "arange":
        n = int(at["n"])
        return at["start"] + at["step"] * torch.arange(n, dtype=torch.float64)
    raise ValueError(op)


# ---------------------------------------------------------------------------------------------
# cases: (op, attrs, inputs) with inputs numpy float32 / int32 arrays
# ---------------------------------------------------------------------------------------------

def cases_unary(rng, op):
    out = []
    for k in range(6):
        shape = rshape(rng, 1, 4) if k else (1,)
        if op in ("log", "sqrt"):
            x = positive(rng, shape)
        elif op == "exp":
            x = nonzero(rng, shape, 0.05, 3.0)
        elif op == "relu":
            x = nonzero(rng, shape, 0.05, 2.0)
        else:
            x = nonzero(rng, shape, 0.05, 3.0)
        out.append((op, {}, [x]))
    return out


def cases_scalar(rng, op):
    out = []
    for k in range(5):
        shape = rshape(rng, 1, 4)
        if op == "pow":
            x = positive(rng, shape, 0.3, 2.5)
            s = [2.0, 0.5, -1.5, 3.0, 1.7][k]
        elif op == "rdiv_scalar":
            x = nonzero(rng, shape, 0.3, 2.0)
            s = float(np.float32(rng.uniform(-3, 3)))
        else:
            x = nonzero(rng, shape)
            s = float(np.float32(rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 3.0)))
        out.append((op, {"s": s}, [x]))
    return out


def cases_binary(rng, op):
    out = []
    for kind in ["same", "a1", "b1", "both", "rank", "rank_a", "scalar", "same"]:
        sa, sb = bcast_pair(rng, kind)
        a = nonzero(rng, sa)
        b = nonzero(rng, sb, 0.4, 2.0) if op == "div" else nonzero(rng, sb)
        out.append((op, {}, [a, b]))
    return out


def cases_reduce(rng, op):
    out = []
    specs = [((5,), [0], 0), ((3, 7), [1], 1), ((3, 7), [0], 0), ((2, 3, 5), [0, 2], 1), ((4, 1, 5), [-1], 0),
             ((2, 3, 4, 5), [1, 2], 0), ((3, 4, 5), [], 0), ((2, 5, 3), [-3, -1], 1), ((1, 7, 1), [1], 1),
             ((2, 3, 2, 3), [0, 1, 3], 0)]
    for shape, axes, kd in specs:
        x = distinct(rng, shape) if op == "max" else nonzero(rng, shape)
        at = {"naxes": len(axes), "keepdim": kd}
        for i, a in enumerate(axes):
            at[f"ax{i}"] = a
        out.append((op, at, [x]))
    return out


def cases_argmax(rng):
    out = []
    for shape, axis, kd in [((7,), 0, 0), ((3, 5), 1, 0), ((3, 5), 0, 1), ((2, 3, 4), 1, 0), ((2, 3, 4), -1, 1),
                            ((1, 6, 1), 1, 0)]:
        out.append(("argmax", {"axis": axis, "keepdim": kd}, [distinct(rng, shape)]))
    return out


def cases_matmul(rng):
    out = []
    # (a batch, b batch, M, K, N, ta, tb)
    for ab, bb, M, K, N, ta, tb in [((), (), 3, 5, 4, 0, 0), ((), (), 1, 7, 1, 0, 0), ((), (), 5, 3, 2, 1, 0),
                                    ((), (), 4, 6, 3, 0, 1), ((), (), 2, 5, 7, 1, 1), ((3,), (3,), 4, 5, 2, 0, 0),
                                    ((2, 1), (3,), 3, 4, 5, 0, 0), ((4,), (), 3, 5, 6, 0, 0), ((4,), (), 3, 5, 6, 0, 1),
                                    ((), (2,), 3, 4, 5, 0, 0), ((2, 3), (1, 3), 2, 3, 4, 1, 1), ((5,), (), 1, 3, 2, 1, 0),
                                    ((2,), (2,), 3, 8, 3, 1, 0)]:
        sa = ab + ((K, M) if ta else (M, K))
        sb = bb + ((N, K) if tb else (K, N))
        out.append(("matmul", {"ta": ta, "tb": tb}, [nonzero(rng, sa), nonzero(rng, sb)]))
    return out


def cases_linear(rng):
    out = []
    for xs, N, bias in [((4, 5), 3, 1), ((2, 3, 6), 4, 1), ((1, 7), 1, 0), ((3, 2, 2, 5), 3, 0)]:
        K = xs[-1]
        ins = [nonzero(rng, xs), nonzero(rng, (N, K))]
        if bias:
            ins.append(nonzero(rng, (N,)))
        out.append(("linear", {}, ins))
    return out


def cases_softmax(rng, op):
    out = []
    for shape, axis in [((7,), 0), ((3, 5), 1), ((3, 5), 0), ((2, 3, 4), 1), ((2, 1, 6), -1), ((4, 3, 2, 5), -3),
                        ((1, 1), 1), ((2, 33), -1)]:
        out.append((op, {"axis": axis}, [nonzero(rng, shape, 0.05, 3.0)]))
    return out


def cases_layer_norm(rng):
    out = []
    for shape, bias in [((3, 5), 1), ((2, 3, 8), 1), ((4, 7), 0), ((1, 2), 1), ((5, 1, 33), 1), ((9,), 0)]:
        C = shape[-1]
        ins = [nonzero(rng, shape), nonzero(rng, (C,), 0.5, 1.5)]
        if bias:
            ins.append(nonzero(rng, (C,)))
        out.append(("layer_norm", {"eps": 1e-5}, ins))
    return out


def cases_rms_norm(rng):
    out = []
    for shape in [(3, 5), (2, 3, 8), (1, 2), (5, 1, 33), (9,)]:
        out.append(("rms_norm", {"eps": 1e-6}, [nonzero(rng, shape), nonzero(rng, (shape[-1],), 0.5, 1.5)]))
    return out


def cases_embedding(rng):
    out = []
    for V, C, ids_shape in [(5, 3, (4,)), (7, 4, (2, 3)), (3, 1, (6,)), (11, 5, (2, 2, 3)), (4, 6, (1,))]:
        ids = rng.randint(0, V, size=ids_shape).astype(np.int32)
        out.append(("embedding", {}, [nonzero(rng, (V, C)), ids]))
    return out


def cases_masked_fill(rng):
    out = []
    for kind, value in [("same", -1e4), ("b1", 0.5), ("rank", -2.0), ("b1", 3.0), ("rank", 1.25)]:
        sx, sm = bcast_pair(rng, kind)
        mask = (rng.uniform(size=sm) < 0.4).astype(np.float32)
        out.append(("masked_fill", {"value": value}, [nonzero(rng, sx), mask]))
    return out


def cases_cross_entropy(rng):
    out = []
    for N, V, eps, ign in [(4, 5, 0.0, -100), (6, 7, 0.1, 0), (3, 11, 0.0, 2), (8, 3, 0.2, -1), (1, 4, 0.1, -100),
                           (5, 9, 0.05, 3)]:
        t = rng.randint(0, V, size=(N,)).astype(np.int32)
        k = rng.randint(0, N)
        for n in range(N):  # about a quarter ignored, never all
            if n != k and rng.uniform() < 0.3:
                t[n] = ign
        if ign >= 0:
            t[k] = (ign + 1) % V
        out.append(("cross_entropy", {"eps": eps, "ignore_index": ign}, [nonzero(rng, (N, V), 0.05, 3.0), t]))
    return out


def cases_attention(rng):
    out = []
    # B, H, Hk, Tq, Tk, D, Dv, causal, mask shape (None: no mask)
    for B, H, Hk, Tq, Tk, D, Dv, causal, mshape in [
            (1, 1, 1, 3, 3, 4, 4, 0, None), (2, 3, 3, 4, 5, 3, 2, 0, None), (1, 2, 2, 5, 5, 4, 4, 1, None),
            (2, 4, 1, 3, 6, 5, 3, 1, None), (2, 2, 2, 3, 4, 4, 5, 0, (2, 1, 1, 4)), (1, 3, 3, 4, 4, 2, 2, 1, (4, 4)),
            (2, 2, 1, 1, 5, 3, 3, 1, (2, 2, 1, 5)), (1, 1, 1, 7, 7, 8, 8, 0, (1, 7))]:
        q = nonzero(rng, (B, H, Tq, D), 0.1, 1.5)
        k = nonzero(rng, (B, Hk, Tk, D), 0.1, 1.5)
        v = nonzero(rng, (B, Hk, Tk, Dv))
        ins = [q, k, v]
        if mshape is not None:
            m = rng.uniform(-1.0, 1.0, size=mshape).astype(np.float32)
            m = np.where(np.abs(m) < 0.05, 0.3, m).astype(np.float32)
            flat = m.reshape(-1, mshape[-1])
            for r in range(flat.shape[0]):  # some keys masked out, never key 0 (no fully masked row)
                for j in range(1, mshape[-1]):
                    if rng.uniform() < 0.25:
                        flat[r, j] = -np.inf
            ins.append(flat.reshape(mshape))
        scale = float(np.float32(1.0 / math.sqrt(D) * rng.uniform(0.7, 1.3)))
        out.append(("attention", {"causal": causal, "scale": scale}, ins))
    return out


def cases_layout(rng):
    out = []
    for shape, new in [((2, 3, 4), (6, 4)), ((5, 7), (35,)), ((3, 1, 2), (1, 6, 1)), ((4, 3), (2, 2, 3))]:
        at = {"ndim": len(new)}
        for i, d in enumerate(new):
            at[f"s{i}"] = d
        out.append(("reshape", at, [nonzero(rng, shape)]))
    for shape, perm in [((2, 3), (1, 0)), ((2, 3, 4), (2, 0, 1)), ((1, 5, 3, 2), (3, 1, 0, 2)), ((3, 1, 4), (0, 2, 1))]:
        at = {f"p{i}": p for i, p in enumerate(perm)}
        out.append(("permute", at, [nonzero(rng, shape)]))
    for shape, a0, a1 in [((3, 5), 0, 1), ((2, 3, 4), -1, -2), ((2, 1, 3, 5), 0, 2)]:
        out.append(("transpose", {"a0": a0, "a1": a1}, [nonzero(rng, shape)]))
    for shape, axis, start, length in [((7,), 0, 2, 3), ((4, 5), 1, 0, 2), ((4, 5), 0, 3, 1), ((2, 6, 3), 1, 1, 4),
                                       ((3, 2, 5), -1, 4, 1)]:
        out.append(("narrow", {"axis": axis, "start": start, "length": length}, [nonzero(rng, shape)]))
    for shapes, axis in [([(2, 3), (4, 3)], 0), ([(2, 3), (2, 1), (2, 5)], 1), ([(3, 2, 4), (3, 1, 4)], -2),
                         ([(5,), (1,), (2,)], 0), ([(2, 2, 1), (2, 2, 3)], 2)]:
        out.append(("concat", {"axis": axis}, [nonzero(rng, s) for s in shapes]))
    return out


def cases_rope(rng):
    out = []
    for shape, pos0, base in [((3, 4), 0, 10000.0), ((2, 5, 6), 3, 10000.0), ((2, 2, 4, 8), 7, 500.0), ((1, 2), 11, 10.0)]:
        out.append(("rope", {"pos0": pos0, "base": base}, [nonzero(rng, shape)]))
    return out


def cases_arange(rng):
    return [("arange", {"start": s, "step": st, "n": n}, []) for s, st, n in
            [(0.0, 1.0, 7), (-2.5, 0.25, 13), (3.0, -0.5, 9), (1.0, 0.1, 1)]]


GROUPS = {}
for _op in UNARY:
    GROUPS[_op] = (lambda o: lambda rng: cases_unary(rng, o))(_op)
for _op in SCALAR:
    GROUPS[_op] = (lambda o: lambda rng: cases_scalar(rng, o))(_op)
for _op in BINARY:
    GROUPS[_op] = (lambda o: lambda rng: cases_binary(rng, o))(_op)
for _op in ("sum", "mean", "max"):
    GROUPS[_op] = (lambda o: lambda rng: cases_reduce(rng, o))(_op)
for _op in ("softmax", "log_softmax"):
    GROUPS[_op] = (lambda o: lambda rng: cases_softmax(rng, o))(_op)
GROUPS.update({"argmax": cases_argmax, "matmul": cases_matmul, "linear": cases_linear,
               "layer_norm": cases_layer_norm, "rms_norm": cases_rms_norm, "embedding": cases_embedding,
               "masked_fill": cases_masked_fill, "cross_entropy": cases_cross_entropy,
               "attention": cases_attention, "layout": cases_layout, "rope": cases_rope, "arange": cases_arange})


# ---------------------------------------------------------------------------------------------
# golden file writer / reader
# ---------------------------------------------------------------------------------------------

def put_str(f, s, wide=False):
    b = s.encode()
    f.write(struct.pack("<H" if wide else "<B", len(b)))
    f.write(b)


def put_tensor(f, key, a):
    a = np.array(a, order="C")  # (not ascontiguousarray: it turns a 0-d array into 1-d)
    if a.dtype == np.int32:
        dt = DT_I32
    else:
        a = a.astype("<f4")
        dt = DT_F32
    put_str(f, key)
    f.write(struct.pack("<BB", dt, a.ndim))
    for d in a.shape:
        f.write(struct.pack("<q", d))
    f.write(a.astype("<i4" if dt == DT_I32 else "<f4").tobytes())


def make_case(rng, op, attrs, inputs):
    """Runs the reference: returns [(key, array)] with x0.., y, and gy + gx<i> when differentiable."""
    tensors = [(f"x{i}", x) for i, x in enumerate(inputs)]
    xs = []
    grads = []
    for i, x in enumerate(inputs):
        if x.dtype == np.float32 and not (op == "masked_fill" and i == 1) and not (op == "attention" and i == 3):
            t = t64(x).requires_grad_(True)
            grads.append(i)
        else:
            t = torch.from_numpy(x.astype(np.float64) if x.dtype == np.float32 else x.astype(np.int64))
        xs.append(t)
    y = reference(op, xs, attrs)
    if y.dtype == torch.int32:
        tensors.append(("y", y.numpy().astype(np.int32)))
        return tensors
    tensors.append(("y", y.detach().numpy().astype(np.float32)))
    if grads:
        gy = nonzero(rng, tuple(y.shape), 0.1, 1.0)
        y.backward(t64(gy))
        tensors.append(("gy", gy))
        for i in grads:
            tensors.append((f"gx{i}", xs[i].grad.numpy().astype(np.float32)))
    return tensors


def write_group(path, group, rng):
    cases = GROUPS[group](rng)
    with open(path, "wb") as f:
        f.write(b"MTG1")
        f.write(struct.pack("<I", len(cases)))
        for op, attrs, inputs in cases:
            tensors = make_case(rng, op, attrs, inputs)
            put_str(f, op)
            f.write(struct.pack("<B", len(attrs)))
            for k, v in attrs.items():
                put_str(f, k)
                f.write(struct.pack("<d", float(v)))
            f.write(struct.pack("<B", len(tensors)))
            for key, a in tensors:
                put_tensor(f, key, a)
    return len(cases)


def read_group(path):
    """[(op, attrs, {key: array})] — the inverse of write_group (used by --check)."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    def take(n):
        nonlocal pos
        b = data[pos:pos + n]
        if len(b) != n:
            raise ValueError(f"{path}: truncated")
        pos += n
        return b
    def s8():
        return take(struct.unpack("<B", take(1))[0]).decode()
    if take(4) != b"MTG1":
        raise ValueError(f"{path}: bad magic")
    cases = []
    for _ in range(struct.unpack("<I", take(4))[0]):
        op = s8()
        attrs = {}
        for _ in range(struct.unpack("<B", take(1))[0]):
            k = s8()
            attrs[k] = struct.unpack("<d", take(8))[0]
        ts = {}
        for _ in range(struct.unpack("<B", take(1))[0]):
            k = s8()
            dt, nd = struct.unpack("<BB", take(2))
            shape = struct.unpack(f"<{nd}q", take(8 * nd)) if nd else ()
            n = int(np.prod(shape)) if nd else 1
            ts[k] = np.frombuffer(take(4 * n), dtype="<i4" if dt == DT_I32 else "<f4").reshape(shape)
        cases.append((op, attrs, ts))
    return cases


def generate(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    total = 0
    for group in sorted(GROUPS):
        rng = np.random.RandomState(zlib.crc32(group.encode()))
        total += write_group(os.path.join(out_dir, f"{group}.mtg"), group, rng)
    return total


def check(out_dir):
    """Regenerates into out_dir and compares with the committed golden files: the same files, cases,
    attributes, shapes and inputs (bit-exact), references within 1e-6 relative (a different libm or
    torch build may move the last bit of a float64 computation; nothing more)."""
    n = generate(out_dir)
    committed = sorted(f for f in os.listdir(GOLDEN) if f.endswith(".mtg"))
    fresh = sorted(f for f in os.listdir(out_dir) if f.endswith(".mtg"))
    bad = 0
    if committed != fresh:
        print(f"file sets differ: committed {committed} vs regenerated {fresh}")
        bad += 1
    identical = 0
    for name in sorted(set(committed) & set(fresh)):
        a, b = read_group(os.path.join(GOLDEN, name)), read_group(os.path.join(out_dir, name))
        if len(a) != len(b):
            print(f"{name}: {len(a)} committed cases vs {len(b)} regenerated")
            bad += 1
            continue
        for ci, ((op1, at1, t1), (op2, at2, t2)) in enumerate(zip(a, b)):
            where = f"{name} case {ci} ({op1})"
            if op1 != op2 or at1 != at2 or sorted(t1) != sorted(t2):
                print(f"{where}: op, attributes or tensor keys differ")
                bad += 1
                continue
            for k in t1:
                x, y = t1[k], t2[k]
                if x.shape != y.shape or x.dtype != y.dtype:
                    print(f"{where}: {k} shape/dtype differ")
                    bad += 1
                elif k.startswith("x") or k == "gy" or x.dtype != np.float32:
                    if not np.array_equal(x, y):
                        print(f"{where}: {k} differs (inputs must be bit-exact)")
                        bad += 1
                else:
                    fin = np.isfinite(x)
                    if not np.array_equal(fin, np.isfinite(y)) or not np.allclose(x[fin], y[fin], rtol=1e-6, atol=1e-7):
                        print(f"{where}: {k} differs beyond 1e-6 (max abs diff {np.max(np.abs(x[fin] - y[fin]))})")
                        bad += 1
        with open(os.path.join(GOLDEN, name), "rb") as f1, open(os.path.join(out_dir, name), "rb") as f2:
            identical += f1.read() == f2.read()
    print(f"gen_ops.py --check: {n} cases in {len(fresh)} files regenerated with torch {torch.__version__}; "
          f"{identical} files byte-identical to the committed ones; {bad} problems")
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=GOLDEN, help="where to write the golden files")
    ap.add_argument("--check", metavar="DIR", help="regenerate into DIR and compare with the committed files")
    args = ap.parse_args()
    if args.check:
        sys.exit(check(args.check))
    n = generate(args.out)
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out) if f.endswith(".mtg"))
    print(f"wrote {n} cases, {size} bytes, into {args.out}")


if __name__ == "__main__":
    main()
