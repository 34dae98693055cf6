/* Files and descriptors: preopens, stdio, open/read/write/seek/tell, positional I/O, sizes,
 * advice, allocation, syncs, flags (O_APPEND set later), rights, renumbering (onto an open
 * descriptor, onto stderr), descriptors crossing function boundaries, directory listings; raw
 * WASI calls and the libc wrappers over them. */
#include "common.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wasi/libc.h>

static NOINLINE void prestats(void) {
    for (int fd = 0; fd <= 5; fd++) {
        __wasi_prestat_t ps;
        memset(&ps, 0, sizeof ps);
        __wasi_errno_t e = __wasi_fd_prestat_get(fd, &ps);
        printf("fd_prestat_get %d -> errno %d", fd, (int)e);
        if (e == 0)
            printf(" tag %u name_len %u", (unsigned)ps.tag, (unsigned)ps.u.dir.pr_name_len);
        printf("\n");
    }
    int dir = data_dir();
    char name[16];
    memset(name, '#', sizeof name);
    SHOW("fd_prestat_dir_name exact", __wasi_fd_prestat_dir_name(dir, (uint8_t *)name, 5));
    print_bytes("  name", name, 6);
    SHOW("fd_prestat_dir_name short buffer", __wasi_fd_prestat_dir_name(dir, (uint8_t *)name, 2));
    SHOW("fd_prestat_dir_name of stdout", __wasi_fd_prestat_dir_name(1, (uint8_t *)name, 8));
    SHOW("fd_prestat_dir_name of fd 40", __wasi_fd_prestat_dir_name(40, (uint8_t *)name, 8));
    SHOW("fd_prestat_get of fd 40", __wasi_fd_prestat_get(40, &(__wasi_prestat_t){0}));
}

static NOINLINE void fdstat(const char *label, int fd) {
    __wasi_fdstat_t st;
    __wasi_errno_t e = __wasi_fd_fdstat_get(fd, &st);
    printf("fd_fdstat_get %s -> errno %d", label, (int)e);
    if (e == 0)
        printf(" type %u flags %u base %#llx inheriting %#llx", (unsigned)st.fs_filetype,
               (unsigned)st.fs_flags, (unsigned long long)st.fs_rights_base,
               (unsigned long long)st.fs_rights_inheriting);
    printf("\n");
}

static NOINLINE void stdio(void) {
    fdstat("stdin", 0);
    fdstat("stdout", 1);
    fdstat("stderr", 2);
    fdstat("data", data_dir());
    fdstat("fd 40", 40);
    __wasi_filestat_t st;
    __wasi_errno_t e = __wasi_fd_filestat_get(1, &st);
    printf("fd_filestat_get stdout -> errno %d type %u size %llu nlink %llu times zero %d\n",
           (int)e, (unsigned)st.filetype, (unsigned long long)st.size,
           (unsigned long long)st.nlink, st.atim == 0 && st.mtim == 0 && st.ctim == 0);
    __wasi_filesize_t pos = 0;
    SHOW("fd_seek stdout", __wasi_fd_seek(1, 0, __WASI_WHENCE_CUR, &pos));
    SHOW("fd_tell stdout", __wasi_fd_tell(1, &pos));
    SHOW("fd_sync stdout", __wasi_fd_sync(1));
    SHOW("fd_datasync stdout", __wasi_fd_datasync(1));
    SHOW("fd_advise stdout", __wasi_fd_advise(1, 0, 0, __WASI_ADVICE_NORMAL));
    SHOW("fd_allocate stdout", __wasi_fd_allocate(1, 0, 1));
    SHOW("fd_filestat_set_size stdout", __wasi_fd_filestat_set_size(1, 0));
    char c;
    __wasi_iovec_t iov = {(uint8_t *)&c, 1};
    __wasi_size_t n = 99;
    e = __wasi_fd_read(0, &iov, 1, &n);
    printf("fd_read stdin (empty) -> errno %d n %u\n", (int)e, (unsigned)n);
    SHOW("fd_pread stdin", __wasi_fd_pread(0, &iov, 1, 0, &n));
    __wasi_ciovec_t out = {(const uint8_t *)"x", 1};
    SHOW("fd_write stdin", __wasi_fd_write(0, &out, 1, &n));
    SHOW("fd_pwrite stdout", __wasi_fd_pwrite(1, &out, 1, 0, &n));
    SHOW("fd_read stdout", __wasi_fd_read(1, &iov, 1, &n));
}

