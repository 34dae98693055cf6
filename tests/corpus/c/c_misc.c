/* Arguments, environment, randomness, yielding, signals, and waiting: poll_oneoff on relative
 * and absolute clocks, on a file's readiness to read (with data, at its end) and to write, on
 * stdout, on bad descriptors; libc's poll, nanosleep, usleep, clock_nanosleep. Waits are a few
 * milliseconds; only whether they lasted long enough is printed. A call never waits on two things
 * that may both be ready (two descriptors, or a descriptor and a short clock): which one
 * wasmtime reports is a race. */
#include "common.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

static NOINLINE void arguments(int argc, char **argv) {
    __wasi_size_t count = 0, size = 0;
    SHOW("args_sizes_get", __wasi_args_sizes_get(&count, &size));
    printf("  count %u (main's argc %d)\n", (unsigned)count, argc);
    char **args = calloc(count + 1, sizeof(char *));
    char *buf = malloc(size);
    SHOW("args_get", __wasi_args_get((uint8_t **)args, (uint8_t *)buf));
    size_t len0 = strlen(args[0]);
    printf("  argv[0] ends with .wasm %d, same as main's %d\n",
           len0 > 5 && strcmp(args[0] + len0 - 5, ".wasm") == 0, strcmp(args[0], argv[0]) == 0);
    size_t total = 0;
    for (unsigned i = 0; i < count; i++)
        total += strlen(args[i]) + 1;
    printf("  buffer size matches %d\n", total == size);
    for (unsigned i = 1; i < count; i++) {
        char label[32];
        snprintf(label, sizeof label, "  arg %u", i);
        print_bytes(label, args[i], strlen(args[i]));
    }
    free(args);
    free(buf);
}

static int by_string(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static NOINLINE void environment(void) {
    __wasi_size_t count = 0, size = 0;
    SHOW("environ_sizes_get", __wasi_environ_sizes_get(&count, &size));
    printf("  count %u size %u\n", (unsigned)count, (unsigned)size);
    char **vars = calloc(count + 1, sizeof(char *));
    char *buf = malloc(size + 1);
    SHOW("environ_get", __wasi_environ_get((uint8_t **)vars, (uint8_t *)buf));
    qsort(vars, count, sizeof vars[0], by_string);
    for (unsigned i = 0; i < count; i++)
        print_bytes("  var", vars[i], strlen(vars[i]));
    free(vars);
    free(buf);
    const char *a = getenv("CC_A");
    printf("getenv CC_A: %s\n", a ? a : "(unset)");
    const char *empty = getenv("CC_EMPTY");
    printf("getenv CC_EMPTY: %s\n", empty ? (*empty ? empty : "(empty)") : "(unset)");
    printf("getenv HOME set: %d\n", getenv("HOME") != NULL);
}

static NOINLINE void randomness(void) {
    uint8_t a[64], b[64];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    SHOW("random_get 0 bytes", __wasi_random_get(a, 0));
    SHOW("random_get 64 bytes", __wasi_random_get(a, sizeof a));
    SHOW("random_get 64 bytes again", __wasi_random_get(b, sizeof b));
    int zero = 1;
    for (size_t i = 0; i < sizeof a; i++)
        zero &= a[i] == 0;
    printf("  not all zero %d, the two differ %d\n", !zero, memcmp(a, b, sizeof a) != 0);
    static uint8_t big[70000];
    SHOW("random_get 70000 bytes", __wasi_random_get(big, sizeof big));
    size_t zeros = 0;
    for (size_t i = 0; i < sizeof big; i++)
        zeros += big[i] == 0;
    printf("  zero bytes fewer than 1%% %d\n", zeros < sizeof big / 100);
    LIBC("getentropy 32", getentropy(a, 32));
    LIBC("getentropy 257", getentropy(a, 257));
    printf("rand() after srand(7) is deterministic: %d\n", (srand(7), rand()) == (srand(7), rand()));
}

static NOINLINE void yielding(void) {
    SHOW("sched_yield", __wasi_sched_yield());
    LIBC("sched_yield (libc)", sched_yield());
    SHOW("proc_raise SIGUSR1", cc_proc_raise(10 /* SIGUSR1 in preview 1 */));
    SHOW("proc_raise none (0)", cc_proc_raise(0));
}

static __wasi_timestamp_t mono(void) {
    __wasi_timestamp_t t = 0;
    (void)__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &t);
    return t;
}

