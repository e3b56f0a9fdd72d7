#include "pserv/pserv.h"

const char *pserv_strerror(pserv_status_t status)
{
    switch (status) {
#define PS_STATUS_CASE_(name, value, text)                                                   \
    case PSERV_##name:                                                                       \
        return text;
        PSERV_STATUS_MAP(PS_STATUS_CASE_)
#undef PS_STATUS_CASE_
    }
    return "unknown status";
}

#define PS_STR_(x) #x
#define PS_STR(x) PS_STR_(x)

const char *pserv_version(void)
{
    return PS_STR(PSERV_VERSION_MAJOR) "." PS_STR(PSERV_VERSION_MINOR) "." PS_STR(PSERV_VERSION_PATCH);
}
