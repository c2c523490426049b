/*
 * token_file.c — reads a token file (format in token_file.h).
 */
#include "token_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

char *mt_token_file_read(const char *path, bool *loose_perms, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "token file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (loose_perms) *loose_perms = fstat(fileno(f), &st) == 0 && (st.st_mode & 077);
    char line[4096];
    char *tok = NULL;
    bool nul = false;
    size_t len = 0;
    int ch;
    while (len + 1 < sizeof line && (ch = getc(f)) != EOF) { /* the first line, NULs included */
        line[len++] = (char)ch;
        if (ch == '\n') break;
    }
    line[len] = 0;
    if (memchr(line, 0, len)) {
        nul = true;
    } else {
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        size_t n = strlen(s);
        while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
        if (n) tok = strdup(s);
    }
    fclose(f);
    explicit_bzero(line, sizeof line);
    if (nul) snprintf(err, errlen, "token file %s: the first line holds a NUL byte", path);
    else if (!tok) snprintf(err, errlen, "token file %s: the first line is empty", path);
    return tok;
}
