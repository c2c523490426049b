/*
 * gloo_shim.cc — Gloo behind a C interface (see gloo_shim.h): the TCP transport, a Store over the
 * communicator's rendezvous store, and the four collectives the communicator needs. The only C++ of
 * the engine; nothing but comm.c includes its header.
 */
#include "comm/gloo_shim.h"

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

struct mt_gloo {
    std::shared_ptr<gloo::transport::Device> dev;
    std::shared_ptr<gloo::rendezvous::Context> ctx;
};

namespace {

/* Gloo's Store over the C callbacks; a failure becomes an exception that Gloo passes up. */
class CStore : public gloo::rendezvous::Store {
  public:
    CStore(const mt_gloo_store &s, int timeout_ms) : s_(s), timeout_ms_(timeout_ms) {}
    void set(const std::string &key, const std::vector<char> &data) override {
        if (s_.set(s_.user, ("gloo/" + key).c_str(), data.data(), data.size()) != 0)
            throw std::runtime_error("rendezvous store: set '" + key + "' failed");
    }
    std::vector<char> get(const std::string &key) override {
        void *v = nullptr;
        size_t n = 0;
        if (s_.get(s_.user, ("gloo/" + key).c_str(), timeout_ms_, &v, &n) != 0)
            throw std::runtime_error("rendezvous store: get '" + key + "' failed");
        std::vector<char> out(static_cast<char *>(v), static_cast<char *>(v) + n);
        free(v);
        return out;
    }
    void wait(const std::vector<std::string> &keys) override { wait(keys, std::chrono::milliseconds(timeout_ms_)); }
    void wait(const std::vector<std::string> &keys, const std::chrono::milliseconds &t) override {
        for (const auto &k : keys) {
            void *v = nullptr;
            size_t n = 0;
            if (s_.get(s_.user, ("gloo/" + k).c_str(), (int)t.count(), &v, &n) != 0)
                throw std::runtime_error("rendezvous store: wait '" + k + "' failed");
            free(v);
        }
    }

  private:
    mt_gloo_store s_;
    int timeout_ms_;
};

/* The ring all-reduce's segment: Gloo keeps two in flight per direction, and each costs a ready
 * notification from the receiver and a wake-up of its TCP loop. Gloo's default of 1 MB halved the
 * bus bandwidth of 16 MB all-reduces on 2 loopback ranks against 4 MB (mt-bench dist, bandwidth
 * part, three alternating runs each: 399-521 vs 959-1060 MB/s); 64 MB left the reduction unpipelined. */
constexpr size_t kSegmentBytes = 4 << 20;

int fail(const std::exception &e, char *err, size_t cap) {
    snprintf(err, cap, "%s", e.what());
    return 1;
}

} // namespace

extern "C" int mt_gloo_create(int rank, int world, const char *host, const mt_gloo_store *store, int timeout_ms,
                              mt_gloo **out, char *err, size_t cap) {
    mt_gloo *g = nullptr;
    try {
        g = new mt_gloo();
        gloo::transport::tcp::attr attr;
        attr.hostname = host;
        g->dev = gloo::transport::tcp::CreateDevice(attr);
        g->ctx = std::make_shared<gloo::rendezvous::Context>(rank, world);
        g->ctx->setTimeout(std::chrono::milliseconds(timeout_ms));
        CStore s(*store, timeout_ms);
        g->ctx->connectFullMesh(s, g->dev);
        *out = g;
        return 0;
    } catch (const std::exception &e) {
        delete g;
        return fail(e, err, cap);
    }
}

extern "C" int mt_gloo_allreduce(mt_gloo *g, void *buf, size_t n, size_t elem_size, mt_gloo_reduce_fn fn,
                                 uint32_t tag, char *err, size_t cap) {
    try {
        gloo::AllreduceOptions o(g->ctx);
        if (elem_size == 4) o.setOutput(static_cast<float *>(buf), n);
        else if (elem_size == 2) o.setOutput(static_cast<uint16_t *>(buf), n);
        else throw std::invalid_argument("all-reduce: element size must be 2 or 4");
        o.setReduceFunction([fn](void *c, const void *a, const void *b, size_t k) { fn(c, a, b, k); });
        o.setTag(tag);
        o.setMaxSegmentSize(kSegmentBytes);
        gloo::allreduce(o);
        return 0;
    } catch (const std::exception &e) {
        return fail(e, err, cap);
    }
}

extern "C" int mt_gloo_broadcast(mt_gloo *g, void *buf, size_t bytes, int root, uint32_t tag, char *err, size_t cap) {
    try {
        gloo::BroadcastOptions o(g->ctx);
        o.setOutput(static_cast<uint8_t *>(buf), bytes);
        o.setRoot(root);
        o.setTag(tag);
        gloo::broadcast(o);
        return 0;
    } catch (const std::exception &e) {
        return fail(e, err, cap);
    }
}

extern "C" int mt_gloo_allgather(mt_gloo *g, const void *in, void *out, size_t bytes, uint32_t tag, char *err,
                                 size_t cap) {
    try {
        gloo::AllgatherOptions o(g->ctx);
        o.setInput(const_cast<uint8_t *>(static_cast<const uint8_t *>(in)), bytes);
        o.setOutput(static_cast<uint8_t *>(out), bytes * (size_t)g->ctx->size);
        o.setTag(tag);
        gloo::allgather(o);
        return 0;
    } catch (const std::exception &e) {
        return fail(e, err, cap);
    }
}

extern "C" int mt_gloo_barrier(mt_gloo *g, uint32_t tag, char *err, size_t cap) {
    try {
        gloo::BarrierOptions o(g->ctx);
        o.setTag(tag);
        gloo::barrier(o);
        return 0;
    } catch (const std::exception &e) {
        return fail(e, err, cap);
    }
}

extern "C" void mt_gloo_free(mt_gloo *g) {
    try {
        delete g;
    } catch (...) {
    }
}