static void show_events(const char *label, __wasi_errno_t e, __wasi_size_t n, const __wasi_event_t *ev) {
    printf("%s -> errno %d, %u events\n", label, (int)e, e == 0 ? (unsigned)n : 0u);
    for (__wasi_size_t i = 0; e == 0 && i < n; i++)
        printf("  event userdata %llu error %u type %u nbytes %llu flags %u\n",
               (unsigned long long)ev[i].userdata, (unsigned)ev[i].error, (unsigned)ev[i].type,
               (unsigned long long)ev[i].fd_readwrite.nbytes, (unsigned)ev[i].fd_readwrite.flags);
}

static __wasi_subscription_t clock_sub(uint64_t userdata, __wasi_clockid_t id, uint64_t timeout, uint16_t flags) {
    __wasi_subscription_t s;
    memset(&s, 0, sizeof s);
    s.userdata = userdata;
    s.u.tag = __WASI_EVENTTYPE_CLOCK;
    s.u.u.clock.id = id;
    s.u.u.clock.timeout = timeout;
    s.u.u.clock.precision = 0;
    s.u.u.clock.flags = flags;
    return s;
}

static __wasi_subscription_t fd_sub(uint64_t userdata, uint8_t type, int fd) {
    __wasi_subscription_t s;
    memset(&s, 0, sizeof s);
    s.userdata = userdata;
    s.u.tag = type;
    s.u.u.fd_read.file_descriptor = fd;
    return s;
}

static NOINLINE void polling(int dir) {
    __wasi_event_t ev[4];
    __wasi_size_t n = 0;
    __wasi_subscription_t s[4];
    SHOW("poll_oneoff no subscriptions", __wasi_poll_oneoff(s, ev, 0, &n));
    __wasi_timestamp_t t0 = mono();
    s[0] = clock_sub(11, __WASI_CLOCKID_MONOTONIC, 5000000, 0);
    __wasi_errno_t e = __wasi_poll_oneoff(s, ev, 1, &n);
    show_events("poll_oneoff monotonic +5ms", e, n, ev);
    printf("  waited at least 5ms %d\n", mono() - t0 >= 5000000);
    t0 = mono();
    s[0] = clock_sub(12, __WASI_CLOCKID_REALTIME, 2000000, 0);
    e = __wasi_poll_oneoff(s, ev, 1, &n);
    show_events("poll_oneoff realtime +2ms", e, n, ev);
    printf("  waited at least 2ms %d\n", mono() - t0 >= 2000000);
    s[0] = clock_sub(13, __WASI_CLOCKID_MONOTONIC, 1, __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME);
    e = __wasi_poll_oneoff(s, ev, 1, &n);
    show_events("poll_oneoff monotonic absolute in the past", e, n, ev);
    t0 = mono();
    s[0] = clock_sub(14, __WASI_CLOCKID_MONOTONIC, mono() + 3000000, __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME);
    e = __wasi_poll_oneoff(s, ev, 1, &n);
    show_events("poll_oneoff monotonic absolute +3ms", e, n, ev);
    printf("  waited at least 3ms %d\n", mono() - t0 >= 3000000);
    s[0] = clock_sub(15, __WASI_CLOCKID_REALTIME, 1, __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME);
    e = __wasi_poll_oneoff(s, ev, 1, &n);
    show_events("poll_oneoff realtime absolute in the past", e, n, ev);
    s[0] = clock_sub(16, __WASI_CLOCKID_PROCESS_CPUTIME_ID, 1000, 0);
    s[1] = clock_sub(17, __WASI_CLOCKID_MONOTONIC, 1000, 0);
    e = __wasi_poll_oneoff(s, ev, 2, &n);
    show_events("poll_oneoff cputime clock", e, n, ev);
    /* Two clocks: the nearer one fires. */
    s[0] = clock_sub(18, __WASI_CLOCKID_MONOTONIC, 10 * 1000000000ull, 0);
    s[1] = clock_sub(19, __WASI_CLOCKID_MONOTONIC, 1000000, 0);
    e = __wasi_poll_oneoff(s, ev, 2, &n);
    show_events("poll_oneoff clocks +10s and +1ms", e, n, ev);
    /* A file is always ready to read; a long clock next to it does not fire. */
    int fd = open_at(dir, "input.txt", 0, 0, RIGHTS_RO, 0);
    s[0] = clock_sub(20, __WASI_CLOCKID_MONOTONIC, 10 * 1000000000ull, 0);
    s[1] = fd_sub(21, __WASI_EVENTTYPE_FD_READ, fd);
    e = __wasi_poll_oneoff(s, ev, 2, &n);
    show_events("poll_oneoff file read + clock 10s", e, n, ev);
    __wasi_filesize_t pos;
    (void)__wasi_fd_seek(fd, 0, __WASI_WHENCE_END, &pos);
    s[0] = fd_sub(22, __WASI_EVENTTYPE_FD_READ, fd);
    e = __wasi_poll_oneoff(s, ev, 1, &n);
    show_events("poll_oneoff file read at its end", e, n, ev);
    /* Only one descriptor per call: which of two becomes ready first is a race. */
    s[0] = fd_sub(23, __WASI_EVENTTYPE_FD_WRITE, 1);
    s[1] = clock_sub(24, __WASI_CLOCKID_MONOTONIC, 10 * 1000000000ull, 0);
    e = __wasi_poll_oneoff(s, ev, 2, &n);
    show_events("poll_oneoff stdout write + clock 10s", e, n, ev);
    int w = open_at(dir, "misc.txt", 0, __WASI_OFLAGS_CREAT, RIGHTS_RW, 0);
    s[0] = fd_sub(25, __WASI_EVENTTYPE_FD_WRITE, w);
    e = __wasi_poll_oneoff(s, ev, 1, &n);
    show_events("poll_oneoff file write", e, n, ev);
    write_text(w, "misc.txt", "polled\n");
    SHOW("fd_close", __wasi_fd_close(w));
    s[0] = fd_sub(26, __WASI_EVENTTYPE_FD_READ, 40);
    e = __wasi_poll_oneoff(s, ev, 1, &n);
    show_events("poll_oneoff read on fd 40", e, n, ev);
    s[0] = fd_sub(27, __WASI_EVENTTYPE_FD_READ, dir);
    e = __wasi_poll_oneoff(s, ev, 1, &n);
    show_events("poll_oneoff read on a directory", e, n, ev);
    s[0] = fd_sub(28, __WASI_EVENTTYPE_FD_READ, 0);
    e = __wasi_poll_oneoff(s, ev, 1, &n);
    show_events("poll_oneoff read on stdin", e, n, ev);
    s[0] = fd_sub(29, 7, 0);
    e = __wasi_poll_oneoff(s, ev, 1, &n);
    show_events("poll_oneoff event type 7", e, n, ev);
    SHOW("fd_close", __wasi_fd_close(fd));
}

