/*
 * auth.h — bearer tokens. The translate token and the admin token are read from files at startup and
 * kept only as SHA-256 digests (and the cluster token of cluster mode); a Hello's token is hashed and compared with CRYPTO_memcmp against
 * both, always, so neither the match nor the token's length shows in the timing.
 */
#ifndef MT_NET_AUTH_H
#define MT_NET_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "microtensor.pb-c.h"

typedef struct mt_auth {
    bool has_user, has_admin, has_cluster;
    unsigned char user[32], admin[32], cluster[32];
} mt_auth;

/* Loads the token files (either may be NULL), read by mt_token_file_read (token_file.h). Warns when a file is readable by group or others.
 * A token too long for a Hello within max_hello_bytes is refused (nobody could authenticate).
 * Returns 0 or -1 (err filled). */
int mt_auth_load(mt_auth *a, const char *token_file, const char *admin_token_file, uint64_t max_hello_bytes,
                 char *err, size_t errlen);

/* The cluster token (--cluster-token-file; NULL: none): it grants ROLE_CLUSTER, cluster frames only,
 * and must differ from the other two. Returns 0 or -1 (err filled). */
int mt_auth_load_cluster(mt_auth *a, const char *cluster_token_file, uint64_t max_hello_bytes, char *err,
                         size_t errlen);

/* Translate or admin tokens are configured: every Hello must carry one. */
static inline bool mt_auth_enabled(const mt_auth *a) { return a->has_user || a->has_admin; }

/* The role a Hello token grants: ROLE_ADMIN (admin token, or no tokens configured at all),
 * ROLE_USER (translate token), ROLE_CLUSTER (cluster token), ROLE_NONE (refused). Constant time in the token's content. */
Mt__V1__Role mt_auth_check(const mt_auth *a, const char *token);

#endif
