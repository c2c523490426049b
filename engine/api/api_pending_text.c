/*
 * api_pending_text.c — TEMPORARY: tokenizer and metric entry points until engine/text implements
 * them (then this file is deleted). Each returns MT_ERR_UNSUPPORTED.
 */
#include "core/error.h"

#define PENDING(name) return mt_error(MT_ERR_UNSUPPORTED, name ": not implemented yet")

mt_status mt_tokenizer_load(const char *path, mt_tokenizer_t **out) { (void)path; (void)out; PENDING("mt_tokenizer_load"); }
mt_status mt_tokenizer_train(const char *const *p, size_t n, const char *o, mt_tokenizer_t **out) { (void)p; (void)n; (void)o; (void)out; PENDING("mt_tokenizer_train"); }
mt_status mt_tokenizer_save(const mt_tokenizer_t *t, const char *p) { (void)t; (void)p; PENDING("mt_tokenizer_save"); }
mt_status mt_tokenizer_encode(const mt_tokenizer_t *t, const char *s, int32_t *ids, size_t c, size_t *n) { (void)t; (void)s; (void)ids; (void)c; (void)n; PENDING("mt_tokenizer_encode"); }
mt_status mt_tokenizer_decode(const mt_tokenizer_t *t, const int32_t *ids, size_t n, char *b, size_t c, size_t *l) { (void)t; (void)ids; (void)n; (void)b; (void)c; (void)l; PENDING("mt_tokenizer_decode"); }
mt_status mt_tokenizer_vocab_size(const mt_tokenizer_t *t, size_t *n) { (void)t; (void)n; PENDING("mt_tokenizer_vocab_size"); }
mt_status mt_tokenizer_token_to_id(const mt_tokenizer_t *t, const char *s, int32_t *id) { (void)t; (void)s; (void)id; PENDING("mt_tokenizer_token_to_id"); }
void mt_tokenizer_free(mt_tokenizer_t *t) { (void)t; }
mt_status mt_metric_bleu(const char *const *h, const char *const *r, size_t n, double *o) { (void)h; (void)r; (void)n; (void)o; PENDING("mt_metric_bleu"); }
mt_status mt_metric_chrf(const char *const *h, const char *const *r, size_t n, double *o) { (void)h; (void)r; (void)n; (void)o; PENDING("mt_metric_chrf"); }
mt_status mt_metric_cer(const char *const *h, const char *const *r, size_t n, double *o) { (void)h; (void)r; (void)n; (void)o; PENDING("mt_metric_cer"); }
mt_status mt_metric_wer(const char *const *h, const char *const *r, size_t n, double *o) { (void)h; (void)r; (void)n; (void)o; PENDING("mt_metric_wer"); }
