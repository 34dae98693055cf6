/* Shared helpers of the C WASI corpus (the .c files here, built by scripts/build-c-corpus).
 *
 * Every program prints the result of each call as numbers (WASI errno values: wasi-libc's errno
 * constants are the same numbers) and never a raw time, inode number or random byte: only facts
 * derived from them. Work is done in separate non-inlined functions so that a migration point on
 * each function moves that work, and only that work, to a clone. No call passes a value outside
 * one of preview 1's enum or flags types (a clock id, whence, advice, signal, oflags, fdflags,
 * fstflags, sdflags, rights): wasmtime does not answer those with EINVAL but stops the program
 * with an error that is neither an exit nor a wasm trap. */
#ifndef CC_COMMON_H
#define CC_COMMON_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

#define NOINLINE __attribute__((noinline))
/* For helpers here that some programs do not use. */
#define HELPER static NOINLINE __attribute__((unused))

/* proc_raise is no longer declared by wasi-libc but is still part of wasi_snapshot_preview1. */
uint16_t cc_proc_raise(uint8_t sig)
    __attribute__((import_module("wasi_snapshot_preview1"), import_name("proc_raise")));

/* Every right wasi_snapshot_preview1 defines (bits 0 to 29). */
#define RIGHTS_ALL ((__wasi_rights_t)0x3FFFFFFFull)
/* For directories: asking to write one is EISDIR. */
#define RIGHTS_DIR (RIGHTS_ALL & ~__WASI_RIGHTS_FD_WRITE)
#define RIGHTS_RW                                                                              \
    (__WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_WRITE | __WASI_RIGHTS_FD_SEEK |                   \
     __WASI_RIGHTS_FD_TELL | __WASI_RIGHTS_FD_FILESTAT_GET | __WASI_RIGHTS_FD_FILESTAT_SET_SIZE | \
     __WASI_RIGHTS_FD_FILESTAT_SET_TIMES | __WASI_RIGHTS_FD_FDSTAT_SET_FLAGS |                  \
     __WASI_RIGHTS_FD_SYNC | __WASI_RIGHTS_FD_DATASYNC | __WASI_RIGHTS_FD_ADVISE |              \
     __WASI_RIGHTS_FD_ALLOCATE | __WASI_RIGHTS_POLL_FD_READWRITE)
#define RIGHTS_RO                                                                              \
    (__WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_SEEK | __WASI_RIGHTS_FD_TELL |                    \
     __WASI_RIGHTS_FD_FILESTAT_GET | __WASI_RIGHTS_POLL_FD_READWRITE)

/* One line per call: what was called and the errno it returned. */
#define SHOW(label, expr)                                                                      \
    do {                                                                                        \
        int e_ = (int)(expr);                                                                   \
        printf("%s -> errno %d\n", label, e_);                                                  \
    } while (0)

/* A libc call returning -1 and errno on failure. */
#define LIBC(label, expr)                                                                      \
    do {                                                                                        \
        errno = 0;                                                                              \
        long r_ = (long)(expr);                                                                 \
        printf("%s -> %ld errno %d\n", label, r_, r_ < 0 ? errno : 0);                          \
    } while (0)

/* The descriptor of the preopen named /data (found through fd_prestat_get and
 * fd_prestat_dir_name), -1 without one. */
HELPER int data_dir(void) {
    for (int fd = 3; fd < 32; fd++) {
        __wasi_prestat_t ps;
        __wasi_errno_t e = __wasi_fd_prestat_get(fd, &ps);
        if (e == __WASI_ERRNO_BADF)
            break;
        if (e != 0 || ps.tag != __WASI_PREOPENTYPE_DIR || ps.u.dir.pr_name_len >= 64)
            continue;
        char name[64];
        if (__wasi_fd_prestat_dir_name(fd, (uint8_t *)name, ps.u.dir.pr_name_len) != 0)
            continue;
        name[ps.u.dir.pr_name_len] = 0;
        if (strcmp(name, "/data") == 0)
            return fd;
    }
    return -1;
}

/* Bytes as a C string literal. */
__attribute__((unused)) static void print_bytes(const char *label, const void *data, size_t n) {
    const unsigned char *p = data;
    printf("%s: %zu bytes \"", label, n);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n')
            printf("\\n");
        else if (p[i] == '"' || p[i] == '\\')
            printf("\\%c", p[i]);
        else if (p[i] >= 32 && p[i] < 127)
            putchar(p[i]);
        else
            printf("\\x%02x", p[i]);
    }
    printf("\"\n");
}

/* path_open with the usual arguments; prints the errno, returns the descriptor or -1. */
HELPER int open_at(int dir, const char *path, __wasi_lookupflags_t lookup,
                            __wasi_oflags_t oflags, __wasi_rights_t rights, __wasi_fdflags_t fdflags) {
    __wasi_fd_t fd = (__wasi_fd_t)-1;
    __wasi_errno_t e = __wasi_path_open(dir, lookup, path, oflags, rights, rights, fdflags, &fd);
    printf("path_open %s (lookup %u oflags %u fdflags %u) -> errno %d\n", path, (unsigned)lookup,
           (unsigned)oflags, (unsigned)fdflags, (int)e);
    return e == 0 ? (int)fd : -1;
}

/* fd_write of one buffer; prints errno and count. */
HELPER void write_text(int fd, const char *label, const char *text) {
    __wasi_ciovec_t iov = {(const uint8_t *)text, strlen(text)};
    __wasi_size_t n = 0;
    __wasi_errno_t e = __wasi_fd_write(fd, &iov, 1, &n);
    printf("%s: fd_write -> errno %d, %u bytes\n", label, (int)e, e == 0 ? (unsigned)n : 0u);
}

/* The whole file at `path` under `dir`, read with fd_pread (without moving any position). */
HELPER void show_file(int dir, const char *path) {
    __wasi_fd_t fd;
    __wasi_errno_t e = __wasi_path_open(dir, 0, path, 0, RIGHTS_RO, 0, 0, &fd);
    if (e != 0) {
        printf("file %s: cannot open, errno %d\n", path, (int)e);
        return;
    }
    char buf[512];
    __wasi_iovec_t iov = {(uint8_t *)buf, sizeof buf};
    __wasi_size_t n = 0;
    e = __wasi_fd_pread(fd, &iov, 1, 0, &n);
    if (e != 0)
        printf("file %s: fd_pread errno %d\n", path, (int)e);
    else {
        char label[160];
        snprintf(label, sizeof label, "file %s", path);
        print_bytes(label, buf, n);
    }
    (void)__wasi_fd_close(fd);
}

/* path_filestat_get, printed without times or inode. */
HELPER void show_stat(int dir, __wasi_lookupflags_t lookup, const char *path) {
    __wasi_filestat_t st;
    __wasi_errno_t e = __wasi_path_filestat_get(dir, lookup, path, &st);
    if (e != 0)
        printf("path_filestat_get %s (lookup %u) -> errno %d\n", path, (unsigned)lookup, (int)e);
    else if (st.filetype == __WASI_FILETYPE_DIRECTORY)
        printf("path_filestat_get %s (lookup %u) -> directory\n", path, (unsigned)lookup);
    else
        printf("path_filestat_get %s (lookup %u) -> type %u size %llu nlink %llu\n", path,
               (unsigned)lookup, (unsigned)st.filetype, (unsigned long long)st.size,
               (unsigned long long)st.nlink);
}

/* Output goes out line by line, inside the function that prints it. */
__attribute__((unused)) static void line_buffered(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
}

#endif
