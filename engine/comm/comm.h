/*
 * comm.h — the collective communicator of data-parallel training, with NCCL's semantics: created
 * from (rank, world size, rendezvous address), all-reduce (sum, average; f32 and bf16), broadcast,
 * all-gather, barrier, each blocking or asynchronous (a work handle to poll or wait on), an error
 * poll, abort and free. Collectives must be issued in the same order on every rank.
 *
 * CPU ranks use Gloo's TCP transport (gloo_shim.cc), GPU ranks NCCL (cuda/comm_nccl.cu, nccl.h; in
 * builds with CUDA and NCCL, otherwise MT_ERR_NO_DEVICE); rank 0 serves the rendezvous store (store.h)
 * through which the ranks exchange their addresses and agree on a handshake (world size, config and
 * weights hashes): a rank whose handshake differs from rank 0's is refused on every rank, with a
 * message naming the difference. Asynchronous operations run in FIFO order on a thread of the
 * communicator, so the caller computes while they travel.
 *
 * Every wait is bounded by timeout_s. A failure (a peer that died, stopped answering, or a network
 * that dropped) fails the operation and every later one with a message naming the operation and
 * the lost rank(s); the communicator is then only good for mt_comm_abort / mt_comm_free.
 */
#ifndef MT_COMM_COMM_H
#define MT_COMM_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "microtensor.h"

typedef struct mt_comm mt_comm;
typedef struct mt_comm_work mt_comm_work;

typedef enum mt_comm_op { MT_COMM_SUM = 0, MT_COMM_AVG = 1 } mt_comm_op;

typedef struct mt_comm_options {
    double timeout_s;       /* bound of the rendezvous and of every operation (<= 0: 60) */
    const char *handshake;  /* text every rank must agree with rank 0 on (NULL: nothing) */
    /* Names how this rank's handshake differs from rank 0's into msg (NULL: "handshake differs"). */
    void (*diff)(const char *mine, const char *rank0, char *msg, size_t cap);
    int use_nccl;           /* 1: a GPU rank (NCCL; buffers in device memory, or host memory staged
                             * through the device); 0: a CPU rank (Gloo) */
    int device;             /* the CUDA device of a GPU rank */
} mt_comm_options;

/* rendezvous: "HOST:PORT" of rank 0's store; rank 0 listens there, the others connect (retrying
 * until timeout_s). */
mt_status mt_comm_create(int rank, int world, const char *rendezvous, const mt_comm_options *opt, mt_comm **out);
int mt_comm_rank(const mt_comm *c);
int mt_comm_world(const mt_comm *c);

/* In place over buf (n elements of dtype MT_DTYPE_F32 or MT_DTYPE_BF16). work NULL: blocking;
 * otherwise *work receives a handle for mt_comm_test / mt_comm_wait, and buf must stay untouched
 * until the work completed. */
mt_status mt_comm_allreduce(mt_comm *c, void *buf, size_t n, mt_dtype dtype, mt_comm_op op, mt_comm_work **work);
mt_status mt_comm_broadcast(mt_comm *c, void *buf, size_t bytes, int root, mt_comm_work **work);
/* out receives world * bytes: rank r's in at r * bytes. */
mt_status mt_comm_allgather(mt_comm *c, const void *in, void *out, size_t bytes, mt_comm_work **work);
mt_status mt_comm_barrier(mt_comm *c);

/* *done = 1 when the work finished (successfully or not; its status is returned then, and the handle
 * stays valid until mt_comm_wait). */
mt_status mt_comm_test(mt_comm_work *w, int *done);
/* Waits (bounded) for the work, frees it, returns its status. */
mt_status mt_comm_wait(mt_comm_work *w);
/* The communicator's asynchronous error: MT_OK, or the first failure (message in mt_last_error()). */
mt_status mt_comm_error(mt_comm *c);
/* Seconds the communicator's thread has spent inside operations (for overlap accounting). */
double mt_comm_busy_seconds(mt_comm *c);
/* Fails every queued and later operation at once; mt_comm_free then closes without a goodbye, so
 * the other ranks see this rank as lost. An operation already inside Gloo ends at its timeout. */
void mt_comm_abort(mt_comm *c);
/* Frees (NULL: no-op). A communicator whose thread is still inside a collective that cannot end
 * (a stopped peer) is abandoned to its own timeout rather than waited on forever. */
void mt_comm_free(mt_comm *c);

#endif
