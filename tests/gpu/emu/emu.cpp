/*
 * emu.cpp — the CUDA execution-model emulator behind emu.h: the block scheduler (fibers, barriers,
 * warp collectives, blocks in a shuffled order), a lazy asynchronous runtime (streams are queues run
 * only when something waits for them) and a reference cuBLAS. Test-only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cublas_v2.h"
#include "cublasLt.h"
#include "cuda_runtime.h"

#include "core/numeric.h" /* the engine's f16/bf16 -> f32, exact conversions */


uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

/* Fiber switching. On x86-64 a few instructions (callee-saved registers, MXCSR and the x87 control
 * word, the stack pointer): ucontext's swapcontext makes a system call per switch, which made the
 * emulator ten times slower. Elsewhere ucontext. */
#if defined(__x86_64__)
extern "C" void emu_ctx_switch(void **save_sp, void *load_sp);
__asm__(".text\n"
        ".globl emu_ctx_switch\n"
        ".type emu_ctx_switch,@function\n"
        "emu_ctx_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  subq $8, %rsp\n  stmxcsr (%rsp)\n  fnstcw 4(%rsp)\n"
        "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
        "  ldmxcsr (%rsp)\n  fldcw 4(%rsp)\n  addq $8, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size emu_ctx_switch, .-emu_ctx_switch\n");
struct emu_ctx {
    void *sp;
};
#else
struct emu_ctx {
    ucontext_t uc;
};
#endif

