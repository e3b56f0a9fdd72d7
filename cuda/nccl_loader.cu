/* NCCL loaded with dlopen (see nccl_loader.h for why and from where). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_check.h"
#include "nccl_loader.h"

#if defined(__has_include)
#if __has_include(<nccl.h>)
#include <nccl.h>
/* The declarations of nccl_loader.h are NCCL's ABI: check them where the real header exists. */
static_assert(sizeof(ncclUniqueId) == sizeof(ps_nccl_id_t), "ncclUniqueId");
static_assert(sizeof(ncclResult_t) == sizeof(ps_nccl_result_t), "ncclResult_t");
static_assert(sizeof(ncclDataType_t) == sizeof(int) && sizeof(ncclRedOp_t) == sizeof(int), "NCCL enums");
static_assert((int)ncclSuccess == PS_NCCL_SUCCESS && (int)ncclInvalidArgument == PS_NCCL_INVALID_ARGUMENT &&
                  (int)ncclInvalidUsage == PS_NCCL_INVALID_USAGE && (int)ncclRemoteError == PS_NCCL_REMOTE_ERROR &&
                  (int)ncclInProgress == PS_NCCL_IN_PROGRESS,
              "ncclResult_t values");
static_assert((int)ncclFloat32 == PS_NCCL_FLOAT32 && (int)ncclSum == PS_NCCL_SUM, "NCCL data type / op values");
#endif
#endif

static pthread_once_t ps_nccl_once = PTHREAD_ONCE_INIT;
static ps_nccl_t ps_nccl;
static int ps_nccl_ok;
static char ps_nccl_why[512];

/* dlsym returns an object pointer; POSIX guarantees it converts to the function's type. */
template <typename F> static int ps_nccl_sym(void *lib, const char *name, F *fn, int required)
{
    void *p = dlsym(lib, name);
    if (p == NULL && required) {
        const char *e = dlerror();
        snprintf(ps_nccl_why, sizeof(ps_nccl_why), "%s has no %s (%s)", ps_nccl.path, name, e ? e : "not found");
        return -1;
    }
    *fn = reinterpret_cast<F>(p);
    return 0;
}

static void ps_nccl_do_load(void)
{
    const char *env = getenv("PSERV_NCCL_LIBRARY");
    const char *names[] = {"libnccl.so.2", "libnccl.so"};
    void *lib = NULL;
    if (env != NULL && env[0] != '\0') {
        snprintf(ps_nccl.path, sizeof(ps_nccl.path), "%s", env);
        if ((lib = dlopen(env, RTLD_NOW | RTLD_LOCAL)) == NULL) {
            snprintf(ps_nccl_why, sizeof(ps_nccl_why), "PSERV_NCCL_LIBRARY=%s: %s", env, dlerror());
            return;
        }
    } else {
        char tried[256] = "";
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && lib == NULL; i++) {
            snprintf(ps_nccl.path, sizeof(ps_nccl.path), "%s", names[i]);
            if ((lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL)) == NULL)
                snprintf(tried + strlen(tried), sizeof(tried) - strlen(tried), "%s%s", tried[0] ? "; " : "",
                         dlerror());
        }
        if (lib == NULL) {
            snprintf(ps_nccl_why, sizeof(ps_nccl_why),
                     "cannot load NCCL (%s); set PSERV_NCCL_LIBRARY to libnccl.so.2's path or add its folder to "
                     "LD_LIBRARY_PATH",
                     tried);
            return;
        }
    }
    ps_nccl_result_t (*get_version)(int *) = NULL;
    if (ps_nccl_sym(lib, "ncclGetUniqueId", &ps_nccl.get_unique_id, 1) < 0 ||
        ps_nccl_sym(lib, "ncclCommInitRank", &ps_nccl.comm_init_rank, 1) < 0 ||
        ps_nccl_sym(lib, "ncclCommDestroy", &ps_nccl.comm_destroy, 1) < 0 ||
        ps_nccl_sym(lib, "ncclCommAbort", &ps_nccl.comm_abort, 1) < 0 ||
        ps_nccl_sym(lib, "ncclCommGetAsyncError", &ps_nccl.comm_get_async_error, 1) < 0 ||
        ps_nccl_sym(lib, "ncclReduceScatter", &ps_nccl.reduce_scatter, 1) < 0 ||
        ps_nccl_sym(lib, "ncclAllGather", &ps_nccl.all_gather, 1) < 0 ||
        ps_nccl_sym(lib, "ncclReduce", &ps_nccl.reduce, 1) < 0 ||
        ps_nccl_sym(lib, "ncclBroadcast", &ps_nccl.broadcast, 1) < 0 ||
        ps_nccl_sym(lib, "ncclGroupStart", &ps_nccl.group_start, 1) < 0 ||
        ps_nccl_sym(lib, "ncclGroupEnd", &ps_nccl.group_end, 1) < 0 ||
        ps_nccl_sym(lib, "ncclGetErrorString", &ps_nccl.get_error_string, 1) < 0 ||
        ps_nccl_sym(lib, "ncclGetLastError", &ps_nccl.get_last_error, 0) < 0 ||
        ps_nccl_sym(lib, "ncclGetVersion", &get_version, 0) < 0) {
        dlclose(lib);
        return;
    }
    if (get_version == NULL || get_version(&ps_nccl.version) != PS_NCCL_SUCCESS) ps_nccl.version = 0;
    ps_nccl_ok = 1; /* the handle stays open for the life of the process */
}

const ps_nccl_t *ps_nccl_load(const char **why)
{
    pthread_once(&ps_nccl_once, ps_nccl_do_load);
    if (!ps_nccl_ok) {
        if (why) *why = ps_nccl_why;
        return NULL;
    }
    return &ps_nccl;
}

pserv_status_t ps_nccl_status(const ps_nccl_t *nccl, ps_nccl_comm_t comm, ps_nccl_result_t res, const char *call,
                              const char *file, int line)
{
    char what[512];
    pserv_status_t st;
    if (res == PS_NCCL_SUCCESS) return PSERV_OK;
    /* ncclGetLastError ignores comm (the calling thread's last error); NULL is allowed */
    const char *last = nccl->get_last_error != NULL ? nccl->get_last_error(comm) : NULL;
    snprintf(what, sizeof(what), "%s: %s%s%s", call, nccl->get_error_string(res), last && last[0] ? ": " : "",
             last ? last : "");
    switch (res) {
    case PS_NCCL_INVALID_ARGUMENT:
    case PS_NCCL_INVALID_USAGE:
        st = PSERV_ERR_INVALID_ARG;
        break;
    case PS_NCCL_REMOTE_ERROR:
        st = PSERV_ERR_PEER_FAILED;
        break;
    default:
        st = PSERV_ERR_INTERNAL;
        break;
    }
    return ps_cuda_fail(st, what, file, line);
}
