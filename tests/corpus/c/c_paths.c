/* Paths and links: directories made and removed, renames (over files, onto directories, into
 * themselves), unlinks, hard links (nlink), symbolic links inside the preopen and pointing out
 * of it (`../x`, `/etc/passwd`: following them must fail), loops, trailing slashes on
 * directories and on files; raw WASI calls and libc's wrappers. Leaves a tree of files, links
 * and directories behind. */
#include "common.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define FOLLOW __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW

static NOINLINE void make(int dir, const char *path, const char *text) {
    int fd = open_at(dir, path, 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, RIGHTS_RW, 0);
    if (fd >= 0) {
        write_text(fd, path, text);
        (void)__wasi_fd_close(fd);
    }
}

static NOINLINE void directories(int dir) {
    SHOW("path_create_directory p", __wasi_path_create_directory(dir, "p"));
    SHOW("path_create_directory p again", __wasi_path_create_directory(dir, "p"));
    SHOW("path_create_directory p/sub", __wasi_path_create_directory(dir, "p/sub"));
    SHOW("path_create_directory p/sub/ (exists, trailing slash)", __wasi_path_create_directory(dir, "p/sub/"));
    SHOW("path_create_directory p/slashed/ (trailing slash)", __wasi_path_create_directory(dir, "p/slashed/"));
    SHOW("path_create_directory p/missing/child", __wasi_path_create_directory(dir, "p/missing/child"));
    SHOW("path_create_directory input.txt/d (under a file)", __wasi_path_create_directory(dir, "input.txt/d"));
    SHOW("path_create_directory input.txt (a file)", __wasi_path_create_directory(dir, "input.txt"));
    SHOW("path_create_directory /data/abs (absolute)", __wasi_path_create_directory(dir, "/data/abs"));
    SHOW("path_create_directory ../escape", __wasi_path_create_directory(dir, "../escape"));
    SHOW("path_create_directory p/../p/dotdot", __wasi_path_create_directory(dir, "p/../p/dotdot"));
    SHOW("path_create_directory p/./dot", __wasi_path_create_directory(dir, "p/./dot"));
    SHOW("path_create_directory empty path", __wasi_path_create_directory(dir, ""));
    SHOW("path_create_directory on a file descriptor", __wasi_path_create_directory(1, "x"));
    show_stat(dir, 0, "p");
    show_stat(dir, 0, "p/sub/");
    show_stat(dir, 0, ".");
    show_stat(dir, 0, "");
    show_stat(dir, 0, "p/nothing");
}