static NOINLINE void libc_waits(void) {
    /* One descriptor per call and no timeout: with a zero timeout, or two descriptors, what is
     * ready first is a race (wasmtime reads files through a stream that takes a moment). */
    int fd = open("/data/input.txt", O_RDONLY);
    struct pollfd p = {fd, POLLIN, 0};
    errno = 0;
    int r = poll(&p, 1, -1);
    printf("poll file in -> %d errno %d revents %d\n", r, r < 0 ? errno : 0, p.revents);
    close(fd);
    p = (struct pollfd){1, POLLOUT, 0};
    r = poll(&p, 1, -1);
    printf("poll stdout out -> %d errno %d revents %d\n", r, r < 0 ? errno : 0, p.revents);
    __wasi_timestamp_t t0 = mono();
    struct timespec ts = {0, 3000000};
    LIBC("nanosleep 3ms", nanosleep(&ts, NULL));
    printf("  waited at least 3ms %d\n", mono() - t0 >= 3000000);
    t0 = mono();
    LIBC("usleep 2000", usleep(2000));
    printf("  waited at least 2ms %d\n", mono() - t0 >= 2000000);
    t0 = mono();
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    now.tv_nsec += 2000000;
    if (now.tv_nsec >= 1000000000) {
        now.tv_sec++;
        now.tv_nsec -= 1000000000;
    }
    errno = 0;
    r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &now, NULL);
    printf("clock_nanosleep absolute +2ms -> %d\n", r);
    printf("  waited at least 2ms %d\n", mono() - t0 >= 2000000);
    r = clock_nanosleep(CLOCK_PROCESS_CPUTIME_ID, 0, &ts, NULL);
    printf("clock_nanosleep cputime -> %d\n", r);
    LIBC("sleep 0", sleep(0));
}

int main(int argc, char **argv) {
    line_buffered();
    printf("c_misc\n");
    int dir = data_dir();
    printf("data preopen found: %d\n", dir >= 0);
    arguments(argc, argv);
    environment();
    randomness();
    yielding();
    polling(dir);
    libc_waits();
    printf("c_misc done\n");
    return 0;
}
