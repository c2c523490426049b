/*
 * test_io.c — engine/io: the zstd-transparent reader (lines, CRLF, long lines, empty, truncated and
 * corrupt streams), the atomic writer (content, .zst round trip, abort and failure leave the old
 * file), SHA-256 against the FIPS 180-2 test vectors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <zstd.h>

#include "core/alloc.h"
#include "io/io.h"
#include "text_test.h"

static char dir[512];

static void path_of(char *buf, const char *name) { tt_path(buf, 1024, dir, name); }

static void write_zst(const char *path, const char *data, size_t len, int level) {
    size_t cap = ZSTD_compressBound(len);
    void *c = malloc(cap);
    size_t n = ZSTD_compress(c, cap, data, len, level);
    assert_false(ZSTD_isError(n));
    assert_int_equal(tt_write(path, c, n), 0);
    free(c);
}

/* Lines of a file, joined with '|' (to compare in one assert). */
static void lines_of(const char *path, char *out, size_t cap) {
    mt_reader *r = NULL;
    assert_int_equal(mt_reader_open(path, &r), MT_OK);
    out[0] = '\0';
    const char *l;
    size_t n;
    uint64_t expect = 0;
    for (;;) {
        assert_int_equal(mt_reader_line(r, &l, &n), MT_OK);
        if (!l) break;
        assert_int_equal(mt_reader_lineno(r), ++expect);
        assert_int_equal(strlen(l), n);
        strncat(out, l, cap - strlen(out) - 2);
        strcat(out, "|");
    }
    mt_reader_close(r);
}

static void test_lines_plain_and_zst(void **state) {
    (void)state;
    const char *text = "first\nsecond\r\n\nlast without newline";
    char p[1024], z[1024], got[4096];
    path_of(p, "a.txt");
    path_of(z, "a.txt.zst");
    assert_int_equal(tt_write_str(p, text), 0);
    write_zst(z, text, strlen(text), 3);
    lines_of(p, got, sizeof got);
    assert_string_equal(got, "first|second||last without newline|");
    lines_of(z, got, sizeof got);
    assert_string_equal(got, "first|second||last without newline|");
}

static void test_empty_files(void **state) {
    (void)state;
    char p[1024], z[1024], got[64];
    path_of(p, "empty.txt");
    path_of(z, "empty.txt.zst");
    assert_int_equal(tt_write(p, "", 0), 0);
    assert_int_equal(tt_write(z, "", 0), 0); /* an empty file is empty, compressed or not */
    lines_of(p, got, sizeof got);
    assert_string_equal(got, "");
    lines_of(z, got, sizeof got);
    assert_string_equal(got, "");
    char *data = NULL;
    size_t len = 1;
    assert_int_equal(mt_file_read_all(z, &data, &len), MT_OK);
    assert_int_equal(len, 0);
    assert_int_equal(data[0], '\0');
    mt_sys_free(data);
}

static void test_long_lines_and_many_frames(void **state) {
    (void)state;
    /* a 1 MiB line between two short ones, compressed as two concatenated frames */
    size_t big = 1u << 20;
    char *text = malloc(big + 64);
    strcpy(text, "head\n");
    size_t n = 5;
    for (size_t i = 0; i < big; i++) text[n++] = (char)('a' + i % 26);
    memcpy(text + n, "\ntail\n", 6);
    n += 6;
    char z[1024];
    path_of(z, "big.zst");
    size_t cap = ZSTD_compressBound(n) * 2;
    char *c = malloc(cap);
    size_t half = n / 2;
    size_t k1 = ZSTD_compress(c, cap, text, half, 1);
    size_t k2 = ZSTD_compress(c + k1, cap - k1, text + half, n - half, 1);
    assert_int_equal(tt_write(z, c, k1 + k2), 0);
    mt_reader *r = NULL;
    assert_int_equal(mt_reader_open(z, &r), MT_OK);
    const char *l;
    size_t len;
    assert_int_equal(mt_reader_line(r, &l, &len), MT_OK);
    assert_string_equal(l, "head");
    assert_int_equal(mt_reader_line(r, &l, &len), MT_OK);
    assert_int_equal(len, big);
    assert_memory_equal(l, text + 5, big);
    assert_int_equal(mt_reader_line(r, &l, &len), MT_OK);
    assert_string_equal(l, "tail");
    assert_int_equal(mt_reader_line(r, &l, &len), MT_OK);
    assert_null(l);
    mt_reader_close(r);
    char *all = NULL;
    assert_int_equal(mt_file_read_all(z, &all, &len), MT_OK);
    assert_int_equal(len, n);
    assert_memory_equal(all, text, n);
    mt_sys_free(all);
    free(c);
    free(text);
}

static void test_bad_zstd(void **state) {
    (void)state;
    const char *text = "some text that will be cut short\nand more text here\n";
    char z[1024], t[1024], junk[1024];
    path_of(z, "full.zst");
    path_of(t, "trunc.zst");
    path_of(junk, "junk.zst");
    write_zst(z, text, strlen(text), 3);
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(mt_file_read_all(z, &data, &len), MT_OK);
    mt_sys_free(data);
    /* the same frame cut in half */
    FILE *f = fopen(z, "rb");
    char buf[512];
    size_t k = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_int_equal(tt_write(t, buf, k / 2), 0);
    assert_int_equal(mt_file_read_all(t, &data, &len), MT_ERR_FORMAT);
    assert_non_null(strstr(mt_last_error(), "trunc.zst"));
    assert_non_null(strstr(mt_last_error(), "truncated"));
    assert_int_equal(tt_write_str(junk, "this is not zstd at all\n"), 0);
    assert_int_equal(mt_file_read_all(junk, &data, &len), MT_ERR_FORMAT);
    assert_non_null(strstr(mt_last_error(), "junk.zst"));
    char missing[1024];
    path_of(missing, "does-not-exist.txt");
    mt_reader *r = NULL;
    assert_int_equal(mt_reader_open(missing, &r), MT_ERR_NOT_FOUND);
    assert_non_null(strstr(mt_last_error(), "does-not-exist.txt"));
}