namespace {

enum { RUN = 0, AT_BAR = 1, AT_WARP = 2, DONE = 3 };

struct Fiber {
    emu_ctx ctx;
    int state;
    uint3 tid;
};

struct Warp {
    uint64_t slot[2][32];
    uint32_t words[2][32][8]; /* emu_warp_gather's posts */
    uint32_t tag[2][32];
    uint32_t gen[32];
};

const size_t STACK_BYTES = 64 * 1024;
std::vector<Fiber> g_f;
/* Fiber stacks, reused across launches and released at exit. */
struct fiber_stacks : std::vector<char *> {
    ~fiber_stacks() {
        for (char *p : *this) free(p);
    }
};
fiber_stacks g_stacks;
std::vector<Warp> g_warps;
emu_ctx g_sched;
int g_cur, g_n;
const std::function<void()> *g_body;
std::vector<unsigned char> g_smem;
cudaError_t g_last = cudaSuccess;
std::mutex g_lock; /* one grid at a time (tests are single-threaded; this keeps it safe anyway) */

void switch_ctx(emu_ctx *from, emu_ctx *to) {
#if defined(__x86_64__)
    emu_ctx_switch(&from->sp, to->sp);
#else
    swapcontext(&from->uc, &to->uc);
#endif
}

void yield_to_scheduler() { switch_ctx(&g_f[g_cur].ctx, &g_sched); }

void fiber_entry() {
    (*g_body)();
    g_f[g_cur].state = DONE;
#if defined(__x86_64__)
    emu_ctx dead;
    switch_ctx(&dead, &g_sched); /* never resumed */
    abort();
#endif
    /* ucontext: uc_link returns to the scheduler */
}

/* A fresh context that starts in fiber_entry on stack [stack, stack + bytes). Under AddressSanitizer
 * the stack is unpoisoned first: the frames of the fiber that last ran on it were abandoned by a
 * context switch, never returned, and left their redzones poisoned. */
void init_ctx(emu_ctx *c, char *stack, size_t bytes) {
#if defined(__SANITIZE_ADDRESS__)
    __asan_unpoison_memory_region(stack, bytes);
#endif
#if defined(__x86_64__)
    uintptr_t top = ((uintptr_t)(stack + bytes)) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = NULL;                   /* keeps the return slot 16-byte aligned, as after a call */
    *--sp = (void *)fiber_entry;    /* the `ret` of emu_ctx_switch lands here */
    for (int i = 0; i < 6; i++) *--sp = NULL; /* rbp rbx r12 r13 r14 r15 */
    uint32_t csr[2];
    __asm__ volatile("stmxcsr %0" : "=m"(csr[0]));
    __asm__ volatile("fnstcw %0" : "=m"(csr[1]));
    sp--;
    memcpy(sp, csr, 8);
    c->sp = sp;
#else
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = bytes;
    c->uc.uc_link = &g_sched.uc;
    makecontext(&c->uc, fiber_entry, 0);
#endif
}

bool run_block(unsigned nthreads) {
    g_n = (int)nthreads;
    if (g_f.size() < nthreads) g_f.resize(nthreads);
    while (g_stacks.size() < nthreads) g_stacks.push_back((char *)malloc(STACK_BYTES));
    unsigned nw = (nthreads + 31) / 32;
    if (g_warps.size() < nw) g_warps.resize(nw);
    for (unsigned w = 0; w < nw; w++) memset(&g_warps[w], 0, sizeof(Warp));
    for (unsigned i = 0; i < nthreads; i++) {
        Fiber &f = g_f[i];
        init_ctx(&f.ctx, g_stacks[i], STACK_BYTES);
        f.state = RUN;
        f.tid.x = i % blockDim.x;
        f.tid.y = (i / blockDim.x) % blockDim.y;
        f.tid.z = i / (blockDim.x * blockDim.y);
    }
    for (;;) {
        int alive = 0;
        for (int i = 0; i < g_n; i++) {
            if (g_f[i].state != RUN) continue;
            g_cur = i;
            threadIdx = g_f[i].tid;
            switch_ctx(&g_sched, &g_f[i].ctx);
        }
        /* Every fiber is now done or parked. Warp collectives first, then the block barrier. */
        bool released = false;
        for (unsigned w = 0; w < nw; w++) {
            int lo = (int)w * 32, hi = lo + 32 < g_n ? lo + 32 : g_n, waiting = 0, other = 0;
            for (int i = lo; i < hi; i++) {
                if (g_f[i].state == AT_WARP) waiting++;
                else if (g_f[i].state != DONE) other++;
            }
            if (waiting && !other) {
                for (int i = lo; i < hi; i++)
                    if (g_f[i].state == AT_WARP) g_f[i].state = RUN;
                released = true;
            }
        }
        int at_bar = 0, at_warp = 0;
        for (int i = 0; i < g_n; i++) {
            if (g_f[i].state != DONE) alive++;
            if (g_f[i].state == AT_BAR) at_bar++;
            if (g_f[i].state == AT_WARP) at_warp++;
        }
        if (!alive) return true;
        if (released) continue;
        if (at_bar == alive) {
            for (int i = 0; i < g_n; i++)
                if (g_f[i].state == AT_BAR) g_f[i].state = RUN;
            continue;
        }
        fprintf(stderr,
                "emu: deadlock in block (%u,%u,%u): %d threads alive, %d at __syncthreads, %d in warp collectives "
                "that cannot complete (divergent barrier or shuffle)\n",
                blockIdx.x, blockIdx.y, blockIdx.z, alive, at_bar, at_warp);
        return false;
    }
}

} // namespace

void __syncthreads(void) {
    g_f[g_cur].state = AT_BAR;
    yield_to_scheduler();
}

uint64_t emu_warp_exchange(uint64_t mine, int src_lane) {
    int i = g_cur, lane = i & 31;
    Warp &w = g_warps[i / 32];
    uint32_t gen = w.gen[lane];
    int b = gen & 1;
    w.slot[b][lane] = mine;
    w.tag[b][lane] = gen;
    g_f[i].state = AT_WARP;
    yield_to_scheduler();
    uint64_t r = (i / 32) * 32 + src_lane < g_n && w.tag[b][src_lane] == gen ? w.slot[b][src_lane] : mine;
    w.gen[lane]++;
    return r;
}

int emu_warp_any(int pred) {
    int i = g_cur, lane = i & 31;
    Warp &w = g_warps[i / 32];
    uint32_t gen = w.gen[lane];
    int b = gen & 1;
    w.slot[b][lane] = pred != 0;
    w.tag[b][lane] = gen;
    g_f[i].state = AT_WARP;
    yield_to_scheduler();
    int any = 0;
    for (int l = 0; l < 32 && (i / 32) * 32 + l < g_n; l++)
        if (w.tag[b][l] == gen && w.slot[b][l]) any = 1;
    w.gen[lane]++;
    return any;
}