static NOINLINE void opening(int dir) {
    make(dir, "p/f.txt", "file f\n");
    int fd;
    fd = open_at(dir, "p/f.txt/", 0, 0, RIGHTS_RO, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    fd = open_at(dir, "p/f.txt", 0, __WASI_OFLAGS_DIRECTORY, RIGHTS_RO, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    fd = open_at(dir, "p/f.txt", 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL, RIGHTS_RW, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    fd = open_at(dir, "p/new/", 0, __WASI_OFLAGS_CREAT, RIGHTS_RW, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    fd = open_at(dir, "p/sub/", 0, __WASI_OFLAGS_CREAT, RIGHTS_RW, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    fd = open_at(dir, "p/sub", 0, 0, RIGHTS_RW, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    fd = open_at(dir, "p/sub", 0, __WASI_OFLAGS_TRUNC, RIGHTS_RW, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    fd = open_at(dir, "p/missing.txt", 0, 0, RIGHTS_RO, 0);
    fd = open_at(dir, "p/missing/x.txt", 0, __WASI_OFLAGS_CREAT, RIGHTS_RW, 0);
    fd = open_at(dir, "../input.txt", 0, 0, RIGHTS_RO, 0);
    fd = open_at(dir, "/data/input.txt", 0, 0, RIGHTS_RO, 0);
    fd = open_at(dir, "p/../input.txt", 0, 0, RIGHTS_RO, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    /* A directory opened with a trailing slash is the base of further paths. */
    int sub = open_at(dir, "p/", 0, __WASI_OFLAGS_DIRECTORY, RIGHTS_DIR, 0);
    fd = open_at(sub, "f.txt", 0, 0, RIGHTS_RO, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    fd = open_at(sub, "../input.txt", 0, 0, RIGHTS_RO, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    fd = open_at(sub, "../../input.txt", 0, 0, RIGHTS_RO, 0);
    SHOW("path_create_directory under the opened p", __wasi_path_create_directory(sub, "from-sub"));
    int file = open_at(dir, "p/f.txt", 0, 0, RIGHTS_RO, 0);
    fd = open_at(file, "x", 0, 0, RIGHTS_RO, 0);
    SHOW("path_filestat_get relative to a file", __wasi_path_filestat_get(file, 0, "x", &(__wasi_filestat_t){0}));
    (void)__wasi_fd_close(file);
    (void)__wasi_fd_close(sub);
    /* O_TRUNC empties. */
    make(dir, "p/trunc.txt", "0123456789");
    fd = open_at(dir, "p/trunc.txt", 0, __WASI_OFLAGS_TRUNC, RIGHTS_RW, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    show_stat(dir, 0, "p/trunc.txt");
}

static NOINLINE void hard_links(int dir) {
    make(dir, "p/h.txt", "hard\n");
    SHOW("path_link p/h.txt p/h2.txt", __wasi_path_link(dir, 0, "p/h.txt", dir, "p/h2.txt"));
    show_stat(dir, 0, "p/h.txt");
    show_stat(dir, 0, "p/h2.txt");
    __wasi_filestat_t a, b, c;
    (void)__wasi_path_filestat_get(dir, 0, "p/h.txt", &a);
    (void)__wasi_path_filestat_get(dir, 0, "p/h2.txt", &b);
    (void)__wasi_path_filestat_get(dir, 0, "p/f.txt", &c);
    printf("hard links share an inode %d, and not with f.txt %d, same device %d\n", a.ino == b.ino,
           a.ino != c.ino, a.dev == b.dev && a.dev == c.dev);
    int fd = open_at(dir, "p/h2.txt", 0, 0, RIGHTS_RW, __WASI_FDFLAGS_APPEND);
    write_text(fd, "through h2", "through h2\n");
    __wasi_filestat_t viafd;
    (void)__wasi_fd_filestat_get(fd, &viafd);
    printf("fd_filestat_get h2: nlink %llu size %llu same inode as the path %d\n",
           (unsigned long long)viafd.nlink, (unsigned long long)viafd.size, viafd.ino == a.ino);
    (void)__wasi_fd_close(fd);
    show_file(dir, "p/h.txt");
    SHOW("path_link onto an existing name", __wasi_path_link(dir, 0, "p/h.txt", dir, "p/f.txt"));
    SHOW("path_link of a directory", __wasi_path_link(dir, 0, "p/sub", dir, "p/sublink-hard"));
    SHOW("path_link of a missing file", __wasi_path_link(dir, 0, "p/none", dir, "p/none2"));
    SHOW("path_link source with trailing slash", __wasi_path_link(dir, 0, "p/h.txt/", dir, "p/h3.txt"));
    SHOW("path_link target with trailing slash", __wasi_path_link(dir, 0, "p/h.txt", dir, "p/h3.txt/"));
    SHOW("path_link out of the preopen", __wasi_path_link(dir, 0, "p/h.txt", dir, "../h-outside"));
    SHOW("path_link from stdout", __wasi_path_link(1, 0, "p/h.txt", dir, "p/h4.txt"));
    int sub = open_at(dir, "p/sub", 0, __WASI_OFLAGS_DIRECTORY, RIGHTS_DIR, 0);
    SHOW("path_link across two directory descriptors", __wasi_path_link(dir, 0, "p/h.txt", sub, "h-in-sub.txt"));
    (void)__wasi_fd_close(sub);
    show_stat(dir, 0, "p/sub/h-in-sub.txt");
    SHOW("path_unlink_file p/h2.txt", __wasi_path_unlink_file(dir, "p/h2.txt"));
    show_stat(dir, 0, "p/h.txt");
    /* libc */
    LIBC("link", link("/data/p/h.txt", "/data/p/h-libc.txt"));
    LIBC("link existing", link("/data/p/h.txt", "/data/p/f.txt"));
    struct stat st;
    LIBC("stat h.txt", stat("/data/p/h.txt", &st));
    printf("  nlink %lu size %lld\n", (unsigned long)st.st_nlink, (long long)st.st_size);
}

static NOINLINE void readlink_show(int dir, const char *path, size_t size) {
    char buf[64];
    memset(buf, '#', sizeof buf);
    __wasi_size_t n = 0;
    __wasi_errno_t e = __wasi_path_readlink(dir, path, (uint8_t *)buf, size, &n);
    printf("path_readlink %s (buffer %zu) -> errno %d\n", path, size, (int)e);
    if (e == 0)
        print_bytes("  target", buf, n);
}

static NOINLINE void symlinks(int dir) {
    SHOW("path_symlink f.txt -> p/link", __wasi_path_symlink("f.txt", dir, "p/link"));
    readlink_show(dir, "p/link", 64);
    readlink_show(dir, "p/link", 3);
    readlink_show(dir, "p/link", 0);
    readlink_show(dir, "p/f.txt", 64);
    readlink_show(dir, "p/none", 64);
    readlink_show(dir, "p/link/", 64);
    show_stat(dir, 0, "p/link");
    show_stat(dir, FOLLOW, "p/link");
    show_stat(dir, FOLLOW, "p/link/");
    int fd = open_at(dir, "p/link", FOLLOW, 0, RIGHTS_RO, 0);
    if (fd >= 0) {
        char buf[16];
        __wasi_iovec_t iov = {(uint8_t *)buf, sizeof buf};
        __wasi_size_t n;
        if (__wasi_fd_read(fd, &iov, 1, &n) == 0)
            print_bytes("  through the link", buf, n);
        (void)__wasi_fd_close(fd);
    }
    fd = open_at(dir, "p/link", 0, 0, RIGHTS_RO, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    SHOW("path_symlink onto an existing name", __wasi_path_symlink("x", dir, "p/f.txt"));
    SHOW("path_symlink onto an existing link", __wasi_path_symlink("x", dir, "p/link"));
    SHOW("path_symlink dangling", __wasi_path_symlink("nowhere.txt", dir, "p/dangling"));
    show_stat(dir, 0, "p/dangling");
    show_stat(dir, FOLLOW, "p/dangling");
    fd = open_at(dir, "p/dangling", FOLLOW, 0, RIGHTS_RO, 0);
    /* Creating through a dangling link. */
    fd = open_at(dir, "p/dangling", FOLLOW, __WASI_OFLAGS_CREAT, RIGHTS_RW, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    show_stat(dir, 0, "p/nowhere.txt");
    SHOW("path_symlink to a directory", __wasi_path_symlink("sub", dir, "p/sublink"));
    show_stat(dir, FOLLOW, "p/sublink");
    show_stat(dir, 0, "p/sublink/");
    SHOW("path_create_directory through a directory link", __wasi_path_create_directory(dir, "p/sublink/inner"));
    show_stat(dir, 0, "p/sub/inner");
    fd = open_at(dir, "p/sublink", 0, __WASI_OFLAGS_DIRECTORY, RIGHTS_DIR, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    fd = open_at(dir, "p/sublink", FOLLOW, __WASI_OFLAGS_DIRECTORY, RIGHTS_DIR, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    /* Out of the preopen: making them may or may not be allowed; following them never is. */
    SHOW("path_symlink ../../x -> p/up", __wasi_path_symlink("../../x", dir, "p/up"));
    readlink_show(dir, "p/up", 64);
    show_stat(dir, 0, "p/up");
    show_stat(dir, FOLLOW, "p/up");
    fd = open_at(dir, "p/up", FOLLOW, 0, RIGHTS_RO, 0);
    fd = open_at(dir, "p/up", FOLLOW, __WASI_OFLAGS_CREAT, RIGHTS_RW, 0);
    SHOW("path_symlink .. -> p/parent", __wasi_path_symlink("..", dir, "p/parent"));
    show_stat(dir, FOLLOW, "p/parent");
    fd = open_at(dir, "p/parent/input.txt", 0, 0, RIGHTS_RO, 0);
    if (fd >= 0) (void)__wasi_fd_close(fd);
    SHOW("path_symlink ../.. -> p/grandparent", __wasi_path_symlink("../..", dir, "p/grandparent"));
    show_stat(dir, FOLLOW, "p/grandparent");
    fd = open_at(dir, "p/grandparent/x", FOLLOW, 0, RIGHTS_RO, 0);
    SHOW("path_symlink /etc/passwd -> p/abs", __wasi_path_symlink("/etc/passwd", dir, "p/abs"));
    readlink_show(dir, "p/abs", 64);
    show_stat(dir, 0, "p/abs");
    show_stat(dir, FOLLOW, "p/abs");
    fd = open_at(dir, "p/abs", FOLLOW, 0, RIGHTS_RO, 0);
    SHOW("path_symlink /data/input.txt -> p/abs-data", __wasi_path_symlink("/data/input.txt", dir, "p/abs-data"));
    fd = open_at(dir, "p/abs-data", FOLLOW, 0, RIGHTS_RO, 0);
    /* A loop. */
    SHOW("path_symlink loop2 -> p/loop1", __wasi_path_symlink("loop2", dir, "p/loop1"));
    SHOW("path_symlink loop1 -> p/loop2", __wasi_path_symlink("loop1", dir, "p/loop2"));
    show_stat(dir, FOLLOW, "p/loop1");
    fd = open_at(dir, "p/loop1", FOLLOW, 0, RIGHTS_RO, 0);
    SHOW("path_symlink with a trailing slash on the link", __wasi_path_symlink("f.txt", dir, "p/slash/"));
    SHOW("path_symlink empty target", __wasi_path_symlink("", dir, "p/empty-target"));
    SHOW("path_symlink in a missing directory", __wasi_path_symlink("f.txt", dir, "p/none/link"));
    SHOW("path_symlink out of the preopen", __wasi_path_symlink("f.txt", dir, "../outside-link"));
    SHOW("path_link following a symlink", __wasi_path_link(dir, FOLLOW, "p/link", dir, "p/link-hard-follow"));
    SHOW("path_link of the symlink itself", __wasi_path_link(dir, 0, "p/link", dir, "p/link-hard"));
    show_stat(dir, 0, "p/link-hard-follow");
    show_stat(dir, 0, "p/link-hard");
    /* libc */
    LIBC("symlink", symlink("h.txt", "/data/p/libc-link"));
    char buf[32];
    ssize_t n = readlink("/data/p/libc-link", buf, sizeof buf);
    printf("readlink -> %zd errno %d\n", n, n < 0 ? errno : 0);
    if (n > 0)
        print_bytes("  target", buf, (size_t)n);
    struct stat st;
    LIBC("lstat libc-link", lstat("/data/p/libc-link", &st));
    printf("  symlink %d size %lld\n", S_ISLNK(st.st_mode), (long long)st.st_size);
    LIBC("stat libc-link", stat("/data/p/libc-link", &st));
    printf("  regular %d size %lld\n", S_ISREG(st.st_mode), (long long)st.st_size);
    LIBC("stat p/abs", stat("/data/p/abs", &st));
    LIBC("open p/up", open("/data/p/up", O_RDONLY));
    LIBC("readlink on a file", readlink("/data/p/f.txt", buf, sizeof buf));
}

static NOINLINE void renames(int dir) {
    make(dir, "p/r1.txt", "rename one\n");
    make(dir, "p/r2.txt", "rename two\n");
    SHOW("path_rename r1 -> r1b", __wasi_path_rename(dir, "p/r1.txt", dir, "p/r1b.txt"));
    SHOW("path_rename r1b over r2", __wasi_path_rename(dir, "p/r1b.txt", dir, "p/r2.txt"));
    show_file(dir, "p/r2.txt");
    show_stat(dir, 0, "p/r1b.txt");
    SHOW("path_rename missing", __wasi_path_rename(dir, "p/r9.txt", dir, "p/r10.txt"));
    SHOW("path_rename file onto a directory", __wasi_path_rename(dir, "p/r2.txt", dir, "p/sub"));
    SHOW("path_create_directory p/d1", __wasi_path_create_directory(dir, "p/d1"));
    SHOW("path_create_directory p/d2", __wasi_path_create_directory(dir, "p/d2"));
    make(dir, "p/d2/inside.txt", "inside\n");
    SHOW("path_rename directory onto a file", __wasi_path_rename(dir, "p/d1", dir, "p/r2.txt"));
    SHOW("path_rename directory onto a non-empty directory", __wasi_path_rename(dir, "p/d1", dir, "p/d2"));
    SHOW("path_rename directory into itself", __wasi_path_rename(dir, "p/d2", dir, "p/d2/deeper"));
    SHOW("path_rename non-empty directory onto an empty one", __wasi_path_rename(dir, "p/d2", dir, "p/d1"));
    show_file(dir, "p/d1/inside.txt");
    SHOW("path_rename directory with trailing slashes", __wasi_path_rename(dir, "p/d1/", dir, "p/d3/"));
    SHOW("path_rename file with a trailing slash", __wasi_path_rename(dir, "p/r2.txt/", dir, "p/r3.txt"));
    SHOW("path_rename file to a trailing slash", __wasi_path_rename(dir, "p/r2.txt", dir, "p/r3.txt/"));
    SHOW("path_rename out of the preopen", __wasi_path_rename(dir, "p/r2.txt", dir, "../r2.txt"));
    SHOW("path_rename the preopen itself", __wasi_path_rename(dir, ".", dir, "p/self"));
    int sub = open_at(dir, "p/sub", 0, __WASI_OFLAGS_DIRECTORY, RIGHTS_DIR, 0);
    SHOW("path_rename across two descriptors", __wasi_path_rename(dir, "p/r2.txt", sub, "moved.txt"));
    SHOW("path_rename back", __wasi_path_rename(sub, "moved.txt", dir, "p/r2.txt"));
    (void)__wasi_fd_close(sub);
    SHOW("path_rename a symlink", __wasi_path_rename(dir, "p/dangling", dir, "p/dangling2"));
    readlink_show(dir, "p/dangling2", 64);
    /* A renamed file keeps its open descriptor. */
    int fd = open_at(dir, "p/r2.txt", 0, 0, RIGHTS_RO, 0);
    SHOW("path_rename an open file", __wasi_path_rename(dir, "p/r2.txt", dir, "p/r4.txt"));
    char buf[16];
    __wasi_iovec_t iov = {(uint8_t *)buf, sizeof buf};
    __wasi_size_t n;
    if (__wasi_fd_read(fd, &iov, 1, &n) == 0)
        print_bytes("  read after rename", buf, n);
    (void)__wasi_fd_close(fd);
    LIBC("rename (libc)", rename("/data/p/r4.txt", "/data/p/r5.txt"));
    LIBC("rename missing (libc)", rename("/data/p/r4.txt", "/data/p/r6.txt"));
}

static NOINLINE void removals(int dir) {
    SHOW("path_unlink_file a directory", __wasi_path_unlink_file(dir, "p/sub"));
    SHOW("path_unlink_file a directory with a slash", __wasi_path_unlink_file(dir, "p/sub/"));
    SHOW("path_unlink_file with a trailing slash", __wasi_path_unlink_file(dir, "p/f.txt/"));
    SHOW("path_unlink_file missing", __wasi_path_unlink_file(dir, "p/none"));
    SHOW("path_unlink_file a symlink to a directory", __wasi_path_unlink_file(dir, "p/sublink"));
    show_stat(dir, 0, "p/sub");
    SHOW("path_unlink_file a symlink with a slash", __wasi_path_unlink_file(dir, "p/loop2/"));
    SHOW("path_unlink_file a symlink", __wasi_path_unlink_file(dir, "p/loop2"));
    SHOW("path_unlink_file out of the preopen", __wasi_path_unlink_file(dir, "../x"));
    int fd = open_at(dir, "p/trunc.txt", 0, 0, RIGHTS_RW, 0);
    SHOW("path_unlink_file an open file", __wasi_path_unlink_file(dir, "p/trunc.txt"));
    write_text(fd, "unlinked but open", "still writable\n");
    __wasi_filestat_t st;
    __wasi_errno_t e = __wasi_fd_filestat_get(fd, &st);
    printf("fd_filestat_get unlinked -> errno %d nlink %llu size %llu\n", (int)e,
           (unsigned long long)st.nlink, (unsigned long long)st.size);
    (void)__wasi_fd_close(fd);
    SHOW("path_remove_directory non-empty", __wasi_path_remove_directory(dir, "p/sub"));
    SHOW("path_remove_directory a file", __wasi_path_remove_directory(dir, "p/f.txt"));
    SHOW("path_remove_directory a file with a slash", __wasi_path_remove_directory(dir, "p/f.txt/"));
    SHOW("path_remove_directory missing", __wasi_path_remove_directory(dir, "p/none"));
    SHOW("path_remove_directory a symlink to a directory", __wasi_path_remove_directory(dir, "p/sublink"));
    SHOW("path_remove_directory .", __wasi_path_remove_directory(dir, "."));
    SHOW("path_remove_directory p/slashed/ (trailing slash)", __wasi_path_remove_directory(dir, "p/slashed/"));
    SHOW("path_remove_directory p/sub/inner", __wasi_path_remove_directory(dir, "p/sub/inner"));
    SHOW("path_remove_directory out of the preopen", __wasi_path_remove_directory(dir, "../data"));
    LIBC("unlink remove-me.txt (libc)", unlink("/data/remove-me.txt"));
    LIBC("unlink missing (libc)", unlink("/data/remove-me.txt"));
    LIBC("mkdir (libc)", mkdir("/data/p/libc-dir", 0755));
    LIBC("mkdir existing (libc)", mkdir("/data/p/libc-dir", 0755));
    LIBC("rmdir (libc)", rmdir("/data/p/libc-dir"));
    LIBC("rmdir non-empty (libc)", rmdir("/data/p/d3"));
    LIBC("remove a file (libc)", remove("/data/p/r5.txt"));
}

int main(void) {
    line_buffered();
    printf("c_paths\n");
    int dir = data_dir();
    printf("data preopen found: %d\n", dir >= 0);
    directories(dir);
    opening(dir);
    hard_links(dir);
    symlinks(dir);
    renames(dir);
    removals(dir);
    printf("c_paths done\n");
    return 0;
}
