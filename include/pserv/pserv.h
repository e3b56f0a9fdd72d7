/*
 * pserv: a parameter server for data-parallel training.
 *
 * This is the umbrella header of the host API. A job has one coordinator, S server
 * shards and W workers, each a handle created in its own process (or thread):
 *
 *   coordinator  pserv_coordinator_create(): rendezvous, ranks, shard map, barriers
 *   server       pserv_server_create():      owns chunks of every tensor, applies the optimizer
 *   worker       pserv_worker_create():      registers tensors, pushes gradients, pulls parameters
 *
 * Every function returns a pserv_status_t (0 = success, negative = error) and sets its
 * output arguments only on success. Parameter structs start with their size and have an
 * initializer macro; a zero field means "the default". Handles are not thread-safe unless a
 * function says so; the worker's request functions (push, pull, their range forms, wait, test)
 * may be called from several threads at once.
 */
#ifndef PSERV_H
#define PSERV_H

#include <stddef.h>
#include <stdint.h>

#include "pserv/pserv_export.h"
#include "pserv/pserv_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PSERV_VERSION_MAJOR 0
#define PSERV_VERSION_MINOR 1
#define PSERV_VERSION_PATCH 0

/** Library version as "major.minor.patch". */
PSERV_API const char *pserv_version(void);

/**
 * Detail of the last call that failed in the calling thread ("cannot reach the coordinator at
 * 10.0.0.1:7777"), or "". Useful when a create call fails and there is no handle to ask.
 */
PSERV_API const char *pserv_last_error(void);

/** Consistency model of a job, chosen once by the coordinator. */
typedef enum {
    PSERV_MODE_SYNC = 0,  /**< bulk synchronous: one optimizer step per round, after all workers pushed */
    PSERV_MODE_ASYNC = 1, /**< every push is applied on arrival */
} pserv_mode_t;

/** Element type of a tensor. */
typedef enum {
    PSERV_DTYPE_FLOAT32 = 1,
} pserv_dtype_t;

/** Server-side update rule of a tensor. */
typedef enum {
    PSERV_OPTIM_SGD = 0,
    PSERV_OPTIM_MOMENTUM = 1, /**< heavy ball, or Nesterov with nesterov = 1 */
    PSERV_OPTIM_ADAM = 2,     /**< weight decay added to the gradient (L2) */
    PSERV_OPTIM_ADAMW = 3,    /**< decoupled weight decay */
    PSERV_OPTIM_ADAGRAD = 4,
    PSERV_OPTIM_COUNT
} pserv_optim_type_t;

/** Optimizer and hyper-parameters of one tensor. */
typedef struct {
    size_t size;             /**< sizeof(pserv_optim_params_t) */
    pserv_optim_type_t type;
    float lr;                /**< learning rate */
    float momentum;          /**< MOMENTUM: coefficient */
    int nesterov;            /**< MOMENTUM: 1 for Nesterov momentum */
    float beta1, beta2, eps; /**< ADAM/ADAMW; eps also for ADAGRAD */
    float weight_decay;      /**< L2 (SGD, MOMENTUM, ADAM, ADAGRAD) or decoupled (ADAMW) */
    float clip_value;        /**< > 0: clamp each gradient element to [-clip_value, clip_value] */
    float clip_norm;         /**< > 0: scale the gradient so its L2 norm is at most clip_norm (per tensor:
                                  such a tensor is kept in one chunk, on one shard) */
} pserv_optim_params_t;

#define PSERV_OPTIM_PARAMS_INIT                                                     \
    {                                                                               \
        sizeof(pserv_optim_params_t), PSERV_OPTIM_SGD, 0.01f, 0.9f, 0, 0.9f, 0.999f, \
            1e-8f, 0.0f, 0.0f, 0.0f                                                 \
    }