void emu_warp_gather(const uint32_t *mine, int n, uint32_t *all) {
    int i = g_cur, lane = i & 31;
    Warp &w = g_warps[i / 32];
    uint32_t gen = w.gen[lane];
    int b = gen & 1;
    memcpy(w.words[b][lane], mine, sizeof(uint32_t) * (size_t)n);
    w.tag[b][lane] = gen;
    g_f[i].state = AT_WARP;
    yield_to_scheduler();
    for (int l = 0; l < 32; l++) {
        if ((i / 32) * 32 + l >= g_n || w.tag[b][l] != gen) {
            fprintf(stderr, "emu: a warp-wide mma with lane %d absent (a partial warp or a divergent call)\n", l);
            abort();
        }
        memcpy(all + (size_t)l * n, w.words[b][l], sizeof(uint32_t) * (size_t)n);
    }
    w.gen[lane]++;
}

/* The element of a bf16 fragment: word r of lane l, half h. */
static float frag_elem(const uint32_t *all, int l, int r, int h) {
    uint32_t u = all[l * 6 + r];
    return mt_bf16_to_f32((uint16_t)(h ? u >> 16 : u & 0xffffu));
}

void emu_mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    uint32_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]}, all[32 * 6];
    emu_warp_gather(mine, 6, all);
    int lane = g_cur & 31, g = lane >> 2, t = lane & 3;
    for (int e = 0; e < 4; e++) {
        int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
        float acc = 0.0f;
        for (int k = 0; k < 16; k++) {
            /* A[row][k]: lane (row % 8) * 4 + (k % 8) / 2, word (row >= 8) + 2 (k >= 8), half k & 1 */
            float av = frag_elem(all, (row & 7) * 4 + ((k & 7) >> 1), (row >> 3) + 2 * (k >> 3), k & 1);
            /* B[k][col]: lane col * 4 + (k % 8) / 2, word 4 + (k >= 8), half k & 1 */
            float bv = frag_elem(all, col * 4 + ((k & 7) >> 1), 4 + (k >> 3), k & 1);
            acc += av * bv;
        }
        d[e] += acc;
    }
}

void *emu_dynamic_smem(void) { return g_smem.data(); }

cudaError_t emu_check_config(dim3 grid, dim3 block, size_t smem) {
    unsigned nthreads = block.x * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535 ||
        nthreads == 0 || nthreads > 1024 || smem > 227 * 1024)
        return g_last = cudaErrorInvalidConfiguration;
    return cudaSuccess;
}

/* Blocks run in a shuffled order (a new permutation per launch, from a fixed seed so a failure
 * reproduces): a GPU gives no order, and a kernel whose result depends on it (float atomics adding
 * in block order) gives different bits from launch to launch here too. */
static uint64_t g_shuffle = 0x9e3779b97f4a7c15ULL;

cudaError_t emu_run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body) {
    if (emu_check_config(grid, block, smem) != cudaSuccess) return g_last;
    unsigned nthreads = block.x * block.y * block.z;
    std::lock_guard<std::mutex> guard(g_lock);
    dim3 saved_grid = gridDim, saved_block = blockDim;
    gridDim = grid;
    blockDim = block;
    g_body = &body;
    uint64_t nb = (uint64_t)grid.x * grid.y * grid.z;
    std::vector<uint64_t> order(nb);
    for (uint64_t i = 0; i < nb; i++) order[i] = i;
    for (uint64_t i = nb; i > 1; i--) {
        g_shuffle ^= g_shuffle << 13;
        g_shuffle ^= g_shuffle >> 7;
        g_shuffle ^= g_shuffle << 17;
        std::swap(order[i - 1], order[g_shuffle % i]);
    }
    for (uint64_t o : order) {
        blockIdx.x = (unsigned)(o % grid.x);
        blockIdx.y = (unsigned)(o / grid.x % grid.y);
        blockIdx.z = (unsigned)(o / ((uint64_t)grid.x * grid.y));
        g_smem.assign(smem ? smem : 1, 0xff); /* NaN bytes: a read before a write shows */
        if (!run_block(nthreads)) {
            gridDim = saved_grid;
            blockDim = saved_block;
            return cudaErrorLaunchFailure;
        }
    }
    gridDim = saved_grid;
    blockDim = saved_block;
    return cudaSuccess;
}

