/* wasi_unstable (preview 0), as old toolchains emit it: the calls whose layouts differ from
 * preview 1's (fd_seek's whence, the filestats with a 32-bit link count, poll_oneoff's
 * subscriptions with a clock identifier) and a few that are the same, imported by hand from the
 * "wasi_unstable" module beside wasi-libc's preview 1. poll_oneoff gets one subscription at a
 * time and also two, where wasmtime-wasi reads the second at preview 1's stride. */
#include "common.h"

#define U(name) __attribute__((import_module("wasi_unstable"), import_name(#name)))

typedef struct {
    uint64_t userdata;
    uint8_t tag;
    uint8_t pad[7];
    union {
        struct {
            uint64_t identifier;
            uint32_t clock_id;
            uint32_t pad;
            uint64_t timeout;
            uint64_t precision;
            uint16_t flags;
        } clock;
        struct {
            uint32_t fd;
        } fd;
    } u;
} sub0;
_Static_assert(sizeof(sub0) == 56, "wasi_unstable's subscription is 56 bytes");

uint16_t u_fd_seek(uint32_t fd, int64_t offset, uint8_t whence, uint64_t *out) U(fd_seek);
uint16_t u_fd_filestat_get(uint32_t fd, uint8_t *buf) U(fd_filestat_get);
uint16_t u_path_filestat_get(uint32_t fd, uint32_t flags, const char *path, size_t len, uint8_t *buf)
    U(path_filestat_get);
uint16_t u_poll_oneoff(const sub0 *in, __wasi_event_t *out, size_t n, size_t *nevents) U(poll_oneoff);
uint16_t u_fd_write(uint32_t fd, const __wasi_ciovec_t *iovs, size_t n, size_t *written) U(fd_write);
uint16_t u_clock_time_get(uint32_t id, uint64_t precision, uint64_t *t) U(clock_time_get);

static NOINLINE void seek_and_stat(int dir) {
    __wasi_fd_t fd;
    SHOW("path_open unstable.txt", __wasi_path_open(dir, 0, "unstable.txt", __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC,
                                                    RIGHTS_RW, RIGHTS_RW, 0, &fd));
    const char text[] = "wasi_unstable writes this\n";
    __wasi_ciovec_t iov = {(const uint8_t *)text, sizeof text - 1};
    size_t written = 0;
    SHOW("unstable fd_write", u_fd_write(fd, &iov, 1, &written));
    printf("  wrote %zu\n", written);
    uint64_t pos = 99;
    /* Preview 0's whence: 0 current, 1 end, 2 set. */
    SHOW("unstable fd_seek set 4", u_fd_seek(fd, 4, 2, &pos));
    printf("  at %llu\n", (unsigned long long)pos);
    SHOW("unstable fd_seek current +3", u_fd_seek(fd, 3, 0, &pos));
    printf("  at %llu\n", (unsigned long long)pos);
    SHOW("unstable fd_seek end -1", u_fd_seek(fd, -1, 1, &pos));
    printf("  at %llu\n", (unsigned long long)pos);
    SHOW("unstable fd_seek before the start", u_fd_seek(fd, -100, 2, &pos));
    uint8_t st[64];
    memset(st, 0xee, sizeof st);
    SHOW("unstable fd_filestat_get", u_fd_filestat_get(fd, st));
    uint32_t nlink;
    uint64_t size;
    memcpy(&nlink, st + 20, 4);
    memcpy(&size, st + 24, 8);
    /* 56 bytes: the filetype at 16, a 32-bit link count at 20, the size at 24; past 56 untouched. */
    printf("  filetype %d nlink %u size %llu byte 56 untouched %d\n", st[16], nlink, (unsigned long long)size, st[56] == 0xee);
    memset(st, 0xee, sizeof st);
    SHOW("unstable path_filestat_get", u_path_filestat_get(dir, 1, "unstable.txt", 12, st));
    memcpy(&size, st + 24, 8);
    printf("  filetype %d size %llu\n", st[16], (unsigned long long)size);
    SHOW("unstable path_filestat_get missing", u_path_filestat_get(dir, 1, "nope", 4, st));
    SHOW("fd_close", __wasi_fd_close(fd));
}

