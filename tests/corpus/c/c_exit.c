/* proc_exit with a non-zero code from a nested function, after writing files, stdout and stderr;
 * a line still in stdio's buffer at that moment is lost (proc_exit does not flush). */
#include "common.h"

static NOINLINE void prepare(int dir) {
    SHOW("path_create_directory exit", __wasi_path_create_directory(dir, "exit"));
    int fd = open_at(dir, "exit/before.txt", 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, RIGHTS_RW, 0);
    write_text(fd, "before.txt", "written before proc_exit\n");
    (void)__wasi_fd_close(fd);
    fprintf(stderr, "c_exit: to stderr before exiting\n");
}

static NOINLINE _Noreturn void leave(int dir, int code) {
    /* Left open: the exit closes it. */
    int fd = open_at(dir, "exit/open-at-exit.txt", 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, RIGHTS_RW, 0);
    write_text(fd, "open-at-exit.txt", "never closed\n");
    printf("leaving with %d\n", code);
    setvbuf(stdout, NULL, _IOFBF, 4096);
    printf("this line stays in the buffer and is lost\n");
    __wasi_proc_exit(code);
}

int main(void) {
    line_buffered();
    printf("c_exit\n");
    int dir = data_dir();
    printf("data preopen found: %d\n", dir >= 0);
    prepare(dir);
    leave(dir, 7);
}
