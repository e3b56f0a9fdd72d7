/* Symbol visibility: the library is built with -fvisibility=hidden; only PSERV_API is exported. */
#ifndef PSERV_EXPORT_H
#define PSERV_EXPORT_H
#if defined(__GNUC__)
#define PSERV_API __attribute__((visibility("default")))
#else
#define PSERV_API
#endif
#endif
