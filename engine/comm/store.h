/*
 * store.h — the rendezvous key-value store of a communicator: rank 0 serves it on a TCP port, every
 * rank (rank 0 included) is a client. It carries the collective library's connection addresses
 * (Gloo's Store interface is implemented over it; the NCCL unique id for GPU ranks), the handshake
 * (world size, config and weights hashes) and the liveness of every rank: each client keeps a
 * heartbeat connection, and the server remembers which rank's connection closed without saying
 * goodbye, so a failed collective can name the rank that was lost.
 *
 * Wire format (both directions): u32 length (network order) of the rest, u8 op, u32 rank, u32 key
 * length, key, value (the rest). Keys are at most MT_STORE_KEY_MAX bytes, values MT_STORE_VALUE_MAX.
 */
#ifndef MT_COMM_STORE_H
#define MT_COMM_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "microtensor.h"

#define MT_STORE_KEY_MAX 256
#define MT_STORE_VALUE_MAX (1 << 20)
#define MT_STORE_MAX_WORLD 1024

typedef struct mt_store_server mt_store_server;
typedef struct mt_store mt_store;

/* Rank 0: listens on host:port (port 0 picks one; *port_out receives it) for a world of `world`
 * ranks, in a thread of its own. Clients announcing another world size are refused, and the refusal
 * is kept so that every rank can report it. */
mt_status mt_store_server_start(const char *host, int port, int world, mt_store_server **out, int *port_out);
void mt_store_server_stop(mt_store_server *s);
/* After a failure: keeps serving (at most max_s seconds) while some rank > 0 is still connected
 * and alive, so that the others can still ask the store who was lost before rank 0 goes. */
void mt_store_server_linger(mt_store_server *s, double max_s);

/* Connects rank `rank` of `world` to the store at host:port, retrying until deadline_s seconds have
 * passed (rank 0 may start later than the others). Starts the heartbeat (every 0.5 s). */
mt_status mt_store_connect(const char *host, int port, int rank, int world, double deadline_s, mt_store **out);
/* Says goodbye (a clean close, not a lost rank) and frees. NULL is a no-op. */
void mt_store_close(mt_store *s);
/* Closes the connections without a goodbye (abort). */
void mt_store_drop(mt_store *s);

mt_status mt_store_set(mt_store *s, const char *key, const void *val, size_t len);
/* Waits (at most timeout_s) until key is set; *val (malloc'd) and *len receive the value. */
mt_status mt_store_get(mt_store *s, const char *key, double timeout_s, void **val, size_t *len);

/* Names the lost ranks into msg ("rank 1 died (connection closed)", "rank 2 stopped answering (no
 * heartbeat for 6.1 s)", "rank 0 (the rendezvous host) does not answer"); "" when every rank looks
 * alive. Bounded by a few seconds. Returns the first lost rank or -1. */
int mt_store_diagnose(mt_store *s, char *msg, size_t cap);

/* The local address (numeric) this host uses to reach host:port: the interface the collective
 * library binds to, so that ranks on other hosts reach it. */
mt_status mt_store_local_addr(const char *host, int port, char *addr, size_t cap);

/* A TCP port of 127.0.0.1 that was free a moment ago (for local worlds: mt-train --ranks, tests,
 * benchmarks); -1 when none could be had. */
int mt_store_free_port(void);

/* "host:port" -> host and port ([v6]:port allowed). */
mt_status mt_store_parse_addr(const char *spec, char *host, size_t cap, int *port);

#endif
