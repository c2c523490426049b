#!/usr/bin/env python3
"""hf_tokenizers_ref.py — the Hugging Face `tokenizers` side of test_text_hf_tokenizers.

  classes OUT                      per assigned code point, how HF's pre-tokenizers classify it (one
                                   line "hex flags": w \\w, p punctuation, n numeric, s whitespace,
                                   L letter, N number and S \\s for ByteLevel's regex)
  normalize OUT                    per assigned code point: "hex nfkc-hex nfc-hex lowercase-hex" (the
                                   code points of each result, dot-separated)
  train KIND OUT.json SENTS VOCAB MINFREQ
                                   train with the settings of MicroTensor's trainer: KIND is
                                   bpe (NFKC; Metaspace+Punctuation+Digits; Metaspace decoder),
                                   bytelevel (NFKC; ByteLevel without prefix space) or
                                   wordlevel (NFKC; Whitespace); special tokens [PAD] [UNK] [SOS] [EOS]
  encode TOK.json SENTS OUT        ids of every line (no special tokens added), one line each
  decode TOK.json IDS OUT          text of every line of ids (special tokens skipped)
"""
import sys

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIALS = ["[PAD]", "[UNK]", "[SOS]", "[EOS]"]


def read_lines(path):
    lines = open(path, encoding="utf-8", newline="").read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def count_pieces(pt, probes, sep):
    """Number of pieces each probe string gives. Probes are joined by sep, a character the
    pre-tokenizer always keeps apart (or removes), so no piece spans two probes."""
    out = []
    for start in range(0, len(probes), 8192):
        chunk = probes[start:start + 8192]
        bounds, pos = [], 0
        for p in chunk:
            bounds.append((pos, pos + len(p)))
            pos += len(p) + 1
        counts = [0] * len(chunk)
        k = 0
        for _, (a, b) in pt.pre_tokenize_str(sep.join(chunk)):
            while k < len(bounds) and a >= bounds[k][1]:
                k += 1
            if k < len(bounds) and bounds[k][0] <= a and b <= bounds[k][1]:
                counts[k] += 1
        out.extend(counts)
    return out


def classes(out_path):
    import unicodedata
    # every assigned code point (Python's Unicode database) but private use and surrogates
    cps = [c for c in range(0x110000) if unicodedata.category(chr(c)) not in ("Cn", "Co", "Cs") and c != 0x0A]
    ch = [chr(c) for c in cps]
    probe = ["a" + c + "a" for c in ch]
    ws = count_pieces(pre_tokenizers.Whitespace(), probe, " ")
    pu = count_pieces(pre_tokenizers.Punctuation(), probe, "!")
    di = count_pieces(pre_tokenizers.Digits(individual_digits=False), probe, "0")
    sp = count_pieces(pre_tokenizers.WhitespaceSplit(), probe, " ")
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    le = count_pieces(bl, ["a" + c for c in ch], "\n")
    nu = count_pieces(bl, ["1" + c for c in ch], "\n")
    bs = count_pieces(bl, ["a" + c + c + "b" for c in ch], "\n")
    with open(out_path, "w") as f:
        for i, c in enumerate(cps):
            flags = ""
            flags += "w" if ws[i] == 1 else ""          # "aXa" one piece: X is \w
            flags += "s" if sp[i] == 2 else ""          # split in two: whitespace
            flags += "p" if pu[i] == 3 else ""
            flags += "n" if di[i] == 3 else ""
            flags += "L" if le[i] == 1 else ""          # "aX" one piece: X is \p{L}
            flags += "N" if nu[i] == 1 else ""          # "1X" one piece: X is \p{N}
            flags += "S" if bs[i] == 4 else ""          # "aXXb" in four: X is \s
            f.write("%x %s\n" % (c, flags))


def normalize(out_path):
    import unicodedata
    cps = [c for c in range(0x110000) if unicodedata.category(chr(c)) not in ("Cn", "Co", "Cs")]
    nfkc, nfc, low = normalizers.NFKC(), normalizers.NFC(), normalizers.Lowercase()

    def hexes(s):
        return ".".join("%x" % ord(ch) for ch in s) or "-"

    with open(out_path, "w") as f:
        for c in cps:
            ch = chr(c)
            f.write("%x %s %s %s\n" % (c, hexes(nfkc.normalize_str(ch)), hexes(nfc.normalize_str(ch)),
                                       hexes(low.normalize_str(ch))))


def train(kind, out, sents, vocab, minfreq):
    if kind == "wordlevel":
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tr = trainers.WordLevelTrainer(vocab_size=vocab, min_frequency=minfreq, special_tokens=SPECIALS,
                                       show_progress=False)
    elif kind == "bytelevel":
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
        tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
        tr = trainers.BpeTrainer(vocab_size=vocab, min_frequency=minfreq, special_tokens=SPECIALS,
                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    else:
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=False)])
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
        tr = trainers.BpeTrainer(vocab_size=vocab, min_frequency=minfreq, special_tokens=SPECIALS,
                                 show_progress=False)
    tok.train_from_iterator(read_lines(sents), tr)
    tok.save(out)


def encode(tok_path, sents, out):
    tok = Tokenizer.from_file(tok_path)
    encs = tok.encode_batch(read_lines(sents), add_special_tokens=False)
    with open(out, "w") as f:
        for e in encs:
            f.write(" ".join(map(str, e.ids)) + "\n")


def decode(tok_path, ids_path, out):
    tok = Tokenizer.from_file(tok_path)
    rows = [[int(x) for x in line.split()] for line in read_lines(ids_path)]
    with open(out, "w", encoding="utf-8", newline="") as f:
        for text in tok.decode_batch(rows, skip_special_tokens=True):
            f.write(text + "\n")


def main():
    cmd = sys.argv[1]
    if cmd == "classes":
        classes(sys.argv[2])
    elif cmd == "normalize":
        normalize(sys.argv[2])
    elif cmd == "train":
        train(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    elif cmd == "encode":
        encode(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "decode":
        decode(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
