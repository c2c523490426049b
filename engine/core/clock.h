/*
 * clock.h — the engine's one clock: seconds on the monotonic clock, for deadlines (the communicator
 * and its rendezvous store) and for throughput and elapsed time (the trainer, mt-translate).
 */
#ifndef MT_CORE_CLOCK_H
#define MT_CORE_CLOCK_H

#include <time.h>

static inline double mt_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
