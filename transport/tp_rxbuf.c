/*
 * Receive buffers for eager payloads that UCX cannot lend us (and rendezvous payloads nobody
 * placed): power-of-two size classes with free lists, so steady traffic allocates nothing.
 * Progress thread only. A class keeps at most TP_RXBUF_CLASS_BYTES of free buffers (at least
 * two), so a burst does not pin memory for good; larger payloads use the heap directly.
 */
#include <stdlib.h>

#include "tp_internal.h"

typedef struct tp_rxbuf {
    struct tp_rxbuf *next;
} tp_rxbuf_t;

/* The class of a length, or -1 when it is larger than the largest class. */
static int tp_rxbuf_class(size_t len)
{
    int c = 0;
    size_t size = (size_t)1 << TP_RXBUF_MIN_SHIFT;
    while (size < len) {
        if (++c >= TP_RXBUF_CLASSES) return -1;
        size <<= 1;
    }
    return c;
}

static unsigned tp_rxbuf_keep(int c)
{
    size_t size = (size_t)1 << (TP_RXBUF_MIN_SHIFT + c);
    size_t keep = TP_RXBUF_CLASS_BYTES / size;
    return keep < 2 ? 2 : (unsigned)keep;
}

void *tp_rxbuf_get(ps_tp_t *tp, size_t len)
{
    int c = tp_rxbuf_class(len);
    if (c < 0) return malloc(len);
    tp_rxbuf_t *b = tp->rxbuf_free[c];
    if (b != NULL) {
        tp->rxbuf_free[c] = b->next;
        tp->rxbuf_count[c]--;
        return b;
    }
    return malloc((size_t)1 << (TP_RXBUF_MIN_SHIFT + c));
}

void tp_rxbuf_put(ps_tp_t *tp, void *buf, size_t len)
{
    int c = tp_rxbuf_class(len);
    if (buf == NULL) return;
    if (c < 0 || tp->rxbuf_count[c] >= tp_rxbuf_keep(c)) {
        free(buf);
        return;
    }
    tp_rxbuf_t *b = buf;
    b->next = tp->rxbuf_free[c];
    tp->rxbuf_free[c] = b;
    tp->rxbuf_count[c]++;
}

void tp_rxbuf_free_all(ps_tp_t *tp)
{
    for (int c = 0; c < TP_RXBUF_CLASSES; c++) {
        while (tp->rxbuf_free[c] != NULL) {
            tp_rxbuf_t *b = tp->rxbuf_free[c];
            tp->rxbuf_free[c] = b->next;
            free(b);
        }
        tp->rxbuf_count[c] = 0;
    }
}