/** Names an optimizer ("adam"); NULL for an unknown type. */
PSERV_API const char *pserv_optim_name(pserv_optim_type_t type);
/** Parses an optimizer name; PSERV_ERR_INVALID_ARG if unknown. */
PSERV_API pserv_status_t pserv_optim_parse(const char *name, pserv_optim_type_t *type);

/* ------------------------------------------------------------------------------------------ */
/* Coordinator                                                                                  */

typedef struct pserv_coordinator *pserv_coordinator_h;

/** What a sync job does when a worker dies. */
typedef enum {
    PSERV_ON_FAILURE_FAIL = 0, /**< end the whole job within seconds, naming the dead worker (default) */
    PSERV_ON_FAILURE_CONTINUE  /**< go on with the live workers: rounds complete without the dead one */
} pserv_failure_policy_t;

typedef struct {
    size_t size;          /**< sizeof(pserv_coordinator_params_t) */
    const char *listen;   /**< "host:port" to listen on; port 0 picks a free port. Default "127.0.0.1:0" */
    unsigned num_servers; /**< server shards in the job (required, >= 1) */
    unsigned num_workers; /**< workers in the job (required, >= 1) */
    pserv_mode_t mode;    /**< consistency model */
    size_t chunk_bytes;   /**< tensors are split into chunks of this many bytes; default 4 MiB */
    /**
     * Failure detection: the coordinator and every member send each other a heartbeat every
     * heartbeat_ms (default 500); a peer silent for failure_timeout_ms (default 3000) is
     * declared dead. Members learn both from the job description.
     */
    int heartbeat_ms;
    int failure_timeout_ms;
    pserv_failure_policy_t on_worker_failure; /**< default PSERV_ON_FAILURE_FAIL */
    /**
     * Checkpoints: every shard writes its chunks (parameters, optimizer state, rounds) to
     * checkpoint_dir/round-R/shard-RANK.ckpt each time its chunks reach a round R that is a
     * multiple of checkpoint_every (sync: rounds; async: updates of each chunk), or, with
     * checkpoint_every_ms instead, a round the coordinator names about every checkpoint_every_ms
     * milliseconds (a little ahead of the shards' progress, so each copies its chunks at that
     * same round). A directory every server can reach (on several machines, a shared file system).
     * NULL: no checkpoints. Once round R is complete on every shard, older rounds are removed.
     */
    const char *checkpoint_dir;
    unsigned checkpoint_every;
    /**
     * Continue from the newest checkpoint complete in resume_dir (any server count: chunks are
     * re-placed): shards load their chunks from it when workers register the tensors, and
     * workers go on from its round (pserv_job_info_t.resume_round). A damaged checkpoint, or one
     * of another model, fails create or the registration, naming the file and the problem.
     */
    const char *resume_dir;
    /**
     * Backups of every chunk, on other servers: a primary applies each round (or async update),
     * sends it to its backups and answers only once they have it, so an acknowledged update exists
     * on replicas + 1 servers; when a server dies, a backup of each of its chunks takes over and
     * training goes on. 0: the default, 1 when the job has at least 2 servers; PSERV_REPLICAS_NONE:
     * none (a dead server then ends the job). At most num_servers - 1 and 7.
     */
    int replicas;
    unsigned checkpoint_every_ms; /**< checkpoints by time instead of rounds (see checkpoint_dir) */
    /**
     * Servers that join or are drained: chunks move to them, or away, at most this many bytes at
     * once (a chunk larger than that alone). While a chunk moves, its rounds wait for the new
     * copy's state, so this bounds the pause a move causes. Default (0): chunk_bytes.
     */
    size_t move_bytes;
} pserv_coordinator_params_t;

#define PSERV_REPLICAS_NONE (-1)

#define PSERV_COORDINATOR_PARAMS_INIT                                                         \
    { sizeof(pserv_coordinator_params_t), NULL, 0, 0, PSERV_MODE_SYNC, 0, 0, 0, PSERV_ON_FAILURE_FAIL, NULL, 0, NULL, 0, 0, 0 }

