/*
 * main.c — mt-server: the translation server over the engine's C ABI. Everything is in the net
 * library (server.c); this file only picks the real engine (engine_abi.c).
 */
#include "server.h"

int main(int argc, char **argv) { return mt_server_main(argc, argv, &mt_engine_abi); }
