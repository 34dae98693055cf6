/* build-big-program WASI shim: the 2022 wasi-libc has no realpath; wasi_shim.c defines a lexical
 * one (getcwd + "."/".." folding, no symlinks, fails with ENOENT if the path does not exist). */
#ifndef BIG_SHIM_STDLIB_H
#define BIG_SHIM_STDLIB_H
#include_next <stdlib.h>
#ifdef __cplusplus
extern "C" {
#endif
char *realpath(const char *__restrict, char *__restrict);
#ifdef __cplusplus
}
#endif
#endif
