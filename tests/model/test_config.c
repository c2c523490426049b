/*
 * test_config.c — configs: defaults validate; JSON and command-line overrides set every kind of key;
 * unknown keys, wrong types, out-of-range and inconsistent values are MT_ERR_CONFIG naming the key;
 * JSON that does not parse is MT_ERR_FORMAT with line and column; the model config survives JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "train/trainer.h"

static mt_status parse(const char *json, const char *const *kv, int n, mt_model_config *mc, mt_train_config *tc) {
    return mt_train_config_parse(json, kv, n, "cfg.json", mc, tc);
}

static void expect(const char *json, const char *const *kv, int n, mt_status st, const char *what) {
    mt_model_config mc;
    mt_train_config tc;
    mt_status got = parse(json, kv, n, &mc, &tc);
    if (got != st || (what && !strstr(mt_last_error(), what)))
        fail_msg("%s: got %s '%s', want %s with '%s'", json, mt_status_str(got), mt_last_error(), mt_status_str(st),
                 what ? what : "");
}

static void test_defaults_and_overrides(void **state) {
    (void)state;
    mt_model_config mc;
    mt_train_config tc;
    const char *kv[] = {"d_model", "512", "heads", "8", "attention", "mha", "tie_embeddings", "false",
                        "lr", "5e-4", "corpora", "a.tsv,b.tsv.zst", "resume", "auto"};
    assert_int_equal(parse("{\"corpora\": [\"x.tsv\"], \"d_ff\": 2048, \"dropout\": 0.3}", kv, 7, &mc, &tc), MT_OK);
    assert_int_equal(mc.d_model, 512);
    assert_int_equal(mc.heads, 8);
    assert_int_equal(mc.d_ff, 2048);
    assert_int_equal(mc.attention, MT_ATTN_MHA);
    assert_int_equal(mc.tie_embeddings, 0);
    assert_true(mc.dropout == 0.3);
    assert_true(tc.lr == 5e-4);
    assert_int_equal(tc.corpora.n, 2);
    assert_string_equal(tc.corpora.item[1], "b.tsv.zst");
    assert_string_equal(tc.resume, "auto");
    /* The model config round-trips through its JSON. */
    mc.vocab_size = 1000;
    char *js;
    assert_int_equal(mt_model_config_to_json(&mc, &js), MT_OK);
    mt_model_config back;
    assert_int_equal(mt_model_config_from_json(js, "js", &back), MT_OK);
    assert_memory_equal(&back, &mc, sizeof mc);
    mt_sys_free(js);
}

static void test_errors_name_the_key(void **state) {
    (void)state;
    expect("{\"corpora\": [\"x\"], \"d_modle\": 3}", NULL, 0, MT_ERR_CONFIG, "'d_modle'");
    expect("{\"corpora\": [\"x\"], \"d_model\": \"big\"}", NULL, 0, MT_ERR_CONFIG, "'d_model' is a string");
    expect("{\"corpora\": [\"x\"], \"d_model\": 250, \"heads\": 4, \"d_rope\": 2}", NULL, 0, MT_ERR_CONFIG,
           "d_model (250) is not divisible by heads (4)");
    expect("{\"corpora\": [\"x\"], \"d_rope\": 7}", NULL, 0, MT_ERR_CONFIG, "d_rope (7) must be even");
    expect("{\"corpora\": [\"x\"], \"dropout\": 1.5}", NULL, 0, MT_ERR_CONFIG, "'dropout'");
    expect("{\"corpora\": [\"x\"], \"attention\": \"gqa\"}", NULL, 0, MT_ERR_CONFIG, "'attention' = 'gqa'");
    expect("{\"corpora\": [\"x\"], \"heads\": 0}", NULL, 0, MT_ERR_CONFIG, "'heads'");
    expect("{\"corpora\": []}", NULL, 0, MT_ERR_CONFIG, "'corpora'");
    expect("{\"corpora\": [\"x\"],\n \"lr\": }", NULL, 0, MT_ERR_FORMAT, "line 2");
    const char *kv1[] = {"layers_enc", "three"};
    expect("{\"corpora\": [\"x\"]}", kv1, 1, MT_ERR_CONFIG, "'layers_enc' needs an integer");
    const char *kv2[] = {"no_such_key", "1"};
    expect("{\"corpora\": [\"x\"]}", kv2, 1, MT_ERR_CONFIG, "'no_such_key'");
    const char *kv3[] = {"tie_embeddings", "maybe"};
    expect("{\"corpora\": [\"x\"]}", kv3, 1, MT_ERR_CONFIG, "'tie_embeddings'");
    /* MHA needs an even head dimension (rotary pairs). */
    const char *kv4[] = {"attention", "mha", "d_model", "36", "heads", "4"};
    expect("{\"corpora\": [\"x\"]}", kv4, 3, MT_ERR_CONFIG, "d_model / heads (9) must be even");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_overrides),
        cmocka_unit_test(test_errors_name_the_key),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL) ? 1 : 0;
}
