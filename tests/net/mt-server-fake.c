/*
 * mt-server-fake.c — mt-server with the fake engine (fake_engine.h) instead of the C ABI: every line
 * of net/ runs as in production, with deterministic translations and a scripted trainer, so the
 * protocol, the limits, batching, pipelining, training control, promote, TLS and the drain are tested
 * without a trained model. Test-only; never installed.
 */
#include <stddef.h>

#include "fake_engine.h"
#include "server.h"

/* Linked with -Wl,--wrap=calloc: fails in a thread that asked for it (mt_fake_oom). */
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size) { return mt_fake_oom ? NULL : __real_calloc(n, size); }

int main(int argc, char **argv) { return mt_server_main(argc, argv, &mt_fake_engine); }
