/*
 * token_file.h — the token file format, one reader for mt-server and its clients: the token is the
 * file's first line without surrounding blanks; an empty first line, or one holding a NUL byte (the
 * token would be silently cut at it), is an error. Part of mt_frame, the
 * piece the server and the clients share.
 */
#ifndef MT_PROTO_TOKEN_FILE_H
#define MT_PROTO_TOKEN_FILE_H

#include <stdbool.h>
#include <stddef.h>

/* The token of the file at path, malloc'd; NULL with err filled. *loose_perms (may be NULL) is set
 * when group or others may read the file. The line buffer is wiped before returning. */
char *mt_token_file_read(const char *path, bool *loose_perms, char *err, size_t errlen);

#endif
