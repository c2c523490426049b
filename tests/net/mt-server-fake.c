/*
 * mt-server-fake.c — mt-server with the fake engine (fake_engine.h) instead of the C ABI: every line
 * of net/ runs as in production, with deterministic translations and a scripted trainer, so the
 * protocol, the limits, batching, pipelining, training control, promote, TLS and the drain are tested
 * without a trained model. Test-only; never installed.
 */
#include "fake_engine.h"
#include "server.h"

int main(int argc, char **argv) { return mt_server_main(argc, argv, &mt_fake_engine); }
