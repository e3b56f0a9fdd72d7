#include "server_pipe.h"

#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "log.h"
#include "pinned.h"
#include "progress.h"

static void ps_pipe_release(ps_pipe_t *p, ps_work_t *w)
{
    if (w->slot >= 0) ps_pipe_slot_put(p, w->slot);
    else if (!w->borrowed) free(w->data); /* a heap copy (an oversized payload) or a VIEW's array, or NULL */
    free(w->roles);
}

/*
 * Waits (lock held) until work is queued or stop is asked. First it spins with the lock released
 * until spin_ns have passed since the last work (PSERV_PROGRESS): count and stop are written
 * under the lock with atomic stores, so the spinner reads them without it.
 */
static void ps_pipe_wait(ps_pipe_t *p, uint64_t last_work_ns)
{
    while (p->count == 0 && !p->stop) {
        if (ps_spin_on(p->spin_ns, last_work_ns)) {
            pthread_mutex_unlock(&p->lock);
            while (__atomic_load_n(&p->count, __ATOMIC_ACQUIRE) == 0 && !__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE) &&
                   ps_spin_on(p->spin_ns, last_work_ns))
                ps_spin_pause();
            pthread_mutex_lock(&p->lock);
            continue;
        }
        p->sleeping = 1;
        pthread_cond_wait(&p->cond, &p->lock);
        p->sleeping = 0;
    }
}

static void *ps_pipe_main(void *arg)
{
    ps_pipe_t *p = arg;
    uint64_t last_work_ns = ps_now_ns();
    pthread_mutex_lock(&p->lock);
    for (;;) {
        ps_pipe_wait(p, last_work_ns);
        if (p->stop) break;
        ps_work_t w = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        __atomic_store_n(&p->count, p->count - 1, __ATOMIC_RELAXED);
        if (p->pushers_waiting) pthread_cond_broadcast(&p->cond); /* room in the queue */
        pthread_mutex_unlock(&p->lock);
        p->run(p->arg, &w);
        if (w.kind != PS_WORK_VIEW) ps_pipe_release(p, &w); /* a VIEW's array now belongs to the shard */
        if (p->spin_ns != 0 && p->spin_ns != UINT64_MAX) last_work_ns = ps_now_ns();
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

pserv_status_t ps_pipe_start(ps_pipe_t *p, uint32_t nslots, size_t slot_bytes, uint64_t spin_ns,
                             void (*run)(void *, ps_work_t *), void *arg)
{
    pserv_status_t st = PSERV_ERR_NO_MEMORY;
    memset(p, 0, sizeof(*p));
    p->run = run;
    p->arg = arg;
    p->spin_ns = spin_ns;
    p->nslots = nslots;
    /* Slots are cache-line multiples, so one chunk's optimizer loop never shares a line with the next slot. */
    p->slot_bytes = (slot_bytes + 63) / 64 * 64;
    p->region_bytes = p->slot_bytes * nslots;
    p->cap = nslots + 1024; /* every slot queued, plus pulls, overflow copies and control work */
    p->ring = calloc(p->cap, sizeof(*p->ring));
    p->free_slots = malloc(nslots * sizeof(*p->free_slots));
    p->slot_hdr = calloc(nslots, sizeof(*p->slot_hdr));
    p->slot_has_hdr = calloc(nslots, 1);
    if (p->ring == NULL || p->free_slots == NULL || p->slot_hdr == NULL || p->slot_has_hdr == NULL) goto err_free;
    if ((st = ps_pinned_alloc(p->region_bytes, (void **)&p->slots)) < 0) goto err_free;
    for (uint32_t i = 0; i < nslots; i++) p->free_slots[i] = nslots - 1 - i;
    p->nfree = nslots;
    st = PSERV_ERR_NO_RESOURCE;
    if (pthread_mutex_init(&p->lock, NULL) != 0) goto err_pinned;
    if (pthread_cond_init(&p->cond, NULL) != 0) goto err_lock;
    if (pthread_create(&p->thread, NULL, ps_pipe_main, p) != 0) goto err_cond;
    p->started = 1;
    return PSERV_OK;

err_cond:
    pthread_cond_destroy(&p->cond);
err_lock:
    pthread_mutex_destroy(&p->lock);
err_pinned:
    ps_pinned_free(p->slots, p->region_bytes);
err_free:
    free(p->ring);
    free(p->free_slots);
    free(p->slot_hdr);
    free(p->slot_has_hdr);
    memset(p, 0, sizeof(*p));
    return st;
}

void ps_pipe_stop(ps_pipe_t *p)
{
    if (!p->started) return;
    pthread_mutex_lock(&p->lock);
    __atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    for (; p->count > 0; p->count--) {
        ps_pipe_release(p, &p->ring[p->head]); /* slots go back to the list freed below */
        p->head = (p->head + 1) % p->cap;
    }
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    ps_pinned_free(p->slots, p->region_bytes);
    free(p->ring);
    free(p->free_slots);
    free(p->slot_hdr);
    free(p->slot_has_hdr);
    memset(p, 0, sizeof(*p));
}

int32_t ps_pipe_slot_get(ps_pipe_t *p)
{
    pthread_mutex_lock(&p->lock);
    int32_t slot = p->nfree == 0 || p->stop ? -1 : (int32_t)p->free_slots[--p->nfree];
    if (slot >= 0) p->slot_has_hdr[slot] = 0;
    pthread_mutex_unlock(&p->lock);
    if (slot < 0) __atomic_fetch_add(&p->overflows, 1, __ATOMIC_RELAXED);
    return slot;
}

int32_t ps_pipe_slot_of(const ps_pipe_t *p, const void *buf)
{
    const uint8_t *b = buf;
    if (p->slots == NULL || b < p->slots || b >= p->slots + p->region_bytes) return -1;
    return (int32_t)((size_t)(b - p->slots) / p->slot_bytes);
}

uint8_t *ps_pipe_slot_data(ps_pipe_t *p, int32_t slot)
{
    return p->slots + (size_t)slot * p->slot_bytes;
}

void ps_pipe_slot_put(ps_pipe_t *p, int32_t slot)
{
    pthread_mutex_lock(&p->lock);
    p->free_slots[p->nfree++] = (uint32_t)slot;
    pthread_mutex_unlock(&p->lock);
}

void ps_pipe_push(ps_pipe_t *p, const ps_work_t *work)
{
    pthread_mutex_lock(&p->lock);
    while (p->count == p->cap && !p->stop) {
        p->pushers_waiting++;
        pthread_cond_wait(&p->cond, &p->lock);
        p->pushers_waiting--;
    }
    if (p->stop) {
        pthread_mutex_unlock(&p->lock);
        ps_work_t w = *work;
        ps_pipe_release(p, &w);
        return;
    }
    p->ring[(p->head + p->count) % p->cap] = *work;
    __atomic_store_n(&p->count, p->count + 1, __ATOMIC_RELEASE);
    if (p->sleeping) pthread_cond_broadcast(&p->cond); /* a spinning apply thread sees count */
    pthread_mutex_unlock(&p->lock);
}