/** Starts a coordinator listening for the job's servers and workers. Returns at once. */
PSERV_API pserv_status_t pserv_coordinator_create(const pserv_coordinator_params_t *params,
                                                  pserv_coordinator_h *coord);
/** The port the coordinator listens on (useful with port 0). Thread-safe. */
PSERV_API pserv_status_t pserv_coordinator_port(pserv_coordinator_h coord, uint16_t *port);
/**
 * Waits until the job is over: every worker has left (or failed) and the servers were told
 * to shut down. timeout_ms < 0 waits forever. PSERV_ERR_TIMED_OUT if it did not end in time;
 * PSERV_ERR_PEER_FAILED if the job ended because a member failed.
 */
PSERV_API pserv_status_t pserv_coordinator_wait(pserv_coordinator_h coord, int timeout_ms);
/**
 * Why the job failed, in the user's terms ("server 1 at 127.0.0.1:4242 missed its heartbeats
 * for 3000 ms"), or "" while it has not. Thread-safe; valid until destroy.
 */
PSERV_API const char *pserv_coordinator_last_error(pserv_coordinator_h coord);
/** Stops the coordinator and frees it. */
PSERV_API pserv_status_t pserv_coordinator_destroy(pserv_coordinator_h coord);
/**
 * Drains server `server_rank` out of the running job whose coordinator listens at `coordinator`
 * ("host:port"): every chunk copy it holds moves to the other servers (its state is copied
 * first, then its owner switches, so no update is lost or applied twice), then it leaves the job
 * and its process ends. Returns once it has left, or PSERV_ERR_TIMED_OUT after timeout_ms (< 0:
 * forever; the drain goes on). Refused (PSERV_ERR_INVALID_ARG, the reason in pserv_last_error())
 * for a server the job does not have, one already gone, or when the servers left could not hold
 * every chunk's copies; PSERV_ERR_EXISTS while it is being drained already.
 */
PSERV_API pserv_status_t pserv_drain(const char *coordinator, unsigned server_rank, int timeout_ms);

/* ------------------------------------------------------------------------------------------ */
/* Server shard                                                                                 */

typedef struct pserv_server *pserv_server_h;

typedef struct {
    size_t size;             /**< sizeof(pserv_server_params_t) */
    const char *coordinator; /**< "host:port" of the coordinator (required) */
    const char *listen;      /**< "host:port" for workers; default "127.0.0.1:0" */
    unsigned threads;        /**< optimizer threads; default 1 */
    int timeout_ms;          /**< how long to wait for the job to form; default 30000 */
} pserv_server_params_t;

#define PSERV_SERVER_PARAMS_INIT { sizeof(pserv_server_params_t), NULL, NULL, 0, 0 }

/** Counters of a server shard. */
typedef struct {
    size_t size;             /**< sizeof(pserv_server_stats_t) */
    uint64_t pushes;         /**< push messages applied or accumulated */
    uint64_t pulls;          /**< pull replies sent */
    uint64_t steps;          /**< optimizer steps run as a primary (one per chunk and round; a backup's are replica_updates) */
    uint64_t bytes_in;       /**< payload bytes received */
    uint64_t bytes_out;      /**< payload bytes sent */
    uint64_t rejected;       /**< messages rejected as malformed or not matching the shard's state */
    uint64_t messages_in;    /**< push, pull and push-pull messages received, a BATCH counted once */
    uint64_t batches_in;     /**< of those, BATCH messages (each carries several chunk messages) */
    uint64_t batches_out;    /**< BATCH replies sent (several answers to one worker in one message) */
    uint64_t checkpoints;    /**< checkpoint files written */
    uint64_t checkpoint_bytes;    /**< bytes in them */
    uint64_t checkpoint_pause_ns; /**< time the apply thread spent copying chunks for checkpoints */
    uint64_t checkpoint_write_ns; /**< time the writer thread spent writing them (background) */
    uint64_t checkpoints_skipped; /**< checkpoints dropped: the previous one was still being written */
    uint64_t replicated_bytes;    /**< update bytes sent to backups (primary) */
    uint64_t replica_updates;     /**< updates applied as a backup */
    uint64_t state_transfers;     /**< whole chunk states sent to a new or lagging backup */
    uint64_t chunks;              /**< chunks (primary or backup) whose memory this shard holds now, with those
                                       moved away whose last sends are still in flight */
    uint64_t chunks_freed;        /**< chunks moved away (a join's balancing, a drain) whose memory was freed */
} pserv_server_stats_t;

