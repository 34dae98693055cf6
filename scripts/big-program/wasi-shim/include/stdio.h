/* build-big-program WASI shim: WASI preview 1 cannot start processes; popen/pclose exist so that
 * programs that can run helper tools (cppcheck's addons) link, and fail with ENOSYS. */
#ifndef BIG_SHIM_STDIO_H
#define BIG_SHIM_STDIO_H
#include_next <stdio.h>
#ifdef __cplusplus
extern "C" {
#endif
FILE *popen(const char *, const char *);
int pclose(FILE *);
#ifdef __cplusplus
}
#endif
#endif
