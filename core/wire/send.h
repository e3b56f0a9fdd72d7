/* Sending messages: a header (encoded here) with an optional payload, and the common replies. */
#ifndef PS_SEND_H
#define PS_SEND_H

#include "transport.h"
#include "wire.h"

/* The header of a header-only reply to a request: type, sender, status, and the request's req_id,
 * key, chunk, offset, round and view version. */
void ps_reply_hdr(ps_wire_hdr_t *h, const ps_wire_hdr_t *req, ps_msg_type_t type, uint32_t sender,
                  pserv_status_t status);
/* Sends a header-only reply to a request (status, same req_id, key and chunk). */
pserv_status_t ps_reply_status(ps_tp_peer_t *peer, const ps_wire_hdr_t *req, ps_msg_type_t type,
                               uint32_t sender, pserv_status_t status);
/* Encodes and sends a header (its length set to len) with an optional payload; cb may be NULL. */
pserv_status_t ps_send_msg(ps_tp_peer_t *peer, const ps_wire_hdr_t *h, const void *data, size_t len,
                           ps_tp_mem_t *mem, ps_tp_send_cb_t cb, void *arg);
/* A send completion that frees its argument: for payloads that must outlive the send. */
void ps_send_free_cb(void *arg, pserv_status_t status);

#endif