static int count_tmp_files(void) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

static void test_atomic_writer(void **state) {
    (void)state;
    char p[1024], z[1024];
    path_of(p, "out.json");
    path_of(z, "out.json.zst");
    assert_int_equal(mt_file_write_atomic(p, "old", 3), MT_OK);
    /* an aborted write leaves the old content and no temporary file */
    mt_writer *w = NULL;
    assert_int_equal(mt_writer_open(p, NULL, &w), MT_OK);
    assert_int_equal(mt_writer_write(w, "new content", 11), MT_OK);
    assert_int_equal(count_tmp_files(), 1);
    mt_writer_abort(w);
    assert_int_equal(count_tmp_files(), 0);
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(mt_file_read_all(p, &data, &len), MT_OK);
    assert_string_equal(data, "old");
    mt_sys_free(data);
    /* a committed write replaces it; many small writes go through the buffer */
    assert_int_equal(mt_writer_open(p, NULL, &w), MT_OK);
    for (int i = 0; i < 10000; i++) assert_int_equal(mt_writer_write(w, "0123456789", 10), MT_OK);
    assert_int_equal(mt_writer_commit(w), MT_OK);
    assert_int_equal(mt_file_read_all(p, &data, &len), MT_OK);
    assert_int_equal(len, 100000);
    assert_memory_equal(data + 99990, "0123456789", 10);
    mt_sys_free(data);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    mode_t um = umask(0);
    umask(um);
    assert_int_equal(sb.st_mode & 0777, 0666 & ~um);
    /* .zst compresses on write; the reader gives the bytes back, and the file really is zstd */
    size_t big = 300000;
    char *text = malloc(big);
    for (size_t i = 0; i < big; i++) text[i] = (char)('a' + (i * 7) % 13);
    assert_int_equal(mt_file_write_atomic(z, text, big), MT_OK);
    assert_int_equal(stat(z, &sb), 0);
    assert_true((size_t)sb.st_size < big / 10);
    assert_int_equal(mt_file_read_all(z, &data, &len), MT_OK);
    assert_int_equal(len, big);
    assert_memory_equal(data, text, big);
    mt_sys_free(data);
    FILE *f = fopen(z, "rb");
    unsigned char magic[4];
    assert_int_equal(fread(magic, 1, 4, f), 4);
    fclose(f);
    assert_int_equal(magic[0], 0x28);
    assert_int_equal(magic[1], 0xB5);
    assert_int_equal(magic[2], 0x2F);
    assert_int_equal(magic[3], 0xFD);
    free(text);
    /* a directory that does not exist: an error naming the path, nothing created */
    char bad[1024];
    path_of(bad, "no-such-dir/x.json");
    assert_int_equal(mt_file_write_atomic(bad, "x", 1), MT_ERR_IO);
    assert_non_null(strstr(mt_last_error(), "no-such-dir/x.json"));
    assert_int_equal(count_tmp_files(), 0);
}

static void test_sha256(void **state) {
    (void)state;
    uint8_t d[MT_SHA256_LEN];
    char hex[MT_SHA256_HEX_LEN];
    /* FIPS 180-2, appendix B */
    assert_int_equal(mt_sha256("abc", 3, d), MT_OK);
    assert_string_equal(mt_sha256_hex(d, hex), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_int_equal(mt_sha256(two, strlen(two), d), MT_OK);
    assert_string_equal(mt_sha256_hex(d, hex), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    assert_int_equal(mt_sha256("", 0, d), MT_OK);
    assert_string_equal(mt_sha256_hex(d, hex), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* one million 'a', fed in uneven pieces */
    mt_sha256_ctx *c = NULL;
    assert_int_equal(mt_sha256_init(&c), MT_OK);
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    size_t off = 0, step = 1;
    while (off < 1000000) {
        size_t k = step < 1000000 - off ? step : 1000000 - off;
        assert_int_equal(mt_sha256_update(c, a + off, k), MT_OK);
        off += k;
        step = step * 3 + 1;
    }
    assert_int_equal(mt_sha256_final(c, d), MT_OK);
    assert_string_equal(mt_sha256_hex(d, hex), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    char p[1024];
    path_of(p, "million.txt");
    assert_int_equal(tt_write(p, a, 1000000), 0);
    uint8_t d2[MT_SHA256_LEN];
    assert_int_equal(mt_sha256_file(p, d2), MT_OK);
    assert_memory_equal(d, d2, MT_SHA256_LEN);
    free(a);
}

static int setup(void **state) {
    (void)state;
    return tt_mkdtemp(dir, sizeof dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    tt_rmdir(dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_plain_and_zst), cmocka_unit_test(test_empty_files),
        cmocka_unit_test(test_long_lines_and_many_frames), cmocka_unit_test(test_bad_zstd),
        cmocka_unit_test(test_atomic_writer), cmocka_unit_test(test_sha256),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
