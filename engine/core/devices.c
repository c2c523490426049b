/*
 * devices.c — device selection for `--gpus 0,1`: the list is parsed and every id checked against the
 * devices present, so a missing GPU is a clear error at start-up rather than a failure mid-run.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/error.h"

mt_status mt_devices_parse(const char *spec, int *ids, int cap, int *n) {
    if (!spec || !ids || !n || cap < 0) return mt_error(MT_ERR_INVALID_ARG, "--gpus: NULL argument");
    *n = 0;
    while (isspace((unsigned char)*spec)) spec++;
    if (*spec == '\0' || strcmp(spec, "cpu") == 0 || strcmp(spec, "none") == 0) return MT_OK;
    /* The whole list is read first, so a malformed list is reported as such on any machine. */
    const char *p = spec;
    int count = 0;
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        if (!isdigit((unsigned char)*p))
            return mt_error(MT_ERR_INVALID_ARG, "--gpus '%s': expected a device index at '%s' (e.g. --gpus 0,1)",
                            spec, p);
        char *end;
        long v = strtol(p, &end, 10);
        if (v > 1023) return mt_error(MT_ERR_INVALID_ARG, "--gpus '%s': device index %ld is out of range", spec, v);
        for (int i = 0; i < count; i++)
            if (ids[i] == (int)v) return mt_error(MT_ERR_INVALID_ARG, "--gpus '%s': device %ld is listed twice", spec, v);
        if (count == cap) return mt_error(MT_ERR_INVALID_ARG, "--gpus '%s': more than %d devices", spec, cap);
        ids[count++] = (int)v;
        p = end;
        while (isspace((unsigned char)*p)) p++;
        if (*p == '\0') break;
        if (*p != ',') return mt_error(MT_ERR_INVALID_ARG, "--gpus '%s': unexpected '%c' (use commas: 0,1)", spec, *p);
        p++;
    }
    char why[160];
    int present = mt_device_backend_count(why, sizeof why);
    for (int i = 0; i < count; i++) {
        if (ids[i] < present) continue;
        if (!mt_device_backend())
            return mt_error(MT_ERR_NO_DEVICE, "--gpus '%s': cuda:%d asked for, but this build of MicroTensor has no "
                            "CUDA backend", spec, ids[i]);
        if (present == 0)
            return mt_error(MT_ERR_NO_DEVICE, "--gpus '%s': cuda:%d asked for, but no CUDA device is present "
                            "(cudaGetDeviceCount: %s)", spec, ids[i], why);
        return mt_error(MT_ERR_NO_DEVICE, "--gpus '%s': cuda:%d does not exist (%d CUDA device%s present: 0..%d)", spec,
                        ids[i], present, present == 1 ? "" : "s", present - 1);
    }
    *n = count;
    return MT_OK;
}

mt_status mt_device_single(const char *program, const char *spec, int *device) {
    int ids[64], n = 0;
    MT_TRY(mt_devices_parse(spec, ids, 64, &n));
    if (n > 1)
        return mt_error(MT_ERR_UNSUPPORTED, "%s: --gpus '%s': this program runs on one device; give one index "
                        "(several GPUs are served by mt-server --gpus)", program, spec);
    *device = n == 1 ? ids[0] : MT_DEVICE_CPU;
    return MT_OK;
}
