/*
 * paths.c — --data-root confinement of the paths clients name (checkpoints to save, models to
 * promote). A path is taken relative to the root (or absolute), resolved with realpath(3) — so ".."
 * and symbolic links are followed — and must then lie inside the root's own resolved path. A file
 * that does not exist yet (a checkpoint to write) is checked through its directory. A file that must
 * exist (a model to promote) must also be a regular file: a FIFO or a device would block or feed the
 * admin thread forever. The engine checks the training config's paths itself (mt_trainer_create's
 * path_root).
 */
#include "server.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static bool inside(const char *root, const char *p) {
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/') return p[0] == '/';
    return strncmp(root, p, n) == 0 && (p[n] == '/' || p[n] == 0);
}

int mt_srv_path_resolve(const char *root, const char *path, bool must_exist, char *out, size_t outlen, char *msg,
                    size_t msglen) {
    char joined[PATH_MAX * 2], real[PATH_MAX];
    if (!path || !*path || strlen(path) >= PATH_MAX) {
        snprintf(msg, msglen, "empty or too long path");
        return MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT;
    }
    if (path[0] == '/') snprintf(joined, sizeof joined, "%s", path);
    else snprintf(joined, sizeof joined, "%s/%s", root, path);
    if (must_exist) {
        if (!realpath(joined, real)) {
            int e = errno;
            snprintf(msg, msglen, "%s: %s", path, strerror(e));
            return e == ENOENT || e == ENOTDIR ? MT__V1__ERROR_CODE__ERR_NOT_FOUND
                                               : MT__V1__ERROR_CODE__ERR_PATH_OUTSIDE_ROOT;
        }
        if (!inside(root, real)) {
            snprintf(msg, msglen, "%s is outside the data root", path);
            return MT__V1__ERROR_CODE__ERR_PATH_OUTSIDE_ROOT;
        }
        struct stat sb;
        if (stat(real, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            snprintf(msg, msglen, "%s is not a regular file", path);
            return MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT;
        }
        if (strlen(real) >= outlen) {
            snprintf(msg, msglen, "path too long");
            return MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT;
        }
        strcpy(out, real);
        return 0;
    }
    char dcopy[PATH_MAX * 2], bcopy[PATH_MAX * 2];
    snprintf(dcopy, sizeof dcopy, "%s", joined);
    snprintf(bcopy, sizeof bcopy, "%s", joined);
    const char *dir = dirname(dcopy), *base = basename(bcopy);
    if (!*base || !strcmp(base, ".") || !strcmp(base, "..") || !strcmp(base, "/")) {
        snprintf(msg, msglen, "%s does not name a file", path);
        return MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT;
    }
    if (!realpath(dir, real)) {
        int e = errno;
        snprintf(msg, msglen, "%s: directory: %s", path, strerror(e));
        return e == ENOENT || e == ENOTDIR ? MT__V1__ERROR_CODE__ERR_NOT_FOUND
                                           : MT__V1__ERROR_CODE__ERR_PATH_OUTSIDE_ROOT;
    }
    if (!inside(root, real)) {
        snprintf(msg, msglen, "%s is outside the data root", path);
        return MT__V1__ERROR_CODE__ERR_PATH_OUTSIDE_ROOT;
    }
    /* An existing symlink at the final component must not point outside either. */
    char full[PATH_MAX * 2 + 2], target[PATH_MAX];
    snprintf(full, sizeof full, "%s/%s", real, base);
    if (realpath(full, target) && !inside(root, target)) {
        snprintf(msg, msglen, "%s is outside the data root", path);
        return MT__V1__ERROR_CODE__ERR_PATH_OUTSIDE_ROOT;
    }
    if (strlen(full) >= outlen) {
        snprintf(msg, msglen, "path too long");
        return MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT;
    }
    strcpy(out, full);
    return 0;
}
