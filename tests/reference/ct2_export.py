#!/usr/bin/python3
"""ct2_export.py — a MicroTensor `.mt` model as a CTranslate2 model, with the same weights and vocabulary.

  convert --model M.mt --out DIR
          writes the CTranslate2 model directory (model.bin, config.json, shared_vocabulary.json)
  check   --model M.mt --out DIR [--sents N] [--tol 1e-4]
          converts, then compares CTranslate2 with the PyTorch reference (model.py) on the same
          random sources and targets: the log-probability of every target token (teacher forcing,
          CTranslate2's score_batch) and the greedy outputs; prints one JSON line, exits 1 above tol.

It builds the model through CTranslate2's Python spec API (TransformerSpec of a
TransformerEncoderSpec and a TransformerDecoderSpec), so no converter of another toolkit is involved.
CTranslate2 (pip `ctranslate2`, in the bench venv of tests/bench/venv.sh) is a benchmark dependency,
not a test one.

What maps and what does not (the engine's equations: engine/nn/README.md):
  * MHA only: CTranslate2 has no latent attention; an MLA model is refused.
  * pre-norm LayerNorm (eps norm_eps, CTranslate2's layer_norm_epsilon), final norms on both stacks,
    ReLU or GELU feed-forward with biases, attention projections without bias: all expressible.
  * embeddings times sqrt(d_model), shared by source, target and (tied) output projection: the same
    table given three times (CTranslate2's scale_embeddings); an untied out_proj is the projection.
  * positions: the engine's RoPE (pairs (2i, 2i+1), base rope_base, on the whole head) in the
    encoder's and decoder's self-attention is CTranslate2's rotary_dim 0 with rotary_interleave; its
    encoder spec also adds sinusoidal position encodings, which are removed here. CTranslate2 has no
    rotary embeddings in cross-attention, so a model with cross_rope true (the engine's default) is
    refused: train the benchmark model with "cross_rope": false.
  * tokens: the tokenizer's vocabulary by id ([SOS] starts the decoder, [EOS] ends, [UNK] unknown).
"""
import argparse
import json
import math
import os
import sys

import numpy as np

import model as M


def vocabulary(meta, V):
    """The token strings by id (V of them) from the tokenizer.json in the file's metadata."""
    tok = json.loads(meta.get("tokenizer") or "{}")
    vocab = dict((tok.get("model") or {}).get("vocab") or {})
    for t in tok.get("added_tokens") or []:
        vocab[t["content"]] = t["id"]
    tokens = [None] * V
    for s, i in vocab.items():
        if 0 <= i < V:
            tokens[i] = s
    for i in range(V):
        if tokens[i] is None:  # an id without a string (not in a real tokenizer): a unique name
            tokens[i] = "<mt:%d>" % i
    if len(set(tokens)) != V:
        raise SystemExit("ct2_export: the tokenizer's vocabulary has duplicate strings")
    return tokens


def build_spec(path):
    """(spec, cfg, state, tokens) for the model file."""
    import ctranslate2
    from ctranslate2.specs import common_spec, transformer_spec

    cfg, state, meta = M.load_mt(path)
    if meta.get("quantization"):
        raise SystemExit("ct2_export: %s is an int8 model; convert the f32 one (CTranslate2 quantizes with "
                         "compute_type int8)" % path)
    if cfg.attention != "mha":
        raise SystemExit("ct2_export: %s has attention %s; CTranslate2 has only multi-head attention (mha)"
                         % (path, cfg.attention))
    if cfg.cross_rope:
        raise SystemExit("ct2_export: %s rotates cross-attention (cross_rope true); CTranslate2 has rotary "
                         "embeddings in self-attention only: train with \"cross_rope\": false" % path)
    act = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU}[cfg.activation]
    rot = dict(rotary_dim=0, rotary_interleave=True, rotary_base=float(cfg.rope_base))
    enc = transformer_spec.TransformerEncoderSpec(cfg.layers_enc, cfg.heads, pre_norm=True, activation=act, **rot)
    dec = transformer_spec.TransformerDecoderSpec(cfg.layers_dec, cfg.heads, pre_norm=True, activation=act, **rot)
    del enc.position_encodings  # RoPE is the only position signal, as in the engine
    spec = transformer_spec.TransformerSpec(enc, dec)

    def w(name):
        return state[name].float().numpy()

    def norm(dst, name):
        dst.gamma, dst.beta = w(name + ".weight"), w(name + ".bias")

    def ffn(dst, pre):
        dst.linear_0.weight, dst.linear_0.bias = w(pre + ".fc1.weight"), w(pre + ".fc1.bias")
        dst.linear_1.weight, dst.linear_1.bias = w(pre + ".fc2.weight"), w(pre + ".fc2.bias")

    E = w("embed.weight")
    enc.embeddings[0].weight = E
    dec.embeddings.weight = E
    dec.projection.weight = E if cfg.tie_embeddings else w("out_proj.weight")
    for i, L in enumerate(enc.layer):
        p = "encoder.layers.%d" % i
        norm(L.self_attention.layer_norm, p + ".norm1")
        a = p + ".self_attn"
        L.self_attention.linear[0].weight = np.concatenate([w(a + ".w_q.weight"), w(a + ".w_k.weight"),
                                                            w(a + ".w_v.weight")])
        L.self_attention.linear[1].weight = w(a + ".w_o.weight")
        norm(L.ffn.layer_norm, p + ".norm2")
        ffn(L.ffn, p + ".ffn")
    for i, L in enumerate(dec.layer):
        p = "decoder.layers.%d" % i
        norm(L.self_attention.layer_norm, p + ".norm1")
        a = p + ".self_attn"
        L.self_attention.linear[0].weight = np.concatenate([w(a + ".w_q.weight"), w(a + ".w_k.weight"),
                                                            w(a + ".w_v.weight")])
        L.self_attention.linear[1].weight = w(a + ".w_o.weight")
        norm(L.attention.layer_norm, p + ".norm2")
        a = p + ".cross_attn"
        L.attention.linear[0].weight = w(a + ".w_q.weight")
        L.attention.linear[1].weight = np.concatenate([w(a + ".w_k.weight"), w(a + ".w_v.weight")])
        L.attention.linear[2].weight = w(a + ".w_o.weight")
        norm(L.ffn.layer_norm, p + ".norm3")
        ffn(L.ffn, p + ".ffn")
    norm(enc.layer_norm, "encoder.norm")
    norm(dec.layer_norm, "decoder.norm")

    tokens = vocabulary(meta, cfg.vocab_size)
    spec.register_source_vocabulary(tokens)
    spec.register_target_vocabulary(tokens)
    unk = "[UNK]" if "[UNK]" in tokens else tokens[1]
    spec.config.unk_token = unk
    spec.config.bos_token = tokens[cfg.sos_id]
    spec.config.eos_token = tokens[cfg.eos_id]
    spec.config.decoder_start_token = tokens[cfg.sos_id]
    spec.config.layer_norm_epsilon = float(cfg.norm_eps)
    return spec, cfg, state, tokens


