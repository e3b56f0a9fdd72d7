/* Control payloads: codec bounds, job description and tensor descriptor round trips. */
#include <criterion/criterion.h>
#include <string.h>

#include "hostport.h"
#include "job.h"
#include "keymap.h"
#include "tensor_desc.h"

Test(codec, reader_never_reads_past_the_end)
{
    uint8_t buf[6] = {1, 0, 0, 0, 2, 0};
    ps_reader_t r;
    ps_reader_init(&r, buf, sizeof(buf));
    cr_assert_eq(ps_get_u32(&r), 1);
    cr_assert_eq(ps_get_u32(&r), 0);
    cr_assert(r.bad);
    cr_assert_eq(ps_get_u64(&r), 0);
}

Test(codec, string_longer_than_its_buffer_is_bad)
{
    uint8_t buf[64];
    char out[4];
    ps_writer_t w;
    ps_reader_t r;
    ps_writer_init(&w, buf, sizeof(buf));
    ps_put_str(&w, "toolong");
    ps_reader_init(&r, buf, w.len);
    ps_get_str(&r, out, sizeof(out));
    cr_assert(r.bad);
    ps_writer_init(&w, buf, 5);
    ps_put_str(&w, "abcd");
    cr_assert(w.overflow);
}

Test(codec, job_round_trip)
{
    char servers[2][PS_ADDR_MAX] = {"10.0.0.1:5000", "node7:5001"};
    uint32_t worker_node[3] = {0, 1, 0}; /* workers 0 and 2 share a node */
    ps_job_t job = {.mode = PSERV_MODE_ASYNC, .num_servers = 2, .num_workers = 3, .chunk_bytes = 1 << 20,
                    .heartbeat_ms = 250, .failure_timeout_ms = 2000, .on_worker_failure = PSERV_ON_FAILURE_CONTINUE,
                    .servers = servers, .num_nodes = 2, .worker_node = worker_node},
             out;
    uint8_t buf[1024];
    ps_writer_t w;
    ps_reader_t r;
    uint32_t rank;
    ps_writer_init(&w, buf, sizeof(buf));
    ps_job_encode(&job, 1, &w);
    ps_reader_init(&r, buf, w.len);
    cr_assert_eq(ps_job_decode(&r, &out, &rank), PSERV_OK);
    cr_assert_eq(rank, 1);
    cr_assert_eq(out.mode, PSERV_MODE_ASYNC);
    cr_assert_eq(out.num_workers, 3);
    cr_assert_eq(out.heartbeat_ms, 250);
    cr_assert_eq(out.failure_timeout_ms, 2000);
    cr_assert_eq(out.on_worker_failure, PSERV_ON_FAILURE_CONTINUE);
    cr_assert_str_eq(out.servers[1], "node7:5001");
    cr_assert_eq(out.num_nodes, 2);
    cr_assert_eq(out.worker_node[2], 0);
    uint32_t local_rank, local_size;
    ps_job_node_of(&out, 2, &local_rank, &local_size);
    cr_assert_eq(local_rank, 1);
    cr_assert_eq(local_size, 2);
    ps_job_node_of(&out, 1, &local_rank, &local_size);
    cr_assert_eq(local_rank, 0);
    cr_assert_eq(local_size, 1);
    ps_job_free(&out);
    /* every truncation is rejected */
    for (size_t n = 0; n < w.len; n++) {
        ps_reader_init(&r, buf, n);
        cr_assert_eq(ps_job_decode(&r, &out, &rank), PSERV_ERR_BAD_MESSAGE, "truncated at %zu", n);
    }
    /* node groups out of range, or a group with no worker, are rejected */
    uint32_t bad_nodes[][3] = {{0, 2, 0}, {0, 0, 0}};
    uint32_t bad_counts[] = {2, 2};
    for (size_t i = 0; i < 2; i++) {
        job.worker_node = bad_nodes[i];
        job.num_nodes = bad_counts[i];
        ps_writer_init(&w, buf, sizeof(buf));
        ps_job_encode(&job, 1, &w);
        ps_reader_init(&r, buf, w.len);
        cr_assert_eq(ps_job_decode(&r, &out, &rank), PSERV_ERR_BAD_MESSAGE, "bad node groups %zu", i);
    }
}

Test(codec, tensor_desc_round_trip_and_validation)
{
    ps_tensor_desc_t d = {1000, PSERV_DTYPE_FLOAT32, PSERV_OPTIM_PARAMS_INIT}, out;
    d.optim.type = PSERV_OPTIM_ADAMW;
    d.optim.lr = 0.5f;
    uint8_t buf[PS_TENSOR_DESC_LEN];
    ps_writer_t w;
    ps_reader_t r;
    ps_writer_init(&w, buf, sizeof(buf));
    ps_tensor_desc_encode(&d, &w);
    cr_assert_eq(w.len, PS_TENSOR_DESC_LEN);
    cr_assert(!w.overflow);
    ps_reader_init(&r, buf, w.len);
    cr_assert_eq(ps_tensor_desc_decode(&r, &out), PSERV_OK);
    cr_assert(ps_tensor_desc_same(&d, &out));
    cr_assert_float_eq(out.optim.lr, 0.5f, 0);
    /* every hyper-parameter counts: the first field that differs is named */
    out.optim.lr = 0.25f;
    cr_assert_str_eq(ps_tensor_desc_diff(&d, &out), "lr");
    out.optim.lr = 0.5f;
    out.optim.weight_decay = 0.1f;
    cr_assert_str_eq(ps_tensor_desc_diff(&d, &out), "weight_decay");
    out.optim.weight_decay = d.optim.weight_decay;
    cr_assert_null(ps_tensor_desc_diff(&d, &out));
    buf[8] = 9; /* dtype */
    ps_reader_init(&r, buf, w.len);
    cr_assert_eq(ps_tensor_desc_decode(&r, &out), PSERV_ERR_BAD_MESSAGE);
}

Test(codec, hostport_parsing)
{
    char host[PS_HOST_MAX];
    uint16_t port;
    cr_assert_eq(ps_hostport_parse("127.0.0.1:7000", 1, host, &port), PSERV_OK);
    cr_assert_str_eq(host, "127.0.0.1");
    cr_assert_eq(port, 7000);
    cr_assert_eq(ps_hostport_parse("node1", 9, host, &port), PSERV_OK);
    cr_assert_eq(port, 9);
    cr_assert_eq(ps_hostport_parse("[::1]:80", 0, host, &port), PSERV_OK);
    cr_assert_str_eq(host, "::1");
    const char *bad[] = {"", ":80", "host:", "host:70000", "host:-1", "host:12x", "[::1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(ps_hostport_parse(bad[i], 0, host, &port), PSERV_ERR_INVALID_ARG, "%s", bad[i]);
}

Test(codec, keymap_grows_and_finds)
{
    ps_keymap_t m;
    static int values[5000];
    ps_keymap_init(&m);
    for (uint64_t k = 0; k < 5000; k++) cr_assert_eq(ps_keymap_put(&m, k * 7919, &values[k]), PSERV_OK);
    cr_assert_eq(ps_keymap_put(&m, 7919, &values[0]), PSERV_ERR_EXISTS);
    for (uint64_t k = 0; k < 5000; k++) cr_assert_eq(ps_keymap_get(&m, k * 7919), &values[k]);
    cr_assert_null(ps_keymap_get(&m, 1));
    ps_keymap_fini(&m);
}