/* ---------------------------------------------------------------------------------------------
 * Runtime (one device). Streams are lazy: a launch, copy or memset is queued on its stream and runs
 * only when the host waits for it (stream/event/device synchronisation, a copy to pageable host
 * memory, cudaFree) or when a stream that waits for it (cudaStreamWaitEvent) runs. So work queued on
 * one stream is NOT visible to another stream that did not wait for it: a missing cross-stream wait
 * reads stale data here every time, where a GPU would do so only sometimes. The legacy default
 * stream (0) runs everything queued, then the call, at once.
 * ------------------------------------------------------------------------------------------- */

static std::unordered_map<void *, size_t> g_allocs;
static std::map<uintptr_t, size_t> g_pinned; /* cudaHostAlloc'd ranges: copies read/write them when run */
static int g_device = 0;
static std::recursive_mutex g_q;             /* the stream queues */
static cudaError_t g_sticky = cudaSuccess;   /* first failure of queued work, returned by the waits */

struct emu_stream {
    std::deque<std::function<cudaError_t()>> q;
    uint64_t enq = 0, done = 0; /* operations queued / run so far */
};
struct emu_event {
    emu_stream *s = nullptr; /* the stream of the last record (null: complete) */
    uint64_t seq = 0;        /* complete once s->done >= seq */
};
static std::vector<emu_stream *> g_streams;

static bool live_stream(emu_stream *s) {
    for (emu_stream *x : g_streams)
        if (x == s) return true;
    return false;
}

/* Runs the operations of s up to number upto. */
static cudaError_t drain(emu_stream *s, uint64_t upto) {
    std::lock_guard<std::recursive_mutex> guard(g_q);
    if (!s || !live_stream(s)) return g_sticky;
    while (s->done < upto && !s->q.empty()) {
        std::function<cudaError_t()> op = std::move(s->q.front());
        s->q.pop_front();
        s->done++;
        cudaError_t e = op();
        if (e != cudaSuccess && g_sticky == cudaSuccess) g_sticky = e;
    }
    return g_sticky;
}

static cudaError_t drain_all(void) {
    std::lock_guard<std::recursive_mutex> guard(g_q);
    for (size_t i = 0; i < g_streams.size(); i++) drain(g_streams[i], g_streams[i]->enq);
    return g_sticky;
}

cudaError_t emu_enqueue(cudaStream_t s, std::function<cudaError_t()> op) {
    std::lock_guard<std::recursive_mutex> guard(g_q);
    if (!s || !live_stream(s)) {
        drain_all();
        cudaError_t e = op();
        if (e != cudaSuccess && g_sticky == cudaSuccess) g_sticky = e;
        return cudaSuccess;
    }
    s->q.push_back(std::move(op));
    s->enq++;
    return cudaSuccess;
}

static bool pinned(const void *p) {
    std::lock_guard<std::recursive_mutex> guard(g_q);
    auto it = g_pinned.upper_bound((uintptr_t)p);
    if (it == g_pinned.begin()) return false;
    --it;
    return (uintptr_t)p < it->first + it->second;
}

cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_last;
    g_last = cudaSuccess;
    return e;
}
const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    default: return "cudaError(emu)";
    }
}
const char *cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
    if (device != 0) return cudaErrorInvalidDevice;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "MicroTensor CUDA emulator (CPU)");
    p->totalGlobalMem = (size_t)8 << 30;
    p->multiProcessorCount = 4;
    p->sharedMemPerBlockOptin = 227 * 1024;
    p->major = 9;
    p->minor = 0;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d) {
    *d = g_device;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
    if (d != 0) return g_last = cudaErrorInvalidDevice;
    g_device = d;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t bytes) {
    size_t r = (bytes + 255) & ~(size_t)255;
    void *q = aligned_alloc(256, r ? r : 256);
    if (!q) return g_last = cudaErrorMemoryAllocation;
    memset(q, 0xcd, r ? r : 256); /* device memory is not zeroed */
    std::lock_guard<std::mutex> guard(g_lock);
    g_allocs[q] = bytes;
    *p = q;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    drain_all(); /* cudaFree waits for the device */
    std::lock_guard<std::mutex> guard(g_lock);
    auto it = g_allocs.find(p);
    if (it == g_allocs.end()) return g_last = cudaErrorInvalidValue;
    g_allocs.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags) {
    (void)flags;
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return g_last = cudaErrorMemoryAllocation;
    std::lock_guard<std::recursive_mutex> guard(g_q);
    g_pinned[(uintptr_t)*p] = bytes ? bytes : 1;
    return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p) {
    if (!p) return cudaSuccess;
    drain_all();
    std::lock_guard<std::recursive_mutex> guard(g_q);
    g_pinned.erase((uintptr_t)p);
    free(p);
    return cudaSuccess;
}
/* A copy to the device runs the stream's queued work, then copies at once (the engine's emulated
 * contexts are CPU contexts whose tensors the op layer may read on the host right after the copy).
 * A copy to pageable host memory waits for the stream (as on a GPU); one to pinned memory, or from
 * device to device, is queued. */
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
    if (!bytes) return cudaSuccess;
    if (kind == cudaMemcpyHostToDevice || (kind == cudaMemcpyDeviceToHost && !pinned(dst))) {
        cudaError_t e = s ? drain(s, s->enq) : drain_all();
        if (e != cudaSuccess) return e;
        memmove(dst, src, bytes);
        return cudaSuccess;
    }
    return emu_enqueue(s, [=]() {
        memmove(dst, src, bytes);
        return cudaSuccess;
    });
}
cudaError_t cudaMemsetAsync(void *dst, int v, size_t bytes, cudaStream_t s) {
    return emu_enqueue(s, [=]() {
        memset(dst, v, bytes);
        return cudaSuccess;
    });
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    (void)flags;
    std::lock_guard<std::recursive_mutex> guard(g_q);
    *s = new emu_stream();
    g_streams.push_back(*s);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    std::lock_guard<std::recursive_mutex> guard(g_q);
    drain(s, s->enq); /* queued work still runs, as on a GPU */
    for (size_t i = 0; i < g_streams.size(); i++)
        if (g_streams[i] == s) g_streams.erase(g_streams.begin() + (long)i);
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) { return s ? drain(s, s->enq) : drain_all(); }
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
    (void)flags;
    emu_stream *es = e->s;
    uint64_t seq = e->seq; /* the record in effect now, as on a GPU */
    if (!es) return cudaSuccess;
    return emu_enqueue(s, [=]() { return drain(es, seq); });
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    (void)flags;
    *e = new emu_event();
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    std::lock_guard<std::recursive_mutex> guard(g_q);
    if (!s || !live_stream(s)) {
        drain_all();
        e->s = nullptr;
        return cudaSuccess;
    }
    e->s = s;
    e->seq = s->enq;
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
    std::lock_guard<std::recursive_mutex> guard(g_q);
    if (e->s && live_stream(e->s) && e->s->done < e->seq) return cudaErrorNotReady;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    std::lock_guard<std::recursive_mutex> guard(g_q);
    return e->s ? drain(e->s, e->seq) : g_sticky;
}
cudaError_t cudaDeviceSynchronize(void) { return drain_all(); }
cudaError_t cudaFuncSetAttribute(const void *f, cudaFuncAttribute a, int v) {
    (void)f, (void)a;
    return v > 227 * 1024 ? (g_last = cudaErrorInvalidValue) : cudaSuccess;
}

/* ---------------------------------------------------------------------------------------------
 * cuBLAS (column-major, f32 accumulation)
 * ------------------------------------------------------------------------------------------- */