static NOINLINE void read_write_seek(int dir) {
    SHOW("path_create_directory files", __wasi_path_create_directory(dir, "files"));
    int fd = open_at(dir, "files/a.txt", 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, RIGHTS_RW, 0);
    printf("a.txt fd %d\n", fd);
    /* Two buffers: preview 1 may write fewer bytes than asked (wasmtime writes the first). */
    __wasi_ciovec_t two[2] = {{(const uint8_t *)"hello ", 6}, {(const uint8_t *)"world\n", 6}};
    __wasi_size_t n = 0;
    __wasi_errno_t e = __wasi_fd_write(fd, two, 2, &n);
    printf("fd_write two buffers -> errno %d n %u\n", (int)e, (unsigned)n);
    __wasi_ciovec_t rest[2] = {{(const uint8_t *)"", 0}, {(const uint8_t *)"world\n" + 0, 6}};
    e = __wasi_fd_write(fd, rest, 2, &n);
    printf("fd_write empty then full -> errno %d n %u\n", (int)e, (unsigned)n);
    __wasi_filesize_t pos = 1234;
    SHOW("fd_tell", __wasi_fd_tell(fd, &pos));
    printf("  position %llu\n", (unsigned long long)pos);
    SHOW("fd_seek set 0", __wasi_fd_seek(fd, 0, __WASI_WHENCE_SET, &pos));
    char a[4], b[16];
    __wasi_iovec_t in[2] = {{(uint8_t *)a, sizeof a}, {(uint8_t *)b, sizeof b}};
    e = __wasi_fd_read(fd, in, 2, &n);
    printf("fd_read two buffers -> errno %d n %u\n", (int)e, (unsigned)n);
    print_bytes("  first buffer", a, n < sizeof a ? n : sizeof a);
    SHOW("fd_seek cur +2", __wasi_fd_seek(fd, 2, __WASI_WHENCE_CUR, &pos));
    printf("  position %llu\n", (unsigned long long)pos);
    SHOW("fd_seek cur -100", __wasi_fd_seek(fd, -100, __WASI_WHENCE_CUR, &pos));
    SHOW("fd_seek end -3", __wasi_fd_seek(fd, -3, __WASI_WHENCE_END, &pos));
    printf("  position %llu\n", (unsigned long long)pos);
    SHOW("fd_seek set -1", __wasi_fd_seek(fd, -1, __WASI_WHENCE_SET, &pos));
    SHOW("fd_seek end +8 (past the end)", __wasi_fd_seek(fd, 8, __WASI_WHENCE_END, &pos));
    printf("  position %llu\n", (unsigned long long)pos);
    e = __wasi_fd_read(fd, in, 1, &n);
    printf("fd_read past the end -> errno %d n %u\n", (int)e, (unsigned)n);
    __wasi_ciovec_t z = {(const uint8_t *)"Z", 1};
    e = __wasi_fd_write(fd, &z, 1, &n);
    printf("fd_write past the end -> errno %d n %u\n", (int)e, (unsigned)n);
    __wasi_ciovec_t p = {(const uint8_t *)"PW", 2};
    e = __wasi_fd_pwrite(fd, &p, 1, 1, &n);
    printf("fd_pwrite at 1 -> errno %d n %u\n", (int)e, (unsigned)n);
    e = __wasi_fd_pwrite(fd, &p, 1, 40, &n);
    printf("fd_pwrite at 40 -> errno %d n %u\n", (int)e, (unsigned)n);
    SHOW("fd_tell after pwrite", __wasi_fd_tell(fd, &pos));
    printf("  position %llu\n", (unsigned long long)pos);
    char all[64];
    __wasi_iovec_t whole = {(uint8_t *)all, sizeof all};
    e = __wasi_fd_pread(fd, &whole, 1, 0, &n);
    printf("fd_pread at 0 -> errno %d\n", (int)e);
    print_bytes("  contents", all, n);
    e = __wasi_fd_pread(fd, &whole, 1, 1000, &n);
    printf("fd_pread at 1000 -> errno %d n %u\n", (int)e, (unsigned)n);
    __wasi_filestat_t st;
    SHOW("fd_filestat_get", __wasi_fd_filestat_get(fd, &st));
    printf("  type %u size %llu nlink %llu\n", (unsigned)st.filetype, (unsigned long long)st.size,
           (unsigned long long)st.nlink);
    SHOW("fd_filestat_set_size 4", __wasi_fd_filestat_set_size(fd, 4));
    SHOW("fd_filestat_set_size 9", __wasi_fd_filestat_set_size(fd, 9));
    SHOW("fd_tell after resizing", __wasi_fd_tell(fd, &pos));
    printf("  position %llu\n", (unsigned long long)pos);
    e = __wasi_fd_pread(fd, &whole, 1, 0, &n);
    print_bytes("  resized", all, e == 0 ? n : 0);
    SHOW("fd_advise normal", __wasi_fd_advise(fd, 0, 0, __WASI_ADVICE_NORMAL));
    SHOW("fd_advise sequential", __wasi_fd_advise(fd, 0, 100, __WASI_ADVICE_SEQUENTIAL));
    SHOW("fd_advise dontneed", __wasi_fd_advise(fd, 2, 2, __WASI_ADVICE_DONTNEED));
    SHOW("fd_advise noreuse", __wasi_fd_advise(fd, 0, 1, __WASI_ADVICE_NOREUSE));
    SHOW("fd_allocate 0+100", __wasi_fd_allocate(fd, 0, 100));
    SHOW("fd_allocate 0+0", __wasi_fd_allocate(fd, 0, 0));
    SHOW("fd_datasync", __wasi_fd_datasync(fd));
    SHOW("fd_sync", __wasi_fd_sync(fd));
    SHOW("fd_filestat_get after allocate", __wasi_fd_filestat_get(fd, &st));
    printf("  size %llu\n", (unsigned long long)st.size);
    SHOW("fd_close", __wasi_fd_close(fd));
    SHOW("fd_close again", __wasi_fd_close(fd));
    SHOW("fd_read closed", __wasi_fd_read(fd, &whole, 1, &n));
    SHOW("fd_seek closed", __wasi_fd_seek(fd, 0, __WASI_WHENCE_SET, &pos));
    SHOW("fd_advise closed", __wasi_fd_advise(fd, 0, 0, __WASI_ADVICE_NORMAL));
    SHOW("fd_allocate closed", __wasi_fd_allocate(fd, 0, 1));
    SHOW("fd_sync closed", __wasi_fd_sync(fd));
    SHOW("fd_datasync closed", __wasi_fd_datasync(fd));
    SHOW("fd_filestat_set_size closed", __wasi_fd_filestat_set_size(fd, 1));
    SHOW("fd_fdstat_set_flags closed", __wasi_fd_fdstat_set_flags(fd, 0));
    SHOW("fd_fdstat_set_rights closed", __wasi_fd_fdstat_set_rights(fd, 0, 0));
}

