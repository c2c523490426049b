/*
 * reduce_plan.h — how a reduction is laid out, planned the same way by both backends: size-1 axes
 * dropped, neighbouring axes of the same kind (reduced / kept) merged. With at most one reduced group
 * the reduction is (outer, R, inner), which both backends run as fast loops; several reduced groups
 * (e.g. axes {0, 2} of a 3-D tensor) keep the collapsed shape for a general walk.
 */
#ifndef MT_CORE_REDUCE_PLAN_H
#define MT_CORE_REDUCE_PLAN_H

#include <string.h>

#include "core/backend.h"

typedef struct mt_reduce_plan {
    int simple;                  /* 1: at most one reduced group -> (outer, R, inner) */
    int64_t outer, R, inner;
    int ndim;                    /* the collapsed shape, for the general walk */
    int64_t shape[MT_MAX_DIMS];
    int red[MT_MAX_DIMS];        /* 1 where the collapsed axis is reduced */
} mt_reduce_plan;

/* The reduction that sums a full-size gradient (bc->shape) down to a broadcast operand whose strides
 * are s (0 on its broadcast axes): the backward of every broadcasting binary op, on both backends. */
static inline mt_reduce_desc mt_bcast_reduce_desc(const mt_bcast *bc, const int64_t *s) {
    mt_reduce_desc rd;
    memset(&rd, 0, sizeof rd);
    rd.ndim = bc->ndim;
    rd.n_out = 1;
    rd.n_red = 1;
    for (int d = 0; d < bc->ndim; d++) {
        rd.shape[d] = bc->shape[d];
        if (s[d] == 0 && bc->shape[d] > 1) {
            rd.axes |= 1u << d;
            rd.n_red *= bc->shape[d];
        } else {
            rd.n_out *= bc->shape[d];
        }
    }
    return rd;
}

static inline mt_reduce_plan mt_reduce_plan_make(const mt_reduce_desc *rd) {
    mt_reduce_plan c;
    memset(&c, 0, sizeof c);
    for (int d = 0; d < rd->ndim; d++) {
        if (rd->shape[d] == 1) continue;
        int r = (int)((rd->axes >> d) & 1u);
        if (c.ndim > 0 && c.red[c.ndim - 1] == r) {
            c.shape[c.ndim - 1] *= rd->shape[d];
        } else {
            c.shape[c.ndim] = rd->shape[d];
            c.red[c.ndim] = r;
            c.ndim++;
        }
    }
    int groups = 0;
    for (int d = 0; d < c.ndim; d++) groups += c.red[d];
    c.outer = c.R = c.inner = 1;
    if (groups <= 1) {
        c.simple = 1;
        int seen = 0;
        for (int d = 0; d < c.ndim; d++) {
            if (c.red[d]) {
                c.R = c.shape[d];
                seen = 1;
            } else if (!seen) {
                c.outer *= c.shape[d];
            } else {
                c.inner *= c.shape[d];
            }
        }
    }
    return c;
}

#endif
