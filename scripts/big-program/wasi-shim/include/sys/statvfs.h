/* build-big-program WASI shim. Debian bookworm's wasi-libc (2022) has no <sys/statvfs.h> and
 * hides chmod/fchmod/fchmodat; libc++'s <filesystem> sources (built so that <fstream> exists)
 * refer to them. wasi_shim.c defines them to fail with ENOTSUP, as WASI preview 1 cannot do either. */
#ifndef BIG_SHIM_SYS_STATVFS_H
#define BIG_SHIM_SYS_STATVFS_H
#include <sys/types.h>
#ifdef __cplusplus
extern "C" {
#endif
struct statvfs {
  unsigned long f_bsize, f_frsize;
  fsblkcnt_t f_blocks, f_bfree, f_bavail;
  fsfilcnt_t f_files, f_ffree, f_favail;
  unsigned long f_fsid, f_flag, f_namemax;
};
int statvfs(const char *__restrict, struct statvfs *__restrict);
int fstatvfs(int, struct statvfs *);
int chmod(const char *, mode_t);
int fchmod(int, mode_t);
int fchmodat(int, const char *, mode_t, int);
#ifdef __cplusplus
}
#endif
#endif