static NOINLINE void read_only(int dir) {
    int fd = open_at(dir, "input.txt", 0, 0, RIGHTS_RO, 0);
    fdstat("read-only input.txt", fd);
    __wasi_size_t n = 0;
    __wasi_ciovec_t x = {(const uint8_t *)"x", 1};
    SHOW("fd_write on read-only", __wasi_fd_write(fd, &x, 1, &n));
    SHOW("fd_pwrite on read-only", __wasi_fd_pwrite(fd, &x, 1, 0, &n));
    SHOW("fd_filestat_set_size on read-only", __wasi_fd_filestat_set_size(fd, 0));
    SHOW("fd_allocate on read-only", __wasi_fd_allocate(fd, 0, 1));
    SHOW("fd_datasync on read-only", __wasi_fd_datasync(fd));
    SHOW("fd_sync on read-only", __wasi_fd_sync(fd));
    char buf[8];
    __wasi_iovec_t iov = {(uint8_t *)buf, sizeof buf};
    __wasi_errno_t e = __wasi_fd_read(fd, &iov, 1, &n);
    printf("fd_read read-only -> errno %d\n", (int)e);
    print_bytes("  read", buf, e == 0 ? n : 0);
    SHOW("fd_close", __wasi_fd_close(fd));
    /* Write-only: reading fails. */
    fd = open_at(dir, "files/wo.txt", 0, __WASI_OFLAGS_CREAT, __WASI_RIGHTS_FD_WRITE, 0);
    fdstat("write-only wo.txt", fd);
    write_text(fd, "write-only", "written\n");
    SHOW("fd_read on write-only", __wasi_fd_read(fd, &iov, 1, &n));
    SHOW("fd_pread on write-only", __wasi_fd_pread(fd, &iov, 1, 0, &n));
    SHOW("fd_close", __wasi_fd_close(fd));
    /* A directory descriptor is not a file, and cannot be opened for writing. */
    int sub = open_at(dir, "files", 0, __WASI_OFLAGS_DIRECTORY, RIGHTS_ALL, 0);
    printf("directory opened with the right to write: %d\n", sub >= 0);
    if (sub >= 0)
        (void)__wasi_fd_close(sub);
    sub = open_at(dir, "files", 0, __WASI_OFLAGS_DIRECTORY, RIGHTS_DIR, 0);
    fdstat("directory files", sub);
    SHOW("fd_read on a directory", __wasi_fd_read(sub, &iov, 1, &n));
    SHOW("fd_write on a directory", __wasi_fd_write(sub, &x, 1, &n));
    __wasi_filesize_t pos;
    SHOW("fd_seek on a directory", __wasi_fd_seek(sub, 0, __WASI_WHENCE_SET, &pos));
    SHOW("fd_tell on a directory", __wasi_fd_tell(sub, &pos));
    SHOW("fd_allocate on a directory", __wasi_fd_allocate(sub, 0, 1));
    SHOW("fd_advise on a directory", __wasi_fd_advise(sub, 0, 0, 0));
    SHOW("fd_filestat_set_size on a directory", __wasi_fd_filestat_set_size(sub, 0));
    SHOW("fd_sync on a directory", __wasi_fd_sync(sub));
    SHOW("fd_datasync on a directory", __wasi_fd_datasync(sub));
    SHOW("fd_fdstat_set_flags on a directory", __wasi_fd_fdstat_set_flags(sub, __WASI_FDFLAGS_APPEND));
    __wasi_filestat_t st;
    __wasi_errno_t se = __wasi_fd_filestat_get(sub, &st);
    printf("fd_filestat_get on a directory -> errno %d type %u\n", (int)se, (unsigned)st.filetype);
    SHOW("fd_close directory", __wasi_fd_close(sub));
}

