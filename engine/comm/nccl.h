/*
 * nccl.h — the C face of the NCCL communicator (cuda/comm_nccl.cu), for comm.c: plain C types only,
 * so the engine never includes a CUDA header. Built when CUDA and NCCL are found (MT_WITH_NCCL).
 *
 * Communicators are nonblocking (ncclConfig_t.blocking = 0): every call that may return
 * ncclInProgress is followed by a bounded poll of ncclCommGetAsyncError, every operation waits on a
 * CUDA event with the same bound, and a timeout or an asynchronous error aborts the communicator
 * (ncclCommAbort: ncclCommDestroy would hang on a peer that is gone). Every CUDA and NCCL status is
 * checked; failures return nonzero with the call, file and line in err.
 */
#ifndef MT_COMM_NCCL_H
#define MT_COMM_NCCL_H

#include <stddef.h>

#define MT_NCCL_ID_BYTES 128 /* sizeof(ncclUniqueId) */

typedef struct mt_nccl mt_nccl;

enum { MT_NCCL_OK = 0, MT_NCCL_FAILED = 1, MT_NCCL_NO_DEVICE = 2, MT_NCCL_TIMEOUT = 3 };

/* Rank 0: a fresh unique id (MT_NCCL_ID_BYTES) for the others, after checking that device exists. */
int mt_nccl_unique_id(int device, void *id, char *err, size_t cap);
/* Joins rank of world on CUDA device `device` with rank 0's id; bounded by timeout_s. */
int mt_nccl_create(int device, int rank, int world, const void *id, double timeout_s, mt_nccl **out, char *err,
                   size_t cap);
/* In place: n f32 (bf16 when bf16) elements, summed or averaged (avg). Buffers of every operation
 * are device memory of `device`, or host memory, which is staged through a device buffer (slower:
 * for the trainer's few scalars). */
int mt_nccl_allreduce(mt_nccl *c, void *buf, size_t n, int bf16, int avg, char *err, size_t cap);
int mt_nccl_broadcast(mt_nccl *c, void *buf, size_t bytes, int root, char *err, size_t cap);
int mt_nccl_allgather(mt_nccl *c, const void *in, void *out, size_t bytes, char *err, size_t cap);
int mt_nccl_barrier(mt_nccl *c, char *err, size_t cap);
/* Aborts (never blocks on peers) and frees. NULL: no-op. */
void mt_nccl_abort(mt_nccl *c);
/* Finalizes within the timeout (aborting past it) and frees. NULL: no-op. */
void mt_nccl_free(mt_nccl *c);

#endif
