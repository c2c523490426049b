/*
 * api_train.c — mt_trainer_*: the ABI over engine/train/trainer.h.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "train/trainer.h"

mt_status mt_trainer_create(const char *config_json, const char *path_root, mt_trainer_t **out) {
    if (!config_json || !out) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_create: NULL argument");
    return mt_trainer_new(config_json, NULL, 0, path_root, "config", out);
}

mt_status mt_trainer_set_progress_callback(mt_trainer_t *tr, mt_progress_fn fn, void *user) {
    if (!tr) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_set_progress_callback: trainer is NULL");
    mt_training_set_callback(tr, fn, user);
    return MT_OK;
}

mt_status mt_trainer_run(mt_trainer_t *tr) {
    if (!tr) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_run: trainer is NULL");
    return mt_training_loop(tr, 1, 0);
}

mt_status mt_trainer_step(mt_trainer_t *tr, int n_steps) {
    if (!tr) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_step: trainer is NULL");
    if (n_steps < 1) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_step: n_steps = %d, must be >= 1", n_steps);
    return mt_training_loop(tr, 0, n_steps);
}

mt_status mt_trainer_cancel(mt_trainer_t *tr) {
    if (!tr) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_cancel: trainer is NULL");
    mt_training_cancel(tr);
    return MT_OK;
}

mt_status mt_trainer_save_checkpoint(mt_trainer_t *tr, const char *path, char **out_path) {
    if (!tr) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_save_checkpoint: trainer is NULL");
    char written[PATH_MAX] = "";
    MT_TRY(mt_training_save(tr, path, written, sizeof written));
    if (out_path) {
        char *p = strdup(written);
        if (!p) return mt_error(MT_ERR_NOMEM, "mt_trainer_save_checkpoint: out of memory");
        *out_path = p;
    }
    return MT_OK;
}

mt_status mt_trainer_status(const mt_trainer_t *tr, mt_train_state *state, int64_t *step, double *loss,
                            double *tokens_per_s) {
    if (!tr) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_status: trainer is NULL");
    mt_training_status(tr, state, step, loss, tokens_per_s);
    return MT_OK;
}

mt_status mt_trainer_status_json(const mt_trainer_t *tr, char **out_json) {
    if (!tr || !out_json) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_status_json: NULL argument");
    char *s = mt_training_status_json(tr);
    if (!s) return mt_error(MT_ERR_NOMEM, "mt_trainer_status_json: out of memory");
    *out_json = s;
    return MT_OK;
}

void mt_trainer_free(mt_trainer_t *tr) { mt_training_free(tr); }
