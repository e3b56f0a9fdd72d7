/*
 * NCCL, loaded at run time (dlopen) instead of linked: the GPU machines may have libnccl only
 * inside a Python wheel, libpserv must load where there is no NCCL at all, and the library is
 * too large to ship. pserv builds without nccl.h: the few types used are declared here with
 * NCCL's stable ABI (2.x); where nccl.h is present at build time nccl_loader.cu checks them
 * against it.
 *
 * Where from: $PSERV_NCCL_LIBRARY (a path; if set, nothing else is tried), else libnccl.so.2,
 * else libnccl.so, through the loader's search path (LD_LIBRARY_PATH, e.g. a PyTorch wheel's
 * nvidia/nccl/lib). Loaded once per process, never unloaded.
 */
#ifndef PS_NCCL_LOADER_H
#define PS_NCCL_LOADER_H

#include <cuda_runtime.h>
#include <stddef.h>

#include "pserv/pserv_status.h"

typedef struct ps_nccl_comm *ps_nccl_comm_t;          /* ncclComm_t */
typedef struct { char internal[128]; } ps_nccl_id_t; /* ncclUniqueId */
typedef int ps_nccl_result_t;                        /* ncclResult_t (a C enum) */

enum {
    PS_NCCL_SUCCESS = 0,          /* ncclSuccess */
    PS_NCCL_INVALID_ARGUMENT = 4, /* ncclInvalidArgument */
    PS_NCCL_INVALID_USAGE = 5,    /* ncclInvalidUsage */
    PS_NCCL_REMOTE_ERROR = 6,     /* ncclRemoteError */
    PS_NCCL_IN_PROGRESS = 7,      /* ncclInProgress */
    PS_NCCL_FLOAT32 = 7,          /* ncclFloat32 (ncclDataType_t) */
    PS_NCCL_SUM = 0,              /* ncclSum (ncclRedOp_t) */
};

/* The entry points pserv uses; get_last_error may be NULL (NCCL < 2.13). */
typedef struct {
    ps_nccl_result_t (*get_unique_id)(ps_nccl_id_t *id);
    ps_nccl_result_t (*comm_init_rank)(ps_nccl_comm_t *comm, int nranks, ps_nccl_id_t id, int rank);
    ps_nccl_result_t (*comm_destroy)(ps_nccl_comm_t comm);
    ps_nccl_result_t (*comm_abort)(ps_nccl_comm_t comm);
    ps_nccl_result_t (*comm_get_async_error)(ps_nccl_comm_t comm, ps_nccl_result_t *err);
    ps_nccl_result_t (*reduce_scatter)(const void *send, void *recv, size_t recvcount, int dtype, int op,
                                       ps_nccl_comm_t comm, cudaStream_t stream);
    ps_nccl_result_t (*all_gather)(const void *send, void *recv, size_t sendcount, int dtype, ps_nccl_comm_t comm,
                                   cudaStream_t stream);
    ps_nccl_result_t (*reduce)(const void *send, void *recv, size_t count, int dtype, int op, int root,
                               ps_nccl_comm_t comm, cudaStream_t stream);
    ps_nccl_result_t (*broadcast)(const void *send, void *recv, size_t count, int dtype, int root,
                                  ps_nccl_comm_t comm, cudaStream_t stream);
    ps_nccl_result_t (*group_start)(void);
    ps_nccl_result_t (*group_end)(void);
    const char *(*get_error_string)(ps_nccl_result_t result);
    const char *(*get_last_error)(ps_nccl_comm_t comm);
    int version; /* NCCL_VERSION_CODE of the loaded library (22809 for 2.28.9), 0 if unknown */
    char path[256];
} ps_nccl_t;

/*
 * Loads NCCL (once per process; thread-safe). NULL if it cannot be loaded, with the reason
 * (which file, dlerror, the missing symbol) in *why, a static string.
 */
const ps_nccl_t *ps_nccl_load(const char **why);

/* Maps an NCCL result to a pserv status and records it (with the call's text and, given comm,
 * NCCL's last error) for pserv_cuda_last_error(). */
pserv_status_t ps_nccl_status(const ps_nccl_t *nccl, ps_nccl_comm_t comm, ps_nccl_result_t res, const char *call,
                              const char *file, int line);

#define PS_NCCL_CALL(nccl, comm, call) ps_nccl_status((nccl), (comm), (nccl)->call, #call, __FILE__, __LINE__)

#endif