static NOINLINE void append_later(int dir) {
    int fd = open_at(dir, "files/log.txt", 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, RIGHTS_RW, 0);
    write_text(fd, "log", "one\n");
    __wasi_filesize_t pos;
    SHOW("fd_seek set 0", __wasi_fd_seek(fd, 0, __WASI_WHENCE_SET, &pos));
    SHOW("fd_fdstat_set_flags append", __wasi_fd_fdstat_set_flags(fd, __WASI_FDFLAGS_APPEND));
    fdstat("log.txt with append", fd);
    write_text(fd, "log appended", "two\n");
    SHOW("fd_tell after the append", __wasi_fd_tell(fd, &pos));
    printf("  position %llu\n", (unsigned long long)pos);
    __wasi_ciovec_t p = {(const uint8_t *)"P", 1};
    __wasi_size_t n;
    __wasi_errno_t e = __wasi_fd_pwrite(fd, &p, 1, 0, &n);
    printf("fd_pwrite at 0 with append -> errno %d n %u\n", (int)e, e == 0 ? (unsigned)n : 0u);
    SHOW("fd_seek set 0", __wasi_fd_seek(fd, 0, __WASI_WHENCE_SET, &pos));
    SHOW("fd_fdstat_set_flags none", __wasi_fd_fdstat_set_flags(fd, 0));
    write_text(fd, "log at 0", "ON");
    SHOW("fd_fdstat_set_flags nonblock", __wasi_fd_fdstat_set_flags(fd, __WASI_FDFLAGS_NONBLOCK));
    fdstat("log.txt nonblocking", fd);
    SHOW("fd_fdstat_set_flags dsync", __wasi_fd_fdstat_set_flags(fd, __WASI_FDFLAGS_DSYNC));
    SHOW("fd_fdstat_set_flags sync", __wasi_fd_fdstat_set_flags(fd, __WASI_FDFLAGS_SYNC));
    SHOW("fd_fdstat_set_flags append on stdout", __wasi_fd_fdstat_set_flags(1, __WASI_FDFLAGS_APPEND));
    SHOW("fd_close", __wasi_fd_close(fd));
    show_file(dir, "files/log.txt");
    /* Opened with append from the start. */
    fd = open_at(dir, "files/log.txt", 0, 0, RIGHTS_RW, __WASI_FDFLAGS_APPEND);
    fdstat("log.txt opened for append", fd);
    write_text(fd, "log reopened", "three\n");
    SHOW("fd_close", __wasi_fd_close(fd));
    show_file(dir, "files/log.txt");
    /* The fixture's log through libc: fcntl(F_SETFL, O_APPEND). */
    int lfd = open("/data/log.txt", O_RDWR);
    printf("open log.txt -> %s\n", lfd >= 0 ? "ok" : "failed");
    LIBC("fcntl F_GETFL (access mode)", fcntl(lfd, F_GETFL) & O_ACCMODE);
    LIBC("fcntl F_SETFL O_APPEND", fcntl(lfd, F_SETFL, O_APPEND));
    LIBC("fcntl F_GETFL has O_APPEND", (fcntl(lfd, F_GETFL) & O_APPEND) != 0);
    LIBC("write", write(lfd, "c-files\n", 8));
    LIBC("close", close(lfd));
}

