/*
 * tokenizer.h — the engine's tokenizer: BPE and word-level models behind a Hugging Face-compatible
 * pipeline (added/special tokens, normalizer, pre-tokenizer, model, decoder), trained here or loaded
 * from / saved to tokenizer.json.
 *
 * The public handle mt_tokenizer_t of abi/microtensor.h is this struct mt_tokenizer; engine code
 * (trainer, decoder, model file) calls the functions below.
 *
 * Default pipeline of a BPE trained here ("metaspace"): NFKC normalization; pre-tokenization
 * Metaspace(▁, prepend always, split) then Punctuation(isolated) then Digits; BPE with [UNK]; decoder
 * Metaspace. Every space becomes part of the next token ("▁word") and punctuation is split off
 * without gaining a ▁, so decode(encode(text)) == NFKC(text) for text without leading whitespace,
 * tabs or newlines and whose characters are all in the vocabulary — and that whole pipeline is
 * plain tokenizer.json, loadable by the Python `tokenizers` package, which encodes identically.
 *
 * Special tokens: [PAD]=0 [UNK]=1 [SOS]=2 [EOS]=3 for tokenizers trained here; for a loaded file
 * they are looked up by name ([PAD]/<pad>, the model's unk_token or [UNK]/<unk>, [SOS]/[BOS]/<s>,
 * [EOS]/</s>) and are -1 when absent.
 *
 * Thread safety: a tokenizer is immutable after training/loading except for its internal encode
 * cache, which is locked; encode, decode and the accessors may be called from any number of threads.
 */
#ifndef MT_TEXT_TOKENIZER_H
#define MT_TEXT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "microtensor.h"
#include "text/buf.h"
#include "text/corpus.h"

typedef struct mt_tokenizer mt_tokenizer;

typedef enum mt_tok_model {
    MT_TOK_BPE = 0,
    MT_TOK_WORDLEVEL = 1
} mt_tok_model;

typedef struct mt_tok_specials {
    int32_t pad, unk, sos, eos; /* -1 when the tokenizer has no such token */
} mt_tok_specials;

/* ---- load / save ------------------------------------------------------------------------------ */

/* tokenizer.json from a file (.zst accepted) or from memory (json need not be NUL-terminated; where
 * names the source in error messages, e.g. "model.mt: __metadata__.tokenizer").
 * Errors: MT_ERR_NOT_FOUND, MT_ERR_IO, MT_ERR_FORMAT (malformed, with the JSON path of the problem),
 * MT_ERR_UNSUPPORTED (a component type we do not implement, named with its JSON path), MT_ERR_NOMEM. */
mt_status mt_tok_load_file(const char *path, mt_tokenizer **out);
mt_status mt_tok_load_json(const char *json, size_t len, const char *where, mt_tokenizer **out);
/* The tokenizer.json text (pretty-printed like `tokenizers` does) in a new NUL-terminated buffer
 * (mt_sys_free it); *len may be NULL. */
mt_status mt_tok_to_json(const mt_tokenizer *tok, char **json, size_t *len);
/* Written atomically (temporary file, fsync, rename); a .zst path is compressed. */
mt_status mt_tok_save_file(const mt_tokenizer *tok, const char *path);
void mt_tok_free(mt_tokenizer *tok);

/* ---- vocabulary ------------------------------------------------------------------------------- */

/* Ids are 0..size-1 (the model's vocabulary and the added tokens). */
size_t mt_tok_vocab_size(const mt_tokenizer *tok);
mt_tok_specials mt_tok_get_specials(const mt_tokenizer *tok);
/* The token string of id (not NUL-terminated inside the vocabulary: use *len), NULL when id has no
 * token. */
const char *mt_tok_id_to_token(const mt_tokenizer *tok, int32_t id, size_t *len);
/* The id of a token string (model vocabulary or added token), -1 when absent. */
int32_t mt_tok_token_to_id(const mt_tokenizer *tok, const char *token, size_t len);
/* 1 when id is a special added token (dropped by decode). */
int mt_tok_is_special(const mt_tokenizer *tok, int32_t id);

/* ---- encode / decode -------------------------------------------------------------------------- */

/* Appends the ids of text[0..len) to out (no [SOS]/[EOS]). As in `tokenizers`, an added token's text
 * inside the input (e.g. "[EOS]") is encoded as that token. MT_ERR_UTF8 naming the byte offset when
 * text is not valid UTF-8. */
mt_status mt_tok_encode(const mt_tokenizer *tok, const char *text, size_t len, mt_ids *out);