#define PSERV_SERVER_STATS_INIT { sizeof(pserv_server_stats_t), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }

/**
 * Starts a server shard: listens, joins the coordinator and waits for its rank and the job
 * description (up to timeout_ms). PSERV_ERR_UNREACHABLE or PSERV_ERR_TIMED_OUT name the
 * coordinator's address in pserv_server_last_error().
 */
PSERV_API pserv_status_t pserv_server_create(const pserv_server_params_t *params, pserv_server_h *server);
/** Rank of this shard, 0 .. num_servers-1. */
PSERV_API pserv_status_t pserv_server_rank(pserv_server_h server, unsigned *rank);
/** Waits until the coordinator ends the job (timeout_ms < 0: forever). */
PSERV_API pserv_status_t pserv_server_wait(pserv_server_h server, int timeout_ms);
/** Copies the shard's counters. Thread-safe. */
PSERV_API pserv_status_t pserv_server_stats(pserv_server_h server, pserv_server_stats_t *stats);
/** Detail of the last error on this handle, or "". */
PSERV_API const char *pserv_server_last_error(pserv_server_h server);
PSERV_API pserv_status_t pserv_server_destroy(pserv_server_h server);

/* ------------------------------------------------------------------------------------------ */
/* Job inside one process                                                                       */

/**
 * A coordinator and its server shards in the calling process, on 127.0.0.1: a single-process
 * training loop, a test or a benchmark creates one, then its workers join at
 * pserv_local_coordinator() with pserv_worker_create (each worker's create blocks until the whole
 * job has joined, so several workers need threads of their own).
 */
typedef struct pserv_local *pserv_local_h;

typedef struct {
    size_t size;             /**< sizeof(pserv_local_params_t) */
    unsigned num_servers;    /**< server shards; default 1 */
    unsigned num_workers;    /**< workers that will join (required, >= 1) */
    pserv_mode_t mode;       /**< consistency model */
    size_t chunk_bytes;      /**< chunk size of the job; default 4 MiB */
    unsigned server_threads; /**< optimizer threads per shard; default 1 */
    int timeout_ms;          /**< how long the shards wait for the job to form; default 30000 */
    const char *checkpoint_dir; /**< as in pserv_coordinator_params_t */
    unsigned checkpoint_every;
    const char *resume_dir;
    int replicas;               /**< as in pserv_coordinator_params_t */
    unsigned checkpoint_every_ms; /**< as in pserv_coordinator_params_t */
} pserv_local_params_t;

#define PSERV_LOCAL_PARAMS_INIT { sizeof(pserv_local_params_t), 0, 0, PSERV_MODE_SYNC, 0, 0, 0, NULL, 0, NULL, 0, 0 }

/**
 * Starts a coordinator on 127.0.0.1 (a free port) and num_servers shards, each on a thread of
 * its own while it joins (pserv_server_create blocks until the job forms). Returns at once;
 * the job forms when num_workers workers have joined. PSERV_ERR_INVALID_ARG for bad params,
 * with the reason in pserv_last_error().
 */
