/*
 * gloo_shim.h — the C face of the Gloo library (C++), included by comm.c only. Every function catches
 * every C++ exception and returns nonzero with Gloo's message in err; no exception crosses into C.
 * Ops run synchronously in the calling thread and end within the context's timeout.
 */
#ifndef MT_COMM_GLOO_SHIM_H
#define MT_COMM_GLOO_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mt_gloo mt_gloo;

/* The rendezvous store Gloo's connectFullMesh uses: set, and get that waits for the key (at most
 * timeout_ms). Return 0 on success; get's *val is malloc'd. */
typedef struct mt_gloo_store {
    int (*set)(void *user, const char *key, const void *val, size_t len);
    int (*get)(void *user, const char *key, int timeout_ms, void **val, size_t *len);
    void *user;
} mt_gloo_store;

/* out[i] = a[i] + b[i] for n elements (out may alias a or b). */
typedef void (*mt_gloo_reduce_fn)(void *out, const void *a, const void *b, size_t n);

/* Connects rank of world over TCP, binding the local address `host`; timeout_ms bounds every op. */
int mt_gloo_create(int rank, int world, const char *host, const mt_gloo_store *store, int timeout_ms, mt_gloo **out,
                   char *err, size_t cap);
int mt_gloo_allreduce(mt_gloo *g, void *buf, size_t n, size_t elem_size, mt_gloo_reduce_fn fn, uint32_t tag, char *err,
                      size_t cap);
int mt_gloo_broadcast(mt_gloo *g, void *buf, size_t bytes, int root, uint32_t tag, char *err, size_t cap);
/* out receives world * bytes: rank r's `in` at r * bytes. */
int mt_gloo_allgather(mt_gloo *g, const void *in, void *out, size_t bytes, uint32_t tag, char *err, size_t cap);
int mt_gloo_barrier(mt_gloo *g, uint32_t tag, char *err, size_t cap);
void mt_gloo_free(mt_gloo *g);

#ifdef __cplusplus
}
#endif

#endif