static NOINLINE void rights(int dir) {
    int fd = open_at(dir, "files/rights.txt", 0, __WASI_OFLAGS_CREAT, RIGHTS_RW, 0);
    fdstat("rights.txt", fd);
    SHOW("fd_fdstat_set_rights narrow to read",
         __wasi_fd_fdstat_set_rights(fd, __WASI_RIGHTS_FD_READ, 0));
    fdstat("rights.txt after narrowing", fd);
    write_text(fd, "after narrowing", "still?\n");
    SHOW("fd_fdstat_set_rights widen to all", __wasi_fd_fdstat_set_rights(fd, RIGHTS_ALL, RIGHTS_ALL));
    SHOW("fd_fdstat_set_rights of stdout", __wasi_fd_fdstat_set_rights(1, __WASI_RIGHTS_FD_WRITE, 0));
    SHOW("fd_fdstat_set_rights of the preopen", __wasi_fd_fdstat_set_rights(dir, 0, 0));
    SHOW("fd_close", __wasi_fd_close(fd));
    /* Open asking for rights the file has no use for. */
    fd = open_at(dir, "files/rights.txt", 0, 0, __WASI_RIGHTS_FD_READ | __WASI_RIGHTS_PATH_OPEN, 0);
    fdstat("rights.txt read + path_open", fd);
    SHOW("fd_close", __wasi_fd_close(fd));
    show_file(dir, "files/rights.txt");
}

