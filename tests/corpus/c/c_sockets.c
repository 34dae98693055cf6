/* The socket calls of preview 1 on descriptors that are not sockets (a file, a directory, stdio)
 * and on ones that are not open: every call must fail, with the errno printed, and must not
 * touch the file or the output. Raw WASI calls and libc's accept, recv, send, shutdown. */
#include "common.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

static NOINLINE void on(const char *what, int fd) {
    __wasi_fd_t got = 12345;
    __wasi_errno_t e = __wasi_sock_accept(fd, 0, &got);
    printf("sock_accept %s -> errno %d, descriptor untouched %d\n", what, (int)e, got == 12345);
    SHOW("  sock_accept nonblocking", __wasi_sock_accept(fd, __WASI_FDFLAGS_NONBLOCK, &got));
    char buf[8] = "unread";
    __wasi_iovec_t in = {(uint8_t *)buf, sizeof buf};
    __wasi_size_t n = 777;
    __wasi_roflags_t ro = 0;
    e = __wasi_sock_recv(fd, &in, 1, 0, &n, &ro);
    printf("  sock_recv -> errno %d, buffer untouched %d\n", (int)e, strcmp(buf, "unread") == 0);
    SHOW("  sock_recv peek+waitall", __wasi_sock_recv(fd, &in, 1, __WASI_RIFLAGS_RECV_PEEK | __WASI_RIFLAGS_RECV_WAITALL, &n, &ro));
    __wasi_ciovec_t out = {(const uint8_t *)"SENT\n", 5};
    SHOW("  sock_send", __wasi_sock_send(fd, &out, 1, 0, &n));
    SHOW("  sock_shutdown rd", __wasi_sock_shutdown(fd, __WASI_SDFLAGS_RD));
    SHOW("  sock_shutdown rd|wr", __wasi_sock_shutdown(fd, __WASI_SDFLAGS_RD | __WASI_SDFLAGS_WR));
}

static NOINLINE void raw(int dir) {
    int fd = open_at(dir, "sock.txt", 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, RIGHTS_ALL, 0);
    write_text(fd, "sock.txt", "a file, not a socket\n");
    __wasi_filesize_t pos;
    (void)__wasi_fd_seek(fd, 0, __WASI_WHENCE_SET, &pos);
    on("file", fd);
    on("directory", dir);
    on("stdin", 0);
    on("stdout", 1);
    on("fd 40", 40);
    __wasi_size_t n;
    __wasi_ciovec_t out = {(const uint8_t *)"x", 1};
    SHOW("sock_send flags 1 on fd 40", __wasi_sock_send(40, &out, 1, 1, &n));
    SHOW("fd_tell after the socket calls", __wasi_fd_tell(fd, &pos));
    printf("  position %llu\n", (unsigned long long)pos);
    SHOW("fd_close", __wasi_fd_close(fd));
    show_file(dir, "sock.txt");
}

static NOINLINE void libc(void) {
    int fd = open("/data/sock.txt", O_RDWR);
    LIBC("accept", accept(fd, NULL, NULL));
    char buf[8];
    LIBC("recv", recv(fd, buf, sizeof buf, 0));
    LIBC("send", send(fd, "y", 1, 0));
    LIBC("shutdown", shutdown(fd, SHUT_RDWR));
    LIBC("send on stdout", send(1, "z\n", 2, 0));
    LIBC("shutdown on fd 40", shutdown(40, SHUT_RD));
    LIBC("close", close(fd));
}

int main(void) {
    line_buffered();
    printf("c_sockets\n");
    int dir = data_dir();
    printf("data preopen found: %d\n", dir >= 0);
    raw(dir);
    libc();
    printf("c_sockets done\n");
    return 0;
}
