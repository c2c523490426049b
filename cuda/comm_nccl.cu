/*
 * comm_nccl.cu — the NCCL communicator behind engine/comm/nccl.h: nonblocking communicators, every
 * CUDA/NCCL status checked, operations waited on with a deadline while ncclCommGetAsyncError is
 * polled, ncclCommAbort on a timeout or an asynchronous error. Buffers in host memory (the
 * trainer's scalar sums and agreements) are staged through a device buffer of the communicator:
 * NCCL reads and writes device memory only.
 */
#include <cuda_runtime.h>
#include <nccl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern "C" {
#include "comm/nccl.h"
}

static_assert(sizeof(ncclUniqueId) == MT_NCCL_ID_BYTES, "ncclUniqueId size");

struct mt_nccl {
    ncclComm_t comm;
    cudaStream_t stream;
    cudaEvent_t done;
    float *scratch;       /* (1) the barrier's all-reduce */
    void *stage;          /* device copy of host buffers (grown on demand) */
    size_t stage_bytes;
    int device, rank, world;
    double timeout_s;
    int aborted;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Every status through these two: the call, the file and the line into err. */
#define CK_CUDA(call)                                                                                          \
    do {                                                                                                       \
        cudaError_t e_ = (call);                                                                               \
        if (e_ != cudaSuccess) {                                                                               \
            snprintf(err, cap, "%s: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, __LINE__);           \
            return e_ == cudaErrorNoDevice || e_ == cudaErrorInvalidDevice || e_ == cudaErrorInsufficientDriver \
                       ? MT_NCCL_NO_DEVICE                                                                     \
                       : MT_NCCL_FAILED;                                                                       \
        }                                                                                                      \
    } while (0)

#define CK_NCCL(c, call)                                                                                       \
    do {                                                                                                       \
        ncclResult_t r_ = (call);                                                                              \
        if (r_ == ncclInProgress && (c)) r_ = wait_ready((c), err, cap);                                       \
        if (r_ != ncclSuccess) {                                                                               \
            if (!err[0])                                                                                       \
                snprintf(err, cap, "%s: %s%s%s (%s:%d)", #call, ncclGetErrorString(r_), (c) ? ": " : "",        \
                         (c) ? ncclGetLastError((c)->comm) : "", __FILE__, __LINE__);                           \
            if ((c)) abort_comm(c);                                                                            \
            return r_ == ncclInProgress ? MT_NCCL_TIMEOUT : MT_NCCL_FAILED;                                    \
        }                                                                                                      \
    } while (0)

static void abort_comm(mt_nccl *c) {
    if (c->comm && !c->aborted) {
        ncclCommAbort(c->comm); /* its own status cannot be acted on: the communicator is gone either way */
        c->aborted = 1;
    }
}

/* Polls the asynchronous error of a nonblocking communicator until it leaves ncclInProgress. */
static ncclResult_t wait_ready(mt_nccl *c, char *err, size_t cap) {
    double deadline = now_s() + c->timeout_s;
    for (;;) {
        ncclResult_t a;
        ncclResult_t r = ncclCommGetAsyncError(c->comm, &a);
        if (r != ncclSuccess) return r;
        if (a != ncclInProgress) return a;
        if (now_s() > deadline) {
            snprintf(err, cap, "NCCL rank %d of %d: not ready within %.0f s (a peer is gone or stopped)", c->rank,
                     c->world, c->timeout_s);
            return ncclInProgress;
        }
        struct timespec ts = {0, 100 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Waits for the work enqueued on the stream, bounded, polling the communicator's error. */
static int wait_done(mt_nccl *c, const char *op, char *err, size_t cap) {
    CK_CUDA(cudaEventRecord(c->done, c->stream));
    double deadline = now_s() + c->timeout_s;
    for (;;) {
        cudaError_t q = cudaEventQuery(c->done);
        if (q == cudaSuccess) return MT_NCCL_OK;
        if (q != cudaErrorNotReady) CK_CUDA(q);
        ncclResult_t a;
        CK_NCCL((mt_nccl *)NULL, ncclCommGetAsyncError(c->comm, &a));
        if (a != ncclSuccess && a != ncclInProgress) {
            snprintf(err, cap, "NCCL %s on rank %d of %d: %s: %s", op, c->rank, c->world, ncclGetErrorString(a),
                     ncclGetLastError(c->comm));
            abort_comm(c);
            return MT_NCCL_FAILED;
        }
        if (now_s() > deadline) {
            snprintf(err, cap, "NCCL %s on rank %d of %d: not done within %.0f s (a peer is gone or stopped)", op,
                     c->rank, c->world, c->timeout_s);
            abort_comm(c);
            return MT_NCCL_TIMEOUT;
        }
        struct timespec ts = {0, 50 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* 1 when p is host memory (pageable or pinned): NCCL only takes device memory. */
static int is_host(const void *p) {
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        (void)cudaGetLastError(); /* older runtimes fail on pageable memory instead of naming it */
        return 1;
    }
    return a.type == cudaMemoryTypeUnregistered || a.type == cudaMemoryTypeHost;
}

/* A device buffer of at least bytes for staging host buffers. */
static int stage_reserve(mt_nccl *c, size_t bytes, char *err, size_t cap) {
    if (bytes <= c->stage_bytes) return MT_NCCL_OK;
    if (c->stage) CK_CUDA(cudaFree(c->stage));
    c->stage = NULL;
    c->stage_bytes = 0;
    CK_CUDA(cudaMalloc(&c->stage, bytes));
    c->stage_bytes = bytes;
    return MT_NCCL_OK;
}

static int check_device(int device, char *err, size_t cap) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || device >= n) {
        snprintf(err, cap, "NCCL: cuda:%d: %s", device,
                 e != cudaSuccess ? cudaGetErrorString(e) : n == 0 ? "no CUDA device is present" : "no such device");
        return MT_NCCL_NO_DEVICE;
    }
    CK_CUDA(cudaSetDevice(device));
    return MT_NCCL_OK;
}

extern "C" int mt_nccl_unique_id(int device, void *id, char *err, size_t cap) {
    err[0] = 0;
    int rc = check_device(device, err, cap);
    if (rc != MT_NCCL_OK) return rc;
    ncclUniqueId u;
    CK_NCCL((mt_nccl *)NULL, ncclGetUniqueId(&u));
    memcpy(id, &u, sizeof u);
    return MT_NCCL_OK;
}

extern "C" int mt_nccl_create(int device, int rank, int world, const void *id, double timeout_s, mt_nccl **out,
                              char *err, size_t cap) {
    err[0] = 0;
    int rc = check_device(device, err, cap);
    if (rc != MT_NCCL_OK) return rc;
    mt_nccl *c = (mt_nccl *)calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, cap, "NCCL: out of memory");
        return MT_NCCL_FAILED;
    }
    c->device = device;
    c->rank = rank;
    c->world = world;
    c->timeout_s = timeout_s;
    rc = MT_NCCL_OK;
    cudaError_t e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaMalloc((void **)&c->scratch, sizeof(float));
    if (e != cudaSuccess) {
        snprintf(err, cap, "NCCL: cuda:%d: %s", device, cudaGetErrorString(e));
        mt_nccl_free(c);
        return MT_NCCL_FAILED;
    }
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclResult_t r = ncclCommInitRankConfig(&c->comm, world, u, rank, &cfg);
    if (r == ncclInProgress || r == ncclSuccess) r = wait_ready(c, err, cap);
    if (r != ncclSuccess) {
        if (!err[0])
            snprintf(err, cap, "ncclCommInitRankConfig (rank %d of %d, cuda:%d): %s", rank, world, device,
                     ncclGetErrorString(r));
        abort_comm(c);
        c->comm = NULL;
        mt_nccl_free(c);
        return r == ncclInProgress ? MT_NCCL_TIMEOUT : MT_NCCL_FAILED;
    }
    *out = c;
    return MT_NCCL_OK;
}

/* Host buffers: copied into the stage before the operation and back after it, on the operation's
 * stream, so wait_done covers the copies too. */
extern "C" int mt_nccl_allreduce(mt_nccl *c, void *buf, size_t n, int bf16, int avg, char *err, size_t cap) {
    err[0] = 0;
    CK_CUDA(cudaSetDevice(c->device));
    size_t bytes = n * (bf16 ? 2 : 4);
    void *d = buf;
    if (bytes && is_host(buf)) {
        int rc = stage_reserve(c, bytes, err, cap);
        if (rc != MT_NCCL_OK) return rc;
        d = c->stage;
        CK_CUDA(cudaMemcpyAsync(d, buf, bytes, cudaMemcpyHostToDevice, c->stream));
    }
    CK_NCCL(c, ncclAllReduce(d, d, n, bf16 ? ncclBfloat16 : ncclFloat32, avg ? ncclAvg : ncclSum, c->comm, c->stream));
    if (d != buf) CK_CUDA(cudaMemcpyAsync(buf, d, bytes, cudaMemcpyDeviceToHost, c->stream));
    return wait_done(c, "all-reduce", err, cap);
}

extern "C" int mt_nccl_broadcast(mt_nccl *c, void *buf, size_t bytes, int root, char *err, size_t cap) {
    err[0] = 0;
    CK_CUDA(cudaSetDevice(c->device));
    void *d = buf;
    if (bytes && is_host(buf)) {
        int rc = stage_reserve(c, bytes, err, cap);
        if (rc != MT_NCCL_OK) return rc;
        d = c->stage;
        if (c->rank == root) CK_CUDA(cudaMemcpyAsync(d, buf, bytes, cudaMemcpyHostToDevice, c->stream));
    }
    CK_NCCL(c, ncclBroadcast(d, d, bytes, ncclUint8, root, c->comm, c->stream));
    if (d != buf) CK_CUDA(cudaMemcpyAsync(buf, d, bytes, cudaMemcpyDeviceToHost, c->stream));
    return wait_done(c, "broadcast", err, cap);
}

/* Staged, in place: this rank's part goes to its slot of the stage. */
extern "C" int mt_nccl_allgather(mt_nccl *c, const void *in, void *out, size_t bytes, char *err, size_t cap) {
    err[0] = 0;
    CK_CUDA(cudaSetDevice(c->device));
    size_t total = bytes * (size_t)c->world;
    if (bytes && (is_host(in) || is_host(out))) {
        int rc = stage_reserve(c, total, err, cap);
        if (rc != MT_NCCL_OK) return rc;
        char *d = (char *)c->stage, *mine = d + bytes * (size_t)c->rank;
        CK_CUDA(cudaMemcpyAsync(mine, in, bytes, cudaMemcpyDefault, c->stream));
        CK_NCCL(c, ncclAllGather(mine, d, bytes, ncclUint8, c->comm, c->stream));
        CK_CUDA(cudaMemcpyAsync(out, d, total, cudaMemcpyDefault, c->stream));
    } else {
        CK_NCCL(c, ncclAllGather(in, out, bytes, ncclUint8, c->comm, c->stream));
    }
    return wait_done(c, "all-gather", err, cap);
}

extern "C" int mt_nccl_barrier(mt_nccl *c, char *err, size_t cap) {
    err[0] = 0;
    CK_CUDA(cudaSetDevice(c->device));
    CK_NCCL(c, ncclAllReduce(c->scratch, c->scratch, 1, ncclFloat32, ncclSum, c->comm, c->stream));
    return wait_done(c, "barrier", err, cap);
}

extern "C" void mt_nccl_abort(mt_nccl *c) {
    if (!c) return;
    abort_comm(c);
    mt_nccl_free(c);
}

extern "C" void mt_nccl_free(mt_nccl *c) {
    if (!c) return;
    if (c->comm && !c->aborted) {
        /* Finalize flushes and may be in progress; past the timeout, abort instead of destroy. */
        char err[256] = "";
        size_t cap = sizeof err;
        ncclResult_t r = ncclCommFinalize(c->comm);
        if (r == ncclInProgress || r == ncclSuccess) r = wait_ready(c, err, cap);
        if (r == ncclSuccess) {
            if (ncclCommDestroy(c->comm) != ncclSuccess) abort_comm(c);
        } else {
            abort_comm(c);
        }
    }
    if (c->scratch) cudaFree(c->scratch);
    if (c->stage) cudaFree(c->stage);
    if (c->done) cudaEventDestroy(c->done);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}
