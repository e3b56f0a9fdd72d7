/* Memory registration: ucp_mem_map once, so sends from that memory skip per-send pinning. */
#include <stdlib.h>

#include "check.h"
#include "log.h"
#include "tp_internal.h"

pserv_status_t ps_tp_mem_register(ps_tp_t *tp, void *addr, size_t len, ps_tp_mem_t **out)
{
    PS_CHECK_ARG(tp != NULL && addr != NULL && len > 0 && out != NULL);

    ps_tp_mem_t *mem = calloc(1, sizeof(*mem));
    if (mem == NULL) return PSERV_ERR_NO_MEMORY;

    /* The context lock (mt_workers_shared) makes this safe next to the progress thread. */
    ucp_mem_map_params_t p = {.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH,
                              .address = addr,
                              .length = len};
    ucs_status_t st = ucp_mem_map(tp->context, &p, &mem->memh);
    if (st != UCS_OK) {
        ps_error("transport: cannot register %zu bytes at %p: %s", len, addr, ucs_status_string(st));
        free(mem);
        return tp_status(st);
    }
    mem->tp = tp;
    mem->addr = addr;
    mem->len = len;
    pthread_mutex_lock(&tp->lock);
    tp_list_add(&tp->mems, &mem->link);
    pthread_mutex_unlock(&tp->lock);
    *out = mem;
    return PSERV_OK;
}

void ps_tp_mem_deregister(ps_tp_mem_t *mem)
{
    if (mem == NULL) return;
    pthread_mutex_lock(&mem->tp->lock);
    tp_list_del(&mem->link);
    pthread_mutex_unlock(&mem->tp->lock);
    ucs_status_t st = ucp_mem_unmap(mem->tp->context, mem->memh);
    if (st != UCS_OK) ps_warn("transport: ucp_mem_unmap failed: %s", ucs_status_string(st));
    free(mem);
}

void tp_mem_release_all(ps_tp_t *tp)
{
    unsigned n = 0;
    while (!tp_list_empty(&tp->mems)) {
        ps_tp_mem_t *mem = tp_container_of(tp->mems.next, ps_tp_mem_t, link);
        tp_list_del(&mem->link);
        ucp_mem_unmap(tp->context, mem->memh);
        free(mem);
        n++;
    }
    if (n > 0) ps_warn("transport destroyed with %u memory registrations left: released", n);
}
