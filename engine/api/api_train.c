/*
 * api_train.c — mt_trainer_create/run/step/save_checkpoint: argument checks over engine/train/trainer.h
 * (the trainer's other ABI functions are defined in trainer.c itself).
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

mt_status mt_trainer_run(mt_trainer_t *tr) {
    if (!tr) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_run: trainer is NULL");
    return mt_trainer_loop(tr, 1, 0);
}

mt_status mt_trainer_step(mt_trainer_t *tr, int n_steps) {
    if (!tr) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_step: trainer is NULL");
    if (n_steps < 1) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_step: n_steps = %d, must be >= 1", n_steps);
    return mt_trainer_loop(tr, 0, n_steps);
}

mt_status mt_trainer_save_checkpoint(mt_trainer_t *tr, const char *path, char **out_path) {
    if (!tr) return mt_error(MT_ERR_INVALID_ARG, "mt_trainer_save_checkpoint: trainer is NULL");
    char written[PATH_MAX] = "";
    MT_TRY(mt_trainer_save(tr, path, written, sizeof written));
    if (out_path) {
        char *p = strdup(written);
        if (!p) return mt_error(MT_ERR_NOMEM, "mt_trainer_save_checkpoint: out of memory");
        *out_path = p;
    }
    return MT_OK;
}