def convert(path, out):
    spec, cfg, state, tokens = build_spec(path)
    spec.validate()
    spec.optimize(quantization=None)  # f32 as stored; CTranslate2 quantizes at load (compute_type)
    os.makedirs(out, exist_ok=True)
    spec.save(out)
    return cfg, tokens


def cmd_convert(a):
    convert(a.model, a.out)
    print(json.dumps({"model": a.model, "ct2": a.out}))


def cmd_check(a):
    import ctranslate2
    import torch

    cfg, tokens = convert(a.model, a.out)
    m, _, _ = M.build(a.model)
    m.eval()
    tr = ctranslate2.Translator(a.out, device="cpu", compute_type="float32", intra_threads=2, inter_threads=1)
    g = np.random.default_rng(5)
    V = cfg.vocab_size
    special = {cfg.pad_id, cfg.sos_id, cfg.eos_id}
    ordinary = [i for i in range(V) if i not in special]
    srcs, tgts = [], []
    for i in range(a.sents):
        srcs.append(list(g.choice(ordinary, size=int(g.integers(1, 16)))) + [cfg.eos_id])
        tgts.append(list(g.choice(ordinary, size=int(g.integers(1, 16)))))
    # Teacher forcing: the log-probability of every target token and of [EOS] after it.
    res = tr.score_batch([[tokens[i] for i in s] for s in srcs], [[tokens[i] for i in t] for t in tgts])
    worst = 0.0
    for s, t, r in zip(srcs, tgts, res):
        with torch.no_grad():
            src = torch.tensor([s])
            tin = torch.tensor([[cfg.sos_id] + t])
            lp = torch.log_softmax(m(src, tin)[0].double(), -1)
            ref = lp[torch.arange(len(t) + 1), torch.tensor(t + [cfg.eos_id])].numpy()
        got = np.array(r.log_probs, dtype=np.float64)
        if got.shape != ref.shape:
            raise SystemExit("ct2_export check: %d log-probabilities from CTranslate2, %d expected"
                             % (got.shape[0], ref.shape[0]))
        worst = max(worst, float(np.max(np.abs(got - ref)) / max(1.0, float(np.max(np.abs(ref))))))
    # Greedy outputs: CTranslate2 against the reference's own greedy loop (the engine's rules: [PAD]
    # and [SOS] never generated, [EOS] allowed first: CTranslate2's min_decoding_length is 1 otherwise).
    out = tr.translate_batch([[tokens[i] for i in s] for s in srcs], beam_size=1, max_decoding_length=20,
                             min_decoding_length=0, suppress_sequences=[[tokens[cfg.pad_id]], [tokens[cfg.sos_id]]])
    same = 0
    for s, o in zip(srcs, out):
        with torch.no_grad():
            src = torch.tensor([s])
            y = [cfg.sos_id]
            for _ in range(20):
                lg = m(src, torch.tensor([y]))[0, -1]
                lg[cfg.pad_id] = lg[cfg.sos_id] = float("-inf")
                y.append(int(lg.argmax()))
                if y[-1] == cfg.eos_id:
                    break
        ref = [tokens[i] for i in y[1:] if i != cfg.eos_id]
        same += ref == o.hypotheses[0]
    ok = worst <= a.tol and same == len(srcs)
    print(json.dumps({"check": "ct2_export", "sentences": len(srcs), "logprob_rel_err": worst,
                      "greedy_identical": same, "tol": a.tol, "ok": ok}))
    sys.exit(0 if ok else 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--model", required=True)
    c.add_argument("--out", required=True)
    k = sub.add_parser("check")
    k.add_argument("--model", required=True)
    k.add_argument("--out", required=True)
    k.add_argument("--sents", type=int, default=16)
    k.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    {"convert": cmd_convert, "check": cmd_check}[a.cmd](a)


if __name__ == "__main__":
    main()