struct emu_blas {
    cudaStream_t stream = nullptr;
};

cublasStatus_t cublasCreate(cublasHandle_t *h) {
    *h = new emu_blas();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes) {
    (void)h, (void)ws, (void)bytes;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetPointerMode(cublasHandle_t h, cublasPointerMode_t m) {
    (void)h, (void)m;
    return CUBLAS_STATUS_SUCCESS;
}

static float load(const void *p, cudaDataType_t t, long long i) {
    switch (t) {
    case CUDA_R_32F: return ((const float *)p)[i];
    case CUDA_R_16BF: return mt_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return mt_f16_to_f32(((const uint16_t *)p)[i]);
    }
}

/* Rounds f32 to the operand precision a compute type implies (TF32: 10 mantissa bits; BF16: 7). */
static float round_for(float f, cublasComputeType_t c) {
    uint32_t u = __float_as_uint(f);
    if (c == CUBLAS_COMPUTE_32F_FAST_TF32) {
        u += 0xfffu + ((u >> 13) & 1u);
        u &= ~0x1fffu;
    } else if (c == CUBLAS_COMPUTE_32F_FAST_16BF) {
        u += 0x7fffu + ((u >> 16) & 1u);
        u &= ~0xffffu;
    }
    return __uint_as_float(u);
}

static size_t tsize(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

/* The product itself, run when the stream gets to it. */
static void gemm_run(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float al, const void *A,
                     cudaDataType_t at, int lda, long long sa, const void *B, cudaDataType_t bt, int ldb,
                     long long sb, float be, void *C, int ldc, long long sc, int batch, cublasComputeType_t compute) {
    std::vector<float> a((size_t)m * k), b((size_t)k * n);
    for (int bi = 0; bi < batch; bi++) {
        const char *Ab = (const char *)A + (size_t)(bi * sa) * tsize(at);
        const char *Bb = (const char *)B + (size_t)(bi * sb) * tsize(bt);
        float *Cb = (float *)C + bi * sc;
        for (int i = 0; i < m; i++)
            for (int l = 0; l < k; l++)
                a[(size_t)i * k + l] =
                    round_for(load(Ab, at, ta == CUBLAS_OP_N ? i + (long long)l * lda : l + (long long)i * lda), compute);
        for (int j = 0; j < n; j++)
            for (int l = 0; l < k; l++)
                b[(size_t)j * k + l] =
                    round_for(load(Bb, bt, tb == CUBLAS_OP_N ? l + (long long)j * ldb : j + (long long)l * ldb), compute);
        for (int j = 0; j < n; j++) {
            const float *bj = &b[(size_t)j * k];
            for (int i = 0; i < m; i++) {
                const float *ai = &a[(size_t)i * k];
                float acc = 0.0f;
                for (int l = 0; l < k; l++) acc += ai[l] * bj[l];
                float *c = &Cb[i + (long long)j * ldc];
                *c = be == 0.0f ? al * acc : al * acc + be * *c;
            }
        }
    }
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void *alpha, const void *A, cudaDataType_t at, int lda,
                                          long long sa, const void *B, cudaDataType_t bt, int ldb, long long sb,
                                          const void *beta, void *C, cudaDataType_t ct, int ldc, long long sc,
                                          int batch, cublasComputeType_t compute, cublasGemmAlgo_t algo) {
    (void)h, (void)algo;
    if (ct != CUDA_R_32F || at != bt || m < 0 || n < 0 || k < 0 || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) || ldc < m)
        return CUBLAS_STATUS_INVALID_VALUE;
    float al = *(const float *)alpha, be = *(const float *)beta; /* host pointers: read now */
    emu_enqueue(h->stream, [=]() {
        gemm_run(ta, tb, m, n, k, al, A, at, lda, sa, B, bt, ldb, sb, be, C, ldc, sc, batch, compute);
        return cudaSuccess;
    });
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType_t at, int lda, const void *B,
                            cudaDataType_t bt, int ldb, const void *beta, void *C, cudaDataType_t ct, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo) {
    return cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, alpha, A, at, lda, 0, B, bt, ldb, 0, beta, C, ct, ldc, 0, 1,
                                      compute, algo);
}