PSERV_API pserv_status_t pserv_local_create(const pserv_local_params_t *params, pserv_local_h *local);
/** The coordinator's address, "127.0.0.1:PORT", for pserv_worker_params_t.coordinator. Thread-safe. */
PSERV_API const char *pserv_local_coordinator(pserv_local_h local);
/**
 * Waits up to timeout_ms (< 0: forever) until shard `index` (0 .. num_servers-1, in start
 * order, not its rank) has joined the formed job, and gives its handle (for pserv_server_stats,
 * pserv_server_rank); the handle stays owned by `local`. Returns the error of the shard's
 * pserv_server_create if it failed, PSERV_ERR_TIMED_OUT if the job has not formed in time; the
 * detail is in pserv_last_error(). Thread-safe.
 */
PSERV_API pserv_status_t pserv_local_server(pserv_local_h local, unsigned index, int timeout_ms,
                                            pserv_server_h *server);
/**
 * Ends the job and frees it; call it after every worker of this process was destroyed. Waits up
 * to timeout_ms (< 0: forever) for the job to end (every worker left), then stops the shards and
 * the coordinator. If the job never formed, the shards still joining give up at their own
 * timeout (params timeout_ms, counted from pserv_local_create), which bounds this call too.
 * Returns PSERV_OK for a clean end; otherwise the coordinator's result (PSERV_ERR_PEER_FAILED
 * when a member failed), PSERV_ERR_TIMED_OUT when the job did not end or never formed in time,
 * or a shard's error, with the detail in pserv_last_error(). NULL is a no-op.
 */
PSERV_API pserv_status_t pserv_local_destroy(pserv_local_h local, int timeout_ms);

/* ------------------------------------------------------------------------------------------ */
/* Worker                                                                                       */

typedef struct pserv_worker *pserv_worker_h;

/** A request in flight; bounded ids (slot + generation), valid until waited on. */
typedef uint64_t pserv_request_t;

typedef struct {
    size_t size;             /**< sizeof(pserv_worker_params_t) */
    const char *coordinator; /**< "host:port" of the coordinator (required) */
    int timeout_ms;          /**< how long to wait for the job to form; default 30000 */
    unsigned max_requests;   /**< requests in flight at once; default 1024 */
    /**
     * Node group: workers that name the same node (e.g. the GPUs of one machine) reduce their
     * gradients among themselves first (pserv_cuda_node_push_pull) and push each chunk once per
     * group, from the member whose slice holds it. In sync mode a chunk's round completes when
     * every group has pushed it. NULL or "": a group of its own (every worker pushes everything).
     */
    const char *node;
    /**
     * The job settings this worker runs with, as "key=value key=value ..." (e.g. "epochs=3 lr=0.1").
     * The first worker's settings are the job's; a worker whose settings differ is refused at
     * create with PSERV_ERR_MISMATCH, and pserv_worker_last_error() names the setting. NULL: none.
     */
    const char *settings;
    /**
     * 1: join a running job in the place of a dead worker (the job's on_worker_failure must be
     * continue; rank: that worker's, or any dead one's). The worker is in the job from the job's
     * next barrier on: call pserv_worker_barrier first, then pull the parameters
     * (pserv_job_info_t.next_barrier says which barrier that is).
     */
    int rejoin;
} pserv_worker_params_t;

#define PSERV_WORKER_PARAMS_INIT { sizeof(pserv_worker_params_t), NULL, 0, 0, NULL, NULL, 0 }

/** What a worker learns when it joins. */
typedef struct {
    size_t size; /**< sizeof(pserv_job_info_t) */
    unsigned rank, num_workers, num_servers;
    pserv_mode_t mode;
    size_t chunk_bytes;
    uint32_t map_version; /**< version of the cluster view this worker has installed */
    unsigned node;        /**< this worker's node group, 0 .. num_nodes-1 (by lowest worker rank) */
    unsigned num_nodes;   /**< node groups in the job: the pushes each chunk needs per sync round */
    unsigned local_rank;  /**< rank within the node group (by worker rank), 0 .. local_size-1 */
    unsigned local_size;  /**< workers in this worker's node group */
    /**
     * The round the job resumed from (the coordinator's resume_dir): every chunk's rounds go on
     * from it, so a training loop picks up its place in the data there. 0: a fresh start.
     */
    uint64_t resume_round;
    uint64_t next_barrier; /**< barriers the job has passed when this worker joined (a rejoining worker's first) */
} pserv_job_info_t;

