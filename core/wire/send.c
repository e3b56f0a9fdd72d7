/* Sending messages: encode the header, hand header and payload to the transport. */
#include "send.h"

#include <stdlib.h>

pserv_status_t ps_send_msg(ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const void *data, size_t len,
                           ps_tp_mem_t *mem, ps_tp_send_cb_t cb, void *arg)
{
    uint8_t buf[PS_WIRE_HDR_LEN];
    ps_wire_hdr_t out = *h;
    out.length = len; /* the header always tells the truth about its payload */
    ps_wire_encode(&out, buf);
    return ps_tp_send(peer, buf, sizeof(buf), data, len, mem, cb, arg);
}

void ps_send_free_cb(void *arg, pserv_status_t status)
{
    (void)status;
    free(arg);
}

void ps_reply_hdr(ps_wire_hdr_t *h, const ps_wire_hdr_t *req, ps_msg_type_t type, uint32_t sender,
                  pserv_status_t status)
{
    ps_wire_hdr_init(h, type);
    h->sender = sender;
    h->req_id = req->req_id;
    h->key = req->key;
    h->chunk = req->chunk;
    h->offset = req->offset;
    h->round = req->round;
    h->status = status;
    h->map_version = req->map_version;
}

pserv_status_t ps_reply_status(ps_tp_peer_t *peer, const ps_wire_hdr_t *req, ps_msg_type_t type,
                               uint32_t sender, pserv_status_t status)
{
    ps_wire_hdr_t h;
    ps_reply_hdr(&h, req, type, sender, status);
    return ps_send_msg(peer, &h, NULL, 0, NULL, NULL, NULL);
}
