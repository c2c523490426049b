/*
 * api_pending_model.c — TEMPORARY: model, translator and trainer entry points until the model work
 * implements them (then this file is deleted). Each returns MT_ERR_UNSUPPORTED.
 */
#include "core/error.h"

#define PENDING(name) return mt_error(MT_ERR_UNSUPPORTED, name ": not implemented yet")

mt_status mt_model_load(const char *p, int d, mt_model_t **o) { (void)p; (void)d; (void)o; PENDING("mt_model_load"); }
mt_status mt_model_save(const mt_model_t *m, const char *p) { (void)m; (void)p; PENDING("mt_model_save"); }
mt_status mt_model_info_json(const mt_model_t *m, char **o) { (void)m; (void)o; PENDING("mt_model_info_json"); }
const mt_tokenizer_t *mt_model_tokenizer(const mt_model_t *m) { (void)m; return NULL; }
void mt_model_free(mt_model_t *m) { (void)m; }
mt_status mt_translator_create(mt_model_t *m, int n, mt_translator_t **o) { (void)m; (void)n; (void)o; PENDING("mt_translator_create"); }
mt_status mt_translate(mt_translator_t *t, const char *const *x, size_t n, int b, float lp, float r, char ***o, float **s) { (void)t; (void)x; (void)n; (void)b; (void)lp; (void)r; (void)o; (void)s; PENDING("mt_translate"); }
void mt_translator_free(mt_translator_t *t) { (void)t; }
mt_status mt_trainer_create(const char *c, const char *r, mt_trainer_t **o) { (void)c; (void)r; (void)o; PENDING("mt_trainer_create"); }
mt_status mt_trainer_set_progress_callback(mt_trainer_t *t, mt_progress_fn f, void *u) { (void)t; (void)f; (void)u; PENDING("mt_trainer_set_progress_callback"); }
mt_status mt_trainer_run(mt_trainer_t *t) { (void)t; PENDING("mt_trainer_run"); }
mt_status mt_trainer_step(mt_trainer_t *t, int n) { (void)t; (void)n; PENDING("mt_trainer_step"); }
mt_status mt_trainer_cancel(mt_trainer_t *t) { (void)t; PENDING("mt_trainer_cancel"); }
mt_status mt_trainer_save_checkpoint(mt_trainer_t *t, const char *p, char **o) { (void)t; (void)p; (void)o; PENDING("mt_trainer_save_checkpoint"); }
mt_status mt_trainer_status(const mt_trainer_t *t, mt_train_state *s, int64_t *st, double *l, double *tp) { (void)t; (void)s; (void)st; (void)l; (void)tp; PENDING("mt_trainer_status"); }
mt_status mt_trainer_status_json(const mt_trainer_t *t, char **o) { (void)t; (void)o; PENDING("mt_trainer_status_json"); }
void mt_trainer_free(mt_trainer_t *t) { (void)t; }