#define PSERV_JOB_INFO_INIT { sizeof(pserv_job_info_t), 0, 0, 0, PSERV_MODE_SYNC, 0, 0, 0, 0, 0, 0, 0, 0 }

/** Largest payload of pserv_worker_node_broadcast (an NCCL unique id is 128 bytes). */
#define PSERV_NODE_BROADCAST_MAX 1024

/** A tensor to register on the servers. */
typedef struct {
    size_t size;             /**< sizeof(pserv_tensor_params_t) */
    uint64_t key;            /**< the tensor's id, unique in the job */
    size_t count;            /**< number of elements (>= 1) */
    pserv_dtype_t dtype;     /**< PSERV_DTYPE_FLOAT32 (the default) */
    const void *init;        /**< initial values (count elements), or NULL for init_value */
    float init_value;        /**< used when init is NULL */
    pserv_optim_params_t optim;
} pserv_tensor_params_t;

#define PSERV_TENSOR_PARAMS_INIT                                                              \
    { sizeof(pserv_tensor_params_t), 0, 0, PSERV_DTYPE_FLOAT32, NULL, 0.0f, PSERV_OPTIM_PARAMS_INIT }

/** Counters of a worker. */
typedef struct {
    size_t size;         /**< sizeof(pserv_worker_stats_t) */
    uint64_t bytes_pushed;
    uint64_t bytes_pulled;
    uint64_t requests;   /**< push, pull and push-pull requests waited on */
    uint64_t errors;     /**< of those, how many completed with an error */
    uint64_t batches_sent;     /**< BATCH messages sent (groups: several chunk messages in one) */
    uint64_t batched_messages; /**< chunk messages that went inside those batches */
    uint64_t batches_received; /**< BATCH replies received (a shard's answers coalesced) */
} pserv_worker_stats_t;

#define PSERV_WORKER_STATS_INIT { sizeof(pserv_worker_stats_t), 0, 0, 0, 0, 0, 0, 0 }

/**
 * Joins the job through the coordinator, connects to every server shard and returns.
 * PSERV_ERR_UNREACHABLE / PSERV_ERR_TIMED_OUT name the address in pserv_worker_last_error().
 */
PSERV_API pserv_status_t pserv_worker_create(const pserv_worker_params_t *params, pserv_worker_h *worker);
/** The job as the coordinator described it. */
PSERV_API pserv_status_t pserv_worker_job(pserv_worker_h worker, pserv_job_info_t *info);
/**
 * Registers a tensor and waits for it (blocking): the coordinator places its chunks on the
 * servers (the first registration of a key), then the owners receive the initial values.
 * Every worker registers the same tensors; later registrations must match the first in count,
 * dtype, optimizer and every hyper-parameter (PSERV_ERR_MISMATCH otherwise, naming the field in
 * pserv_worker_last_error()). A chunk size that cuts the tensor into more than 65536 chunks is
 * refused with PSERV_ERR_INVALID_ARG. Give every worker the same initial values, or barrier after.
 */
PSERV_API pserv_status_t pserv_worker_register(pserv_worker_h worker, const pserv_tensor_params_t *tensor);
/**
 * Pushes a gradient of the whole tensor (count elements). The buffer must stay unchanged
 * until the request is waited on. In sync mode, a worker pushes round r+1 of a tensor only
 * after it pulled round r (push_pull does both).
 */
PSERV_API pserv_status_t pserv_worker_push(pserv_worker_h worker, uint64_t key, const void *grad,
                                           pserv_request_t *req);
/**
 * Pulls the tensor into dst (count elements), which must stay valid until the wait. In sync
 * mode the values are those after every round this worker pushed has been applied.
 */
PSERV_API pserv_status_t pserv_worker_pull(pserv_worker_h worker, uint64_t key, void *dst,
                                           pserv_request_t *req);
