/* Times and stat: the clocks (time, resolution, CPU clocks, bad ids), file times set explicitly
 * (compared with what was set) and to "now" (only whether they moved), through descriptors and
 * paths, on files, directories and symbolic links; stat fields that can be compared (types,
 * sizes, link counts, inode equality); libc's clock_gettime, utimensat, futimens, utimes, stat. */
#include "common.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define FOLLOW __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW
/* 2001-09-09 and 2004-11-09, with nanoseconds. */
#define ATIME 1000000000123456789ull
#define MTIME 1100000000987654321ull
#define SEC 1000000000ull

static NOINLINE void clocks(void) {
    __wasi_timestamp_t t = 0, t2 = 0, res = 0;
    __wasi_errno_t e = __wasi_clock_time_get(__WASI_CLOCKID_REALTIME, 1, &t);
    printf("clock_time_get realtime -> errno %d after 2020 %d\n", (int)e, t > 1577836800ull * SEC);
    e = __wasi_clock_time_get(__WASI_CLOCKID_REALTIME, 0, &t2);
    printf("clock_time_get realtime precision 0 -> errno %d not earlier %d\n", (int)e, t2 >= t);
    e = __wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1000, &t);
    printf("clock_time_get monotonic -> errno %d\n", (int)e);
    e = __wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1000, &t2);
    printf("clock_time_get monotonic again -> errno %d not earlier %d\n", (int)e, t2 >= t);
    SHOW("clock_time_get process cputime", __wasi_clock_time_get(__WASI_CLOCKID_PROCESS_CPUTIME_ID, 1, &t));
    SHOW("clock_time_get thread cputime", __wasi_clock_time_get(__WASI_CLOCKID_THREAD_CPUTIME_ID, 1, &t));
    e = __wasi_clock_res_get(__WASI_CLOCKID_REALTIME, &res);
    printf("clock_res_get realtime -> errno %d positive %d at most 1ms %d\n", (int)e, res > 0, res <= 1000000);
    e = __wasi_clock_res_get(__WASI_CLOCKID_MONOTONIC, &res);
    printf("clock_res_get monotonic -> errno %d positive %d at most 1ms %d\n", (int)e, res > 0, res <= 1000000);
    SHOW("clock_res_get process cputime", __wasi_clock_res_get(__WASI_CLOCKID_PROCESS_CPUTIME_ID, &res));
    SHOW("clock_res_get thread cputime", __wasi_clock_res_get(__WASI_CLOCKID_THREAD_CPUTIME_ID, &res));
    struct timespec ts;
    LIBC("clock_gettime realtime", clock_gettime(CLOCK_REALTIME, &ts));
    printf("  after 2020 %d\n", ts.tv_sec > 1577836800);
    LIBC("clock_gettime monotonic", clock_gettime(CLOCK_MONOTONIC, &ts));
    LIBC("clock_getres monotonic", clock_getres(CLOCK_MONOTONIC, &ts));
    printf("  positive %d\n", ts.tv_sec > 0 || ts.tv_nsec > 0);
    time_t now = time(NULL);
    printf("time() after 2020 %d\n", now > 1577836800);
    struct timeval tv;
    LIBC("gettimeofday", gettimeofday(&tv, NULL));
    printf("  after 2020 %d\n", tv.tv_sec > 1577836800);
}

static __wasi_timestamp_t now_ns(void) {
    __wasi_timestamp_t t = 0;
    (void)__wasi_clock_time_get(__WASI_CLOCKID_REALTIME, 1, &t);
    return t;
}

/* What a stat says about times: each compared with the values set explicitly, or with now. */
static void times_of(const char *label, __wasi_errno_t e, const __wasi_filestat_t *st, __wasi_timestamp_t before) {
    if (e != 0) {
        printf("%s -> errno %d\n", label, (int)e);
        return;
    }
    /* File systems stamp "now" from a coarse clock: allow a few seconds either way. */
    int a_now = st->atim + 5 * SEC >= before && st->atim <= now_ns() + 5 * SEC;
    int m_now = st->mtim + 5 * SEC >= before && st->mtim <= now_ns() + 5 * SEC;
    printf("%s: atime %s, mtime %s\n", label,
           st->atim == ATIME ? "as set" : st->atim == MTIME ? "the mtime set" : a_now ? "now" : "other",
           st->mtim == MTIME ? "as set" : st->mtim == ATIME ? "the atime set" : m_now ? "now" : "other");
}

