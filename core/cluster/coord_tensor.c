/*
 * Tensors and views at the coordinator. A worker's TENSOR (payload: key, descriptor) names a key and its descriptor: the
 * first one places the tensor in the view (a new version, sent to every member); a later one must
 * describe the same tensor, field by field, or it is refused with the field's name, so two
 * workers can never train one tensor with different settings.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator_internal.h"

uint8_t *ps_coord_view_bytes(pserv_coordinator_h c, size_t *len)
{
    size_t n = ps_view_encoded_size(&c->view);
    uint8_t *buf = malloc(n);
    if (buf == NULL) return NULL;
    ps_writer_t w;
    ps_writer_init(&w, buf, n);
    ps_view_encode(&c->view, &w);
    *len = w.len;
    return buf;
}

void ps_coord_publish(pserv_coordinator_h c)
{
    c->view.version++;
    size_t len;
    uint8_t *bytes = ps_coord_view_bytes(c, &len);
    if (bytes == NULL) {
        ps_error("no memory to send view %u", c->view.version);
        return;
    }
    for (uint32_t i = 0; i < c->capacity; i++) {
        ps_coord_member_t *m = &c->members[i];
        if (!m->used || m->failed || m->left) continue;
        uint8_t *copy = malloc(len);
        if (copy == NULL) continue;
        memcpy(copy, bytes, len);
        ps_wire_hdr_t h;
        ps_wire_hdr_init(&h, PS_MSG_VIEW);
        h.map_version = c->view.version;
        ps_send_msg(m->peer, &h, copy, len, NULL, ps_send_free_cb, copy);
    }
    free(bytes);
    ps_debug("view %u published", c->view.version);
}

static void ps_coord_tensor_reply(ps_coord_member_t *m, const ps_wire_hdr_t *req, pserv_status_t st,
                                  uint32_t version, const char *why)
{
    ps_wire_hdr_t h;
    ps_wire_hdr_init(&h, PS_MSG_TENSOR_REPLY);
    h.req_id = req->req_id;
    h.status = st;
    h.round = version;
    size_t len = why ? strlen(why) : 0;
    char *copy = len ? malloc(len) : NULL;
    if (copy) memcpy(copy, why, len);
    ps_send_msg(m->peer, &h, copy, copy ? len : 0, NULL, copy ? ps_send_free_cb : NULL, copy);
}

void ps_coord_on_tensor(pserv_coordinator_h c, ps_coord_member_t *m, const ps_wire_hdr_t *h, const void *data,
                        size_t len)
{
    ps_reader_t r;
    ps_tensor_desc_t desc;
    char why[PS_WIRE_REASON_MAX];
    const char *reason = NULL;
    ps_reader_init(&r, data, len);
    uint64_t key = ps_get_u64(&r);
    if (ps_tensor_desc_decode(&r, &desc) < 0 || r.pos != r.len) {
        c->rejected++;
        ps_coord_tensor_reply(m, h, PSERV_ERR_BAD_MESSAGE, c->view.version, "malformed tensor descriptor");
        return;
    }
    const ps_view_tensor_t *t = ps_view_tensor(&c->view, key);
    if (t != NULL) {
        const char *field = ps_tensor_desc_diff(&t->desc, &desc);
        if (field == NULL) {
            ps_coord_tensor_reply(m, h, PSERV_OK, c->view.version, NULL);
            return;
        }
        snprintf(why, sizeof(why), "tensor %llu: %s differs from the first registration's", (unsigned long long)key,
                 field);
        ps_warn("worker %u: %s", m->rank, why);
        ps_coord_tensor_reply(m, h, PSERV_ERR_MISMATCH, c->view.version, why);
        return;
    }
    pserv_status_t st = ps_view_place(&c->view, key, &desc, c->job.chunk_bytes, &reason);
    if (st == PSERV_ERR_NO_MEMORY) reason = "out of memory";
    if (st < 0) {
        snprintf(why, sizeof(why), "tensor %llu (%llu elements): %s", (unsigned long long)key,
                 (unsigned long long)desc.count, reason ? reason : pserv_strerror(st));
        ps_warn("worker %u: %s", m->rank, why);
        ps_coord_tensor_reply(m, h, st, c->view.version, why);
        return;
    }
    ps_coord_publish(c);
    ps_coord_tensor_reply(m, h, PSERV_OK, c->view.version, NULL);
}