/** Fused push then pull of the updated values: one round trip per chunk. */
PSERV_API pserv_status_t pserv_worker_push_pull(pserv_worker_h worker, uint64_t key, const void *grad,
                                                void *dst, pserv_request_t *req);
/**
 * Geometry of a registered tensor: its element count and the elements per chunk (the unit of
 * range requests). PSERV_ERR_UNKNOWN_KEY if this worker has not registered the key.
 */
PSERV_API pserv_status_t pserv_worker_tensor_info(pserv_worker_h worker, uint64_t key, size_t *count,
                                                  size_t *chunk_elems);
/**
 * Range requests: the same as push / pull / push_pull on elements [offset, offset + count) of
 * the tensor only; grad and dst hold those count elements (element i is tensor element
 * offset + i). offset must be a multiple of the chunk size, and offset + count a multiple of it
 * or the tensor's end (PSERV_ERR_INVALID_ARG otherwise, detail in pserv_worker_last_error).
 * Sync rounds are counted per chunk: a worker (or its node group) pushes a chunk's round r + 1
 * after it pulled the chunk's round r. The pipelines of pserv_cuda.h are built on these.
 */
PSERV_API pserv_status_t pserv_worker_push_range(pserv_worker_h worker, uint64_t key, size_t offset, size_t count,
                                                 const void *grad, pserv_request_t *req);
PSERV_API pserv_status_t pserv_worker_pull_range(pserv_worker_h worker, uint64_t key, size_t offset, size_t count,
                                                 void *dst, pserv_request_t *req);
PSERV_API pserv_status_t pserv_worker_push_pull_range(pserv_worker_h worker, uint64_t key, size_t offset,
                                                      size_t count, const void *grad, void *dst,
                                                      pserv_request_t *req);
/**
 * Groups, the way NCCL groups collectives: push / pull / push_pull requests (and their range
 * forms) that the calling thread issues between pserv_worker_group_start and
 * pserv_worker_group_end are issued as usual (each returns its request) but their chunk
 * messages of up to 64 KiB are not sent one by one: those for one server travel together as one
 * message (a batch of up to 256 KiB, or the job's chunk size if smaller), sent when full and at
 * group_end. Bigger chunks go alone at once. Use it for many small tensors: one message per
 * server instead of one per tensor. Wait on the requests after group_end (before it, their
 * messages may not have left). Groups nest (only the outermost end sends). A group belongs to
 * the thread that opened it: other threads' requests on the same worker go out as usual, and
 * their group_start fails with PSERV_ERR_NO_RESOURCE until it ends. group_end from a thread with
 * no open group is PSERV_ERR_INVALID_ARG. A shard answers the messages of one batch (and what
 * they complete for other workers) in one message per worker too. Thread-safe.
 */
PSERV_API pserv_status_t pserv_worker_group_start(pserv_worker_h worker);
PSERV_API pserv_status_t pserv_worker_group_end(pserv_worker_h worker);
/**
 * push_pull of n whole tensors in one group: keys[i]'s gradient grads[i], its new values into
 * dsts[i], its request in reqs[i]. Every reqs[i] is a request to wait on: one that could not be
 * issued (an unknown key, say) completes at once with its error, and the others go on. Returns
 * PSERV_OK, or the first such error (detail in pserv_worker_last_error()).
 */
PSERV_API pserv_status_t pserv_worker_push_pull_many(pserv_worker_h worker, size_t n, const uint64_t *keys,
                                                     const void *const *grads, void *const *dsts,
                                                     pserv_request_t *reqs);
/**
 * Waits for a request (timeout_ms < 0: forever) and frees it; returns its status. On
 * PSERV_ERR_TIMED_OUT the request stays in flight and may be waited on again.
 */