static NOINLINE void renumber(int dir) {
    int a = open_at(dir, "files/r1.txt", 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, RIGHTS_RW, 0);
    write_text(a, "r1", "first file\n");
    int b = open_at(dir, "files/r2.txt", 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, RIGHTS_RW, 0);
    write_text(b, "r2", "second file\n");
    printf("descriptors %d %d\n", a, b);
    SHOW("fd_renumber a onto b (open)", __wasi_fd_renumber(a, b));
    SHOW("fd_close a (moved away)", __wasi_fd_close(a));
    __wasi_filesize_t pos;
    SHOW("fd_tell b (a's position)", __wasi_fd_tell(b, &pos));
    printf("  position %llu\n", (unsigned long long)pos);
    write_text(b, "b now writes to r1", "more\n");
    SHOW("fd_renumber b onto itself", __wasi_fd_renumber(b, b));
    SHOW("fd_renumber b onto fd 77 (not open)", __wasi_fd_renumber(b, 77));
    SHOW("fd_renumber fd 77 onto b", __wasi_fd_renumber(77, b));
    SHOW("fd_close b", __wasi_fd_close(b));
    show_file(dir, "files/r1.txt");
    show_file(dir, "files/r2.txt");
    /* Which numbers come back. */
    int c = open_at(dir, "files/r1.txt", 0, 0, RIGHTS_RO, 0);
    int d = open_at(dir, "files/r2.txt", 0, 0, RIGHTS_RO, 0);
    int e = open_at(dir, "input.txt", 0, 0, RIGHTS_RO, 0);
    printf("reopened as %d %d %d\n", c, d, e);
    SHOW("fd_close", __wasi_fd_close(d));
    SHOW("fd_close", __wasi_fd_close(c));
    int f = open_at(dir, "files/r2.txt", 0, 0, RIGHTS_RO, 0);
    printf("after closing two, the next is %d\n", f);
    SHOW("fd_close", __wasi_fd_close(f));
    SHOW("fd_close", __wasi_fd_close(e));
    /* libc's renumber. */
    int g = open("/data/files/r1.txt", O_RDONLY);
    int h = open("/data/files/r2.txt", O_RDONLY);
    LIBC("__wasilibc_fd_renumber", __wasilibc_fd_renumber(g, h));
    char buf[6];
    LIBC("read after renumber", read(h, buf, 5));
    print_bytes("  read", buf, 5);
    LIBC("close moved-away", close(g));
    LIBC("close", close(h));
}

/* Opened by the caller, used and closed here. */
static NOINLINE void consume(int fd) {
    char buf[32];
    __wasi_iovec_t iov = {(uint8_t *)buf, 10};
    __wasi_size_t n = 0;
    __wasi_errno_t e = __wasi_fd_read(fd, &iov, 1, &n);
    printf("consume: fd_read -> errno %d\n", (int)e);
    print_bytes("  consumed", buf, e == 0 ? n : 0);
    SHOW("consume: fd_close", __wasi_fd_close(fd));
}

/* Opened here and left open for the caller, three bytes in. */
static NOINLINE int open_and_keep(int dir) {
    int fd = open_at(dir, "input.txt", 0, 0, RIGHTS_RO, 0);
    char buf[3];
    __wasi_iovec_t iov = {(uint8_t *)buf, 3};
    __wasi_size_t n = 0;
    __wasi_errno_t e = __wasi_fd_read(fd, &iov, 1, &n);
    printf("open_and_keep: fd_read -> errno %d\n", (int)e);
    print_bytes("  kept after", buf, e == 0 ? n : 0);
    return fd;
}

/* Writes through the caller's descriptor and leaves it open. */
static NOINLINE void write_through(int fd) {
    write_text(fd, "write_through", "from the callee\n");
    __wasi_filesize_t pos;
    SHOW("write_through: fd_seek cur 0", __wasi_fd_seek(fd, 0, __WASI_WHENCE_CUR, &pos));
    printf("  position %llu\n", (unsigned long long)pos);
}

