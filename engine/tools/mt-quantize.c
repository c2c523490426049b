/*
 * mt-quantize.c — `mt-quantize IN.mt OUT.mt`: writes the dynamic int8 version of a model: every linear
 * weight as int8 per output channel with f32 scales, embeddings, norms and biases f32 (the format:
 * engine/format/README.md). mt-translate, mt-server and mt_model_load read the result like any model;
 * mt-train refuses it (int8 is for inference only). IN may be a checkpoint or an int8 model (then OUT
 * is the same model); either path may end in .zst.
 *
 * Prints the two file sizes and their ratio. Exit status: 0 written, 1 on an error, 2 on bad usage.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/context.h"
#include "format/modelfile.h"

static long long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

int main(int argc, char **argv) {
    int help = argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0);
    if (help || argc != 3) {
        fprintf(help ? stdout : stderr, "usage: mt-quantize IN.mt OUT.mt\n");
        return help ? 0 : 2;
    }
    mt_modelfile mf;
    mt_context *ctx = NULL;
    mt_status st = mt_modelfile_load(argv[1], MT_DEVICE_CPU, 0, &mf);
    if (st == MT_OK) {
        st = mt_transformer_quantize(mf.model);
        if (st == MT_OK) st = mt_context_init(&ctx, MT_DEVICE_CPU, 1);
        if (st == MT_OK) st = mt_modelfile_save(argv[2], mf.model, ctx, mf.tokenizer_json, NULL);
        mt_context_free(ctx);
        mt_modelfile_clear(&mf);
    }
    if (st != MT_OK) {
        fprintf(stderr, "mt-quantize: %s\n", mt_last_error());
        return 1;
    }
    long long a = file_size(argv[1]), b = file_size(argv[2]);
    printf("%s: %lld bytes -> %s: %lld bytes (%.3fx)\n", argv[1], a, argv[2], b, a > 0 ? (double)b / (double)a : 0.0);
    return 0;
}