static void show(const char *label, uint16_t e, size_t n, const __wasi_event_t *ev) {
    printf("%s -> errno %d events %zu\n", label, (int)e, n);
    for (size_t k = 0; k < n && k < 4; k++)
        printf("  event userdata %llu error %d type %d\n", (unsigned long long)ev[k].userdata, (int)ev[k].error,
               (int)ev[k].type);
}

static NOINLINE void polls(int dir) {
    sub0 s[2];
    __wasi_event_t ev[4];
    size_t n = 0;
    memset(s, 0, sizeof s);
    s[0].userdata = 41;
    s[0].tag = __WASI_EVENTTYPE_CLOCK;
    s[0].u.clock.identifier = 7;
    s[0].u.clock.clock_id = __WASI_CLOCKID_MONOTONIC;
    s[0].u.clock.timeout = 3000000;
    s[0].u.clock.precision = 1000;
    uint64_t t0 = 0, t1 = 0;
    u_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &t0);
    uint16_t e = u_poll_oneoff(s, ev, 1, &n);
    u_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &t1);
    show("unstable poll_oneoff monotonic +3ms", e, n, ev);
    printf("  waited at least 3 ms %d; subscription put back %d\n", t1 - t0 >= 3000000,
           s[0].u.clock.identifier == 7 && s[0].u.clock.timeout == 3000000);
    /* A file is ready for writing at once. */
    __wasi_fd_t fd;
    SHOW("path_open unstable.txt again", __wasi_path_open(dir, 0, "unstable.txt", 0, RIGHTS_RW, RIGHTS_RW, 0, &fd));
    memset(s, 0, sizeof s);
    s[0].userdata = 5;
    s[0].tag = __WASI_EVENTTYPE_FD_WRITE;
    s[0].u.fd.fd = fd;
    e = u_poll_oneoff(s, ev, 1, &n);
    show("unstable poll_oneoff file writable", e, n, ev);
    s[0].tag = __WASI_EVENTTYPE_FD_READ;
    e = u_poll_oneoff(s, ev, 1, &n);
    show("unstable poll_oneoff file readable", e, n, ev);
    /* Two: a writable file and a clock far away. wasmtime-wasi reads the second at preview 1's
     * stride, so what it sees there is made of the first's tail and the second's head. */
    memset(s, 0, sizeof s);
    s[0].userdata = 1;
    s[0].tag = __WASI_EVENTTYPE_FD_WRITE;
    s[0].u.fd.fd = fd;
    s[1].userdata = 2;
    s[1].tag = __WASI_EVENTTYPE_CLOCK;
    s[1].u.clock.clock_id = __WASI_CLOCKID_MONOTONIC;
    s[1].u.clock.timeout = 1000000;
    e = u_poll_oneoff(s, ev, 2, &n);
    show("unstable poll_oneoff two subscriptions", e, n, ev);
    printf("  put back %d\n", s[1].userdata == 2 && s[1].tag == __WASI_EVENTTYPE_CLOCK && s[0].u.fd.fd == (uint32_t)fd);
    SHOW("unstable poll_oneoff none", u_poll_oneoff(s, ev, 0, &n));
    s[0].tag = 9;
    SHOW("unstable poll_oneoff bad tag", u_poll_oneoff(s, ev, 1, &n));
    SHOW("fd_close", __wasi_fd_close(fd));
}

int main(void) {
    int dir = data_dir();
    if (dir < 0) {
        printf("no /data\n");
        return 1;
    }
    seek_and_stat(dir);
    polls(dir);
    printf("c_unstable done\n");
    return 0;
}