static NOINLINE void across_functions(int dir) {
    int fd = open_at(dir, "input.txt", 0, 0, RIGHTS_RO, 0);
    consume(fd);
    SHOW("caller: fd_close after consume", __wasi_fd_close(fd));
    int kept = open_and_keep(dir);
    printf("caller got descriptor %d\n", kept);
    char buf[16];
    __wasi_iovec_t iov = {(uint8_t *)buf, 8};
    __wasi_size_t n = 0;
    __wasi_errno_t e = __wasi_fd_read(kept, &iov, 1, &n);
    printf("caller: fd_read kept -> errno %d\n", (int)e);
    print_bytes("  read", buf, e == 0 ? n : 0);
    __wasi_filesize_t pos = 0;
    SHOW("caller: fd_tell kept", __wasi_fd_tell(kept, &pos));
    printf("  position %llu\n", (unsigned long long)pos);
    SHOW("caller: fd_seek kept end -5", __wasi_fd_seek(kept, -5, __WASI_WHENCE_END, &pos));
    e = __wasi_fd_read(kept, &iov, 1, &n);
    print_bytes("  tail", buf, e == 0 ? n : 0);
    SHOW("caller: fd_close kept", __wasi_fd_close(kept));
    int w = open_at(dir, "files/through.txt", 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, RIGHTS_RW, 0);
    write_text(w, "caller", "from the caller\n");
    write_through(w);
    write_text(w, "caller again", "caller again\n");
    SHOW("caller: fd_close", __wasi_fd_close(w));
    show_file(dir, "files/through.txt");
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* fd_readdir from cookie 0 with a buffer of `size`, resumed from the last whole entry; prints the
 * entries sorted by name. */
static NOINLINE void list(int fd, const char *label, size_t size) {
    static uint8_t buf[4096];
    static char names[64][64];
    static unsigned types[64];
    static uint64_t nexts[64];
    int count = 0, calls = 0;
    __wasi_dircookie_t cookie = 0;
    int sequential = 1;
    for (;;) {
        __wasi_size_t used = 0;
        __wasi_errno_t e = __wasi_fd_readdir(fd, buf, size, cookie, &used);
        calls++;
        if (e != 0) {
            printf("fd_readdir %s -> errno %d\n", label, (int)e);
            return;
        }
        size_t at = 0;
        int whole = 0;
        while (at + sizeof(__wasi_dirent_t) <= used) {
            __wasi_dirent_t d;
            memcpy(&d, buf + at, sizeof d);
            if (at + sizeof d + d.d_namlen > used)
                break;
            if (count < 64 && d.d_namlen < 64) {
                memcpy(names[count], buf + at + sizeof d, d.d_namlen);
                names[count][d.d_namlen] = 0;
                types[count] = d.d_type;
                nexts[count] = d.d_next;
                if (d.d_next != (uint64_t)count + 1)
                    sequential = 0;
                count++;
            }
            cookie = d.d_next;
            at += sizeof d + d.d_namlen;
            whole++;
        }
        if (used < size || whole == 0 || calls > 200)
            break;
    }
    (void)nexts;
    char *sorted[64];
    for (int i = 0; i < count; i++)
        sorted[i] = names[i];
    qsort(sorted, count, sizeof sorted[0], by_name);
    printf("fd_readdir %s (buffer %zu): %d entries, cookies 1..n in order %d\n", label, size, count, sequential);
    for (int i = 0; i < count; i++)
        printf("  %s type %u\n", sorted[i], types[(sorted[i] - names[0]) / 64]);
}

static NOINLINE void listings(int dir) {
    list(dir, "data", 4096);
    list(dir, "data", 40);
    int sub = open_at(dir, "files", 0, __WASI_OFLAGS_DIRECTORY, RIGHTS_DIR, 0);
    list(sub, "files", 4096);
    /* Past the end, and a buffer too small for one entry. */
    uint8_t small[8];
    __wasi_size_t used = 0;
    __wasi_errno_t e = __wasi_fd_readdir(sub, small, sizeof small, 1000, &used);
    printf("fd_readdir cookie 1000 -> errno %d used %u\n", (int)e, (unsigned)used);
    e = __wasi_fd_readdir(sub, small, sizeof small, 0, &used);
    printf("fd_readdir 8-byte buffer -> errno %d used %u\n", (int)e, (unsigned)used);
    SHOW("fd_close", __wasi_fd_close(sub));
    int file = open_at(dir, "input.txt", 0, 0, RIGHTS_RO | __WASI_RIGHTS_FD_READDIR, 0);
    SHOW("fd_readdir on a file", __wasi_fd_readdir(file, small, sizeof small, 0, &used));
    SHOW("fd_close", __wasi_fd_close(file));
    SHOW("fd_readdir on stdout", __wasi_fd_readdir(1, small, sizeof small, 0, &used));
    /* libc: opendir/readdir. */
    DIR *d = opendir("/data/files");
    printf("opendir -> %s\n", d ? "ok" : "failed");
    char *seen[64];
    int n = 0;
    struct dirent *ent;
    while (d && (ent = readdir(d)) != NULL && n < 64)
        seen[n++] = strdup(ent->d_name);
    qsort(seen, n, sizeof seen[0], by_name);
    for (int i = 0; i < n; i++) {
        printf("  readdir %s\n", seen[i]);
        free(seen[i]);
    }
    if (d)
        closedir(d);
}

static NOINLINE void libc_files(void) {
    int fd = open("/data/files/libc.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
    printf("open libc.txt -> %s\n", fd >= 0 ? "ok" : "failed");
    LIBC("write", write(fd, "0123456789", 10));
    LIBC("lseek set 2", lseek(fd, 2, SEEK_SET));
    char buf[16];
    LIBC("read 3", read(fd, buf, 3));
    print_bytes("  read", buf, 3);
    LIBC("pwrite at 8", pwrite(fd, "ab", 2, 8));
    LIBC("pread at 7", pread(fd, buf, 5, 7));
    print_bytes("  pread", buf, 3);
    LIBC("lseek cur", lseek(fd, 0, SEEK_CUR));
    LIBC("__wasilibc_tell", __wasilibc_tell(fd));
    LIBC("ftruncate 6", ftruncate(fd, 6));
    LIBC("posix_fadvise", posix_fadvise(fd, 0, 6, POSIX_FADV_WILLNEED));
    LIBC("posix_fallocate (returns the error)", posix_fallocate(fd, 0, 100));
    LIBC("fsync", fsync(fd));
    LIBC("fdatasync", fdatasync(fd));
    struct stat st;
    LIBC("fstat", fstat(fd, &st));
    printf("  regular %d size %lld nlink %lu\n", S_ISREG(st.st_mode), (long long)st.st_size,
           (unsigned long)st.st_nlink);
    LIBC("close", close(fd));
    LIBC("close again", close(fd));
    LIBC("open missing", open("/data/files/missing.txt", O_RDONLY));
    LIBC("open outside the preopens", open("/etc/passwd", O_RDONLY));
    LIBC("open O_EXCL existing", open("/data/files/libc.txt", O_WRONLY | O_CREAT | O_EXCL, 0644));
    LIBC("open O_DIRECTORY on a file", open("/data/files/libc.txt", O_RDONLY | O_DIRECTORY));
    FILE *f = fopen("/data/files/stdio.txt", "w+");
    fprintf(f, "line %d\n", 1);
    fputs("line 2\n", f);
    rewind(f);
    char line[32];
    printf("fgets -> %s", fgets(line, sizeof line, f) ? line : "nothing\n");
    LIBC("fclose", fclose(f));
}

/* Ends the program's use of stderr: the file takes its number. */
static NOINLINE void renumber_onto_stderr(int dir) {
    fprintf(stderr, "c_files: stderr before renumbering\n");
    int fd = open_at(dir, "files/stderr.txt", 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, RIGHTS_RW, 0);
    SHOW("fd_renumber file onto stderr", __wasi_fd_renumber(fd, 2));
    fdstat("stderr after renumbering", 2);
    fprintf(stderr, "c_files: into the file through fd 2\n");
    SHOW("fd_close moved-away descriptor", __wasi_fd_close(fd));
    show_file(dir, "files/stderr.txt");
}

int main(void) {
    line_buffered();
    printf("c_files\n");
    int dir = data_dir();
    printf("data preopen found: %d\n", dir >= 0);
    prestats();
    stdio();
    read_write_seek(dir);
    read_only(dir);
    append_later(dir);
    rights(dir);
    renumber(dir);
    across_functions(dir);
    libc_files();
    listings(dir);
    renumber_onto_stderr(dir);
    printf("c_files done\n");
    return 0;
}