static NOINLINE void by_descriptor(int dir) {
    SHOW("path_create_directory t", __wasi_path_create_directory(dir, "t"));
    int fd = open_at(dir, "t/a.txt", 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, RIGHTS_RW, 0);
    write_text(fd, "a.txt", "times\n");
    __wasi_filestat_t st;
    __wasi_timestamp_t before = now_ns();
    times_of("fresh file", __wasi_fd_filestat_get(fd, &st), &st, before);
    SHOW("fd_filestat_set_times explicit both",
         __wasi_fd_filestat_set_times(fd, ATIME, MTIME, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    times_of("fd_filestat_get", __wasi_fd_filestat_get(fd, &st), &st, before);
    times_of("path_filestat_get", __wasi_path_filestat_get(dir, 0, "t/a.txt", &st), &st, before);
    before = now_ns();
    SHOW("fd_filestat_set_times mtime now", __wasi_fd_filestat_set_times(fd, 0, 0, __WASI_FSTFLAGS_MTIM_NOW));
    times_of("after mtime now", __wasi_fd_filestat_get(fd, &st), &st, before);
    SHOW("fd_filestat_set_times mtime explicit only", __wasi_fd_filestat_set_times(fd, 0, MTIME, __WASI_FSTFLAGS_MTIM));
    times_of("after mtime explicit", __wasi_fd_filestat_get(fd, &st), &st, before);
    SHOW("fd_filestat_set_times atime now", __wasi_fd_filestat_set_times(fd, 0, 0, __WASI_FSTFLAGS_ATIM_NOW));
    times_of("after atime now", __wasi_fd_filestat_get(fd, &st), &st, before);
    SHOW("fd_filestat_set_times both now",
         __wasi_fd_filestat_set_times(fd, ATIME, MTIME, __WASI_FSTFLAGS_ATIM_NOW | __WASI_FSTFLAGS_MTIM_NOW));
    times_of("after both now", __wasi_fd_filestat_get(fd, &st), &st, before);
    SHOW("fd_filestat_set_times nothing", __wasi_fd_filestat_set_times(fd, 1, 1, 0));
    times_of("after nothing", __wasi_fd_filestat_get(fd, &st), &st, before);
    SHOW("fd_filestat_set_times atime and atime now",
         __wasi_fd_filestat_set_times(fd, ATIME, 0, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_ATIM_NOW));
    SHOW("fd_filestat_set_times mtime and mtime now",
         __wasi_fd_filestat_set_times(fd, 0, MTIME, __WASI_FSTFLAGS_MTIM | __WASI_FSTFLAGS_MTIM_NOW));
    SHOW("fd_filestat_set_times back to explicit",
         __wasi_fd_filestat_set_times(fd, ATIME, MTIME, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    /* Writing moves mtime; explicit times survive a close. */
    SHOW("fd_close", __wasi_fd_close(fd));
    times_of("after close", __wasi_path_filestat_get(dir, 0, "t/a.txt", &st), &st, before);
    fd = open_at(dir, "t/a.txt", 0, 0, RIGHTS_RW, __WASI_FDFLAGS_APPEND);
    before = now_ns();
    write_text(fd, "a.txt", "more\n");
    times_of("after a write", __wasi_fd_filestat_get(fd, &st), &st, before);
    SHOW("fd_filestat_set_size", __wasi_fd_filestat_set_size(fd, 3));
    SHOW("fd_filestat_set_times explicit again",
         __wasi_fd_filestat_set_times(fd, ATIME, MTIME, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    SHOW("fd_close", __wasi_fd_close(fd));
    /* Read-only descriptor, directory descriptor, stdout. */
    fd = open_at(dir, "t/a.txt", 0, 0, RIGHTS_RO, 0);
    SHOW("fd_filestat_set_times on a read-only descriptor",
         __wasi_fd_filestat_set_times(fd, ATIME, MTIME, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    SHOW("fd_close", __wasi_fd_close(fd));
    int sub = open_at(dir, "t", 0, __WASI_OFLAGS_DIRECTORY, RIGHTS_DIR, 0);
    SHOW("fd_filestat_set_times on a directory",
         __wasi_fd_filestat_set_times(sub, ATIME, MTIME, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    times_of("directory t", __wasi_fd_filestat_get(sub, &st), &st, before);
    SHOW("fd_close", __wasi_fd_close(sub));
    SHOW("fd_filestat_set_times on stdout", __wasi_fd_filestat_set_times(1, 0, 0, __WASI_FSTFLAGS_MTIM_NOW));
    SHOW("fd_filestat_set_times on fd 40", __wasi_fd_filestat_set_times(40, 0, 0, __WASI_FSTFLAGS_MTIM_NOW));
}

static NOINLINE void by_path(int dir) {
    int fd = open_at(dir, "t/b.txt", 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, RIGHTS_RW, 0);
    write_text(fd, "b.txt", "bee\n");
    SHOW("fd_close", __wasi_fd_close(fd));
    __wasi_filestat_t st;
    __wasi_timestamp_t before = now_ns();
    SHOW("path_filestat_set_times explicit",
         __wasi_path_filestat_set_times(dir, 0, "t/b.txt", ATIME, MTIME, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    times_of("b.txt", __wasi_path_filestat_get(dir, 0, "t/b.txt", &st), &st, before);
    SHOW("path_filestat_set_times now",
         __wasi_path_filestat_set_times(dir, 0, "t/b.txt", 0, 0, __WASI_FSTFLAGS_ATIM_NOW | __WASI_FSTFLAGS_MTIM_NOW));
    times_of("b.txt after now", __wasi_path_filestat_get(dir, 0, "t/b.txt", &st), &st, before);
    SHOW("path_filestat_set_times atime only",
         __wasi_path_filestat_set_times(dir, 0, "t/b.txt", ATIME, 0, __WASI_FSTFLAGS_ATIM));
    times_of("b.txt after atime", __wasi_path_filestat_get(dir, 0, "t/b.txt", &st), &st, before);
    SHOW("path_filestat_set_times both and now",
         __wasi_path_filestat_set_times(dir, 0, "t/b.txt", ATIME, MTIME, __WASI_FSTFLAGS_MTIM | __WASI_FSTFLAGS_MTIM_NOW));
    SHOW("path_filestat_set_times missing",
         __wasi_path_filestat_set_times(dir, 0, "t/none", ATIME, MTIME, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    SHOW("path_filestat_set_times file with a slash",
         __wasi_path_filestat_set_times(dir, 0, "t/b.txt/", ATIME, MTIME, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    SHOW("path_filestat_set_times directory with a slash",
         __wasi_path_filestat_set_times(dir, 0, "t/", ATIME, MTIME, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    times_of("directory t", __wasi_path_filestat_get(dir, 0, "t", &st), &st, before);
    SHOW("path_filestat_set_times out of the preopen",
         __wasi_path_filestat_set_times(dir, 0, "../x", ATIME, MTIME, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    SHOW("path_filestat_set_times relative to stdout",
         __wasi_path_filestat_set_times(1, 0, "t/b.txt", ATIME, MTIME, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    /* Symbolic links: the link itself, or what it points at. */
    SHOW("path_symlink b.txt -> t/blink", __wasi_path_symlink("b.txt", dir, "t/blink"));
    SHOW("path_filestat_set_times following the link",
         __wasi_path_filestat_set_times(dir, FOLLOW, "t/blink", ATIME, MTIME, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    times_of("b.txt through the link", __wasi_path_filestat_get(dir, 0, "t/b.txt", &st), &st, before);
    SHOW("path_filestat_set_times the link itself",
         __wasi_path_filestat_set_times(dir, 0, "t/blink", MTIME, ATIME, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    times_of("the link", __wasi_path_filestat_get(dir, 0, "t/blink", &st), &st, before);
    times_of("b.txt after setting the link", __wasi_path_filestat_get(dir, 0, "t/b.txt", &st), &st, before);
    /* Stat facts that do not change between runs. */
    __wasi_filestat_t a, b, l;
    (void)__wasi_path_filestat_get(dir, 0, "t/a.txt", &a);
    (void)__wasi_path_filestat_get(dir, FOLLOW, "t/blink", &l);
    (void)__wasi_path_filestat_get(dir, 0, "t/b.txt", &b);
    printf("a.txt: type %u size %llu nlink %llu; link followed is b.txt %d; a and b differ %d\n",
           (unsigned)a.filetype, (unsigned long long)a.size, (unsigned long long)a.nlink,
           l.ino == b.ino, a.ino != b.ino);
    fd = open_at(dir, "t/b.txt", 0, 0, RIGHTS_RO, 0);
    __wasi_filestat_t viafd;
    (void)__wasi_fd_filestat_get(fd, &viafd);
    printf("descriptor and path agree: inode %d times %d size %d\n", viafd.ino == b.ino,
           viafd.mtim == b.mtim && viafd.ctim == b.ctim, viafd.size == b.size);
    SHOW("fd_close", __wasi_fd_close(fd));
}

static NOINLINE void with_libc(void) {
    int fd = open("/data/t/c.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
    LIBC("write", write(fd, "sea\n", 4));
    struct timespec ts[2] = {{1000000000, 123456789}, {1100000000, 987654321}};
    LIBC("futimens explicit", futimens(fd, ts));
    struct stat st;
    LIBC("fstat", fstat(fd, &st));
    printf("  atime as set %d mtime as set %d\n",
           st.st_atim.tv_sec == 1000000000 && st.st_atim.tv_nsec == 123456789,
           st.st_mtim.tv_sec == 1100000000 && st.st_mtim.tv_nsec == 987654321);
    struct timespec omit_now[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
    LIBC("futimens omit/now", futimens(fd, omit_now));
    LIBC("fstat", fstat(fd, &st));
    printf("  atime as set %d mtime as set %d mtime after 2020 %d\n",
           st.st_atim.tv_sec == 1000000000 && st.st_atim.tv_nsec == 123456789,
           st.st_mtim.tv_sec == 1100000000, st.st_mtim.tv_sec > 1577836800);
    LIBC("close", close(fd));
    int d = open("/data/t", O_RDONLY | O_DIRECTORY);
    LIBC("utimensat explicit", utimensat(d, "c.txt", ts, 0));
    LIBC("fstatat", fstatat(d, "c.txt", &st, 0));
    printf("  mtime as set %d\n", st.st_mtim.tv_sec == 1100000000 && st.st_mtim.tv_nsec == 987654321);
    LIBC("utimensat nofollow on the link", utimensat(d, "blink", ts, AT_SYMLINK_NOFOLLOW));
    LIBC("utimensat missing", utimensat(d, "none", ts, 0));
    LIBC("utimensat NULL (now)", utimensat(d, "c.txt", NULL, 0));
    LIBC("stat", stat("/data/t/c.txt", &st));
    printf("  mtime after 2020 %d\n", st.st_mtim.tv_sec > 1577836800);
    struct timeval tv[2] = {{1000000000, 5}, {1100000000, 7}};
    LIBC("utimes", utimes("/data/t/c.txt", tv));
    LIBC("stat", stat("/data/t/c.txt", &st));
    printf("  mtime %lld.%09ld\n", (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    LIBC("close", close(d));
    LIBC("stat a directory", stat("/data/t", &st));
    printf("  directory %d\n", S_ISDIR(st.st_mode));
    LIBC("stat missing", stat("/data/t/none", &st));
    LIBC("lstat blink", lstat("/data/t/blink", &st));
    printf("  symlink %d size %lld\n", S_ISLNK(st.st_mode), (long long)st.st_size);
}

int main(void) {
    line_buffered();
    printf("c_times\n");
    int dir = data_dir();
    printf("data preopen found: %d\n", dir >= 0);
    clocks();
    by_descriptor(dir);
    by_path(dir);
    with_libc();
    printf("c_times done\n");
    return 0;
}
