#include "model_error.h"

#include <stdarg.h>
#include <stdio.h>

#include "pserv/pserv_model.h"

static __thread char ps_model_error_text[512];

pserv_status_t ps_model_error(pserv_status_t st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps_model_error_text, sizeof(ps_model_error_text), fmt, ap);
    va_end(ap);
    return st;
}

const char *pserv_model_last_error(void)
{
    return ps_model_error_text;
}