/* An encoder keeps scratch buffers between calls: use one per thread when encoding many texts
 * (a corpus) to avoid allocations; results are identical to mt_tok_encode. */
typedef struct mt_tok_encoder mt_tok_encoder;
mt_status mt_tok_encoder_new(const mt_tokenizer *tok, mt_tok_encoder **out);
mt_status mt_tok_encoder_encode(mt_tok_encoder *enc, const char *text, size_t len, mt_ids *out);
void mt_tok_encoder_free(mt_tok_encoder *enc);

/* Replaces out's content with the text of ids (special tokens dropped, then the decoder; without a
 * decoder, tokens are joined with single spaces as `tokenizers` does). MT_ERR_INVALID_ARG naming the
 * position of an id that is out of range or has no token. */
mt_status mt_tok_decode(const mt_tokenizer *tok, const int32_t *ids, size_t n, mt_buf *out);

/* The pipeline's stages alone, for tests and tools: the normalized text of a (non-added-token)
 * segment, and the pieces the pre-tokenizer makes of a normalized text (fn is called per piece). */
mt_status mt_tok_normalize(const mt_tokenizer *tok, const char *text, size_t len, mt_buf *out);
typedef void (*mt_tok_piece_fn)(const char *piece, size_t len, void *user);
mt_status mt_tok_pre_tokenize(const mt_tokenizer *tok, const char *normalized, size_t len, mt_tok_piece_fn fn,
                              void *user);

/* ---- training --------------------------------------------------------------------------------- */

typedef struct mt_tok_train_options {
    mt_tok_model model;
    size_t vocab_size;          /* including the special tokens; 0: 16000 (BPE), 30000 (word-level) */
    uint64_t min_frequency;     /* a merge (BPE) or word (word-level) needs this many occurrences */
    int lowercase;              /* add Lowercase after the Unicode normalization */
    const char *normalization;  /* "nfkc" (default), "nfc", "nfd", "nfkd" or "none" */
    const char *pre_tokenizer;  /* "metaspace" (BPE default), "whitespace" (word-level default),
                                   "whitespace_split" or "bytelevel" */
    int individual_digits;      /* metaspace: every digit its own piece (default: runs of digits) */
    size_t limit_alphabet;      /* BPE: keep at most this many initial characters (0: all) */
} mt_tok_train_options;

/* Defaults for a model kind (min_frequency 2, NFKC, the kind's default pre-tokenizer). */
void mt_tok_train_options_default(mt_tok_train_options *o, mt_tok_model model);

/* The options of mt_tokenizer_train: tokenizer options and how to read the corpora. */
typedef struct mt_tok_train_config {
    mt_tok_train_options tok;
    mt_corpus_options corpus; /* its src_key/tgt_key point into the arrays below */
    char src_key[64], tgt_key[64];
} mt_tok_train_config;

/* Parses options_json (NULL or "" means all defaults) into cfg: keys "model" ("bpe" | "wordlevel"),
 * "vocab_size", "min_frequency", "lowercase", "normalization", "pre_tokenizer", "individual_digits",
 * "limit_alphabet", and for the corpora "format" ("auto" | "tsv" | "jsonl" | "parallel"),
 * "src_lang", "tgt_lang", "skip_bad_lines". Unknown keys and bad values are MT_ERR_CONFIG naming
 * the key. */
mt_status mt_tok_train_config_parse(const char *json, mt_tok_train_config *cfg);

/* Streaming training: feed every text (each side of each pair is one text), then finish.
 * The result is what `tokenizers` trains with the same settings (BpeTrainer / WordLevelTrainer with
 * special tokens [PAD] [UNK] [SOS] [EOS] and the same normalizer and pre-tokenizer): same vocabulary,
 * same ids, same merges in the same order. */
typedef struct mt_tok_trainer mt_tok_trainer;
mt_status mt_tok_trainer_new(const mt_tok_train_options *o, mt_tok_trainer **out);
mt_status mt_tok_trainer_feed(mt_tok_trainer *t, const char *text, size_t len);
/* Builds the tokenizer; t is freed whatever the outcome. */
mt_status mt_tok_trainer_finish(mt_tok_trainer *t, mt_tokenizer **out);
void mt_tok_trainer_free(mt_tok_trainer *t);

/* Trains on both sides of every pair of the corpus specs (see corpus.h). copt may be NULL. summary
 * (may be NULL) receives the corpus counts. */
mt_status mt_tok_train_corpora(const char *const *specs, size_t n_specs, const mt_tok_train_options *o,
                               const mt_corpus_options *copt, mt_tokenizer **out, mt_corpus_summary *summary);

#endif