PSERV_API pserv_status_t pserv_worker_wait(pserv_worker_h worker, pserv_request_t req, int timeout_ms);
/** Sets *done to 1 if the request has completed (then wait returns at once), else 0. */
PSERV_API pserv_status_t pserv_worker_test(pserv_worker_h worker, pserv_request_t req, int *done);
/**
 * Node-group broadcast (collective over the worker's node group, blocking, and a barrier of
 * the group): local rank 0's len bytes of buf reach buf on every member. len must be the same
 * on every member and at most PSERV_NODE_BROADCAST_MAX. Used to pass an NCCL unique id.
 */
PSERV_API pserv_status_t pserv_worker_node_broadcast(pserv_worker_h worker, void *buf, size_t len, int timeout_ms);
/** Blocks until every worker of the job reaches the barrier (timeout_ms < 0: forever). */
PSERV_API pserv_status_t pserv_worker_barrier(pserv_worker_h worker, int timeout_ms);
/**
 * How many workers met at the last barrier and this worker's place among them (0 .. count-1, by
 * rank): with on_worker_failure continue, dead workers are not counted and a rejoined one is, so
 * a training loop shares its data among the workers there. Before any barrier: the job's.
 */
PSERV_API pserv_status_t pserv_worker_share(pserv_worker_h worker, unsigned *index, unsigned *count);
/** Copies the worker's counters. Thread-safe. */
PSERV_API pserv_status_t pserv_worker_stats(pserv_worker_h worker, pserv_worker_stats_t *stats);
/** Detail of the last error on this handle, or "". */
PSERV_API const char *pserv_worker_last_error(pserv_worker_h worker);
/** Leaves the job (the coordinator ends it when every worker has left) and frees the worker. */
PSERV_API pserv_status_t pserv_worker_destroy(pserv_worker_h worker);
/**
 * Tells the job that this worker cannot go on (reason: a short text the coordinator reports), so
 * the job follows its failure policy at once instead of waiting for the worker's pushes; then
 * frees the worker. Use it instead of pserv_worker_destroy on an error path.
 */
PSERV_API pserv_status_t pserv_worker_abort(pserv_worker_h worker, const char *reason);

/* ------------------------------------------------------------------------------------------ */
/* Checkpoints, read back outside a job                                                         */

typedef struct pserv_checkpoint *pserv_checkpoint_h;

typedef struct {
    size_t size;          /**< sizeof(pserv_checkpoint_info_t) */
    uint64_t round;       /**< the round every chunk had reached */
    unsigned num_servers; /**< shards that wrote it */
    pserv_mode_t mode;
    unsigned num_tensors;
    uint64_t bytes;       /**< of all its files */
} pserv_checkpoint_info_t;

#define PSERV_CHECKPOINT_INFO_INIT { sizeof(pserv_checkpoint_info_t), 0, 0, PSERV_MODE_SYNC, 0, 0 }

/**
 * Opens round `round` of a checkpoint directory (0: the newest complete one), checking every
 * file's header. PSERV_ERR_UNKNOWN_KEY when there is none, PSERV_ERR_CORRUPT for a damaged or
 * inconsistent file; pserv_last_error() names the file and the problem.
 */
PSERV_API pserv_status_t pserv_checkpoint_open(const char *dir, uint64_t round, pserv_checkpoint_h *ckpt);
PSERV_API pserv_status_t pserv_checkpoint_info(pserv_checkpoint_h ckpt, pserv_checkpoint_info_t *info);
/** The key and element count of tensor `index` (0 .. num_tensors-1). */
PSERV_API pserv_status_t pserv_checkpoint_tensor(pserv_checkpoint_h ckpt, unsigned index, uint64_t *key,
                                                 size_t *count);
/** Reads a tensor's parameters (count float32 values), checking each section's CRC32C. */
PSERV_API pserv_status_t pserv_checkpoint_read(pserv_checkpoint_h ckpt, uint64_t key, void *values);
PSERV_API void pserv_checkpoint_close(pserv_checkpoint_h ckpt);

#ifdef __cplusplus
}
#endif
#endif
