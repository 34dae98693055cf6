/* build-big-program WASI shim: the 2022 wasi-libc lacks DT_SOCK (libc++ <filesystem> uses it)
 * and hides readdir_r (cppcheck's file lister uses it; wasi_shim.c defines it over readdir). */
#ifndef BIG_SHIM_DIRENT_H
#define BIG_SHIM_DIRENT_H
#include_next <dirent.h>
#ifndef DT_SOCK
#define DT_SOCK 20
#endif
#ifdef __cplusplus
extern "C" {
#endif
int readdir_r(DIR *__restrict, struct dirent *__restrict, struct dirent **__restrict);
#ifdef __cplusplus
}
#endif
#endif