/* ---------------------------------------------------------------------------------------------
 * cuBLASLt: the matmul with a bias (+ ReLU) epilogue (cublasLt.h)
 * ------------------------------------------------------------------------------------------- */

struct emu_lt {};
struct emu_lt_desc {
    cublasComputeType_t compute;
    cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    const float *bias = nullptr;
    cudaDataType_t bias_type = CUDA_R_32F;
};
struct emu_lt_layout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
};

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    *h = new emu_lt();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale) {
    if (scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    *d = new emu_lt_desc();
    (*d)->compute = compute;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *v,
                                              size_t bytes) {
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB:
        if (bytes != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE;
        (a == CUBLASLT_MATMUL_DESC_TRANSA ? d->ta : d->tb) = *(const cublasOperation_t *)v;
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
        if (bytes != sizeof(cublasLtEpilogue_t)) return CUBLAS_STATUS_INVALID_VALUE;
        d->epilogue = *(const cublasLtEpilogue_t *)v;
        return d->epilogue == CUBLASLT_EPILOGUE_DEFAULT || d->epilogue == CUBLASLT_EPILOGUE_BIAS ||
                       d->epilogue == CUBLASLT_EPILOGUE_RELU_BIAS
                   ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        if (bytes != sizeof(void *)) return CUBLAS_STATUS_INVALID_VALUE;
        d->bias = *(const float *const *)v;
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
        if (bytes != sizeof(cudaDataType_t)) return CUBLAS_STATUS_INVALID_VALUE;
        d->bias_type = *(const cudaDataType_t *)v;
        return d->bias_type == CUDA_R_32F ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_NOT_SUPPORTED;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t type, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
    if (ld < (int64_t)rows) return CUBLAS_STATUS_INVALID_VALUE;
    *l = new emu_lt_layout{type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t la, const void *B, cublasLtMatrixLayout_t lb, const void *beta,
                              const void *C, cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ld,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes, cudaStream_t stream) {
    (void)h, (void)algo, (void)ws, (void)ws_bytes;
    /* op(A) is m x k, op(B) k x n, C and D m x n; the emulator computes in place (C == D). */
    uint64_t m = d->ta == CUBLAS_OP_N ? la->rows : la->cols, k = d->ta == CUBLAS_OP_N ? la->cols : la->rows;
    uint64_t kb = d->tb == CUBLAS_OP_N ? lb->rows : lb->cols, n = d->tb == CUBLAS_OP_N ? lb->cols : lb->rows;
    if (C != D || kb != k || lc->rows != m || lc->cols != n || ld->rows != m || ld->cols != n || lc->ld != ld->ld ||
        la->type != lb->type || ld->type != CUDA_R_32F || (d->epilogue != CUBLASLT_EPILOGUE_DEFAULT && !d->bias))
        return CUBLAS_STATUS_INVALID_VALUE;
    float al = *(const float *)alpha, be = *(const float *)beta;
    cublasLtMatmulDesc_t dd = d;
    emu_lt_desc desc = *dd; /* read now: the caller may destroy it once the call returns */
    cudaDataType_t at = la->type;
    int lda = (int)la->ld, ldb = (int)lb->ld, ldc = (int)ld->ld;
    emu_enqueue(stream, [=]() {
        gemm_run(desc.ta, desc.tb, (int)m, (int)n, (int)k, al, A, at, lda, 0, B, at, ldb, 0, be, D, ldc, 0, 1,
                 desc.compute);
        if (desc.epilogue != CUBLASLT_EPILOGUE_DEFAULT)
            for (uint64_t j = 0; j < n; j++)
                for (uint64_t i = 0; i < m; i++) {
                    float *v = (float *)D + i + j * (uint64_t)ldc;
                    *v += desc.bias[i];
                    if (desc.epilogue == CUBLASLT_EPILOGUE_RELU_BIAS) *v = *v > 0.0f ? *v : 0.0f;
                }
        return cudaSuccess;
    });
    return CUBLAS_STATUS_SUCCESS;
}
