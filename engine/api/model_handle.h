/*
 * model_handle.h — struct mt_model, the object behind the public mt_model_t handle: the Transformer,
 * its tokenizer (NULL when the file carries none), and the tokenizer.json text for re-saving.
 */
#ifndef MT_API_MODEL_HANDLE_H
#define MT_API_MODEL_HANDLE_H

#include "nn/model.h"
#include "text/tokenizer.h"

struct mt_model {
    mt_transformer *tf;
    mt_tokenizer *tok;
    char *tok_json;
    int device;
};

#endif
