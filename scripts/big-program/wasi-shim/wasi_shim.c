/* build-big-program WASI shim: POSIX functions that Debian bookworm's wasi-libc (2022) lacks and
 * that libc++ <filesystem> or cppcheck refer to. What WASI preview 1 cannot do fails with errno. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

int statvfs(const char *restrict p, struct statvfs *restrict b) { (void)p; (void)b; errno = ENOTSUP; return -1; }
int fstatvfs(int fd, struct statvfs *b) { (void)fd; (void)b; errno = ENOTSUP; return -1; }
int chmod(const char *p, mode_t m) { (void)p; (void)m; errno = ENOTSUP; return -1; }
int fchmod(int fd, mode_t m) { (void)fd; (void)m; errno = ENOTSUP; return -1; }
int fchmodat(int fd, const char *p, mode_t m, int f) { (void)fd; (void)p; (void)m; (void)f; errno = ENOTSUP; return -1; }
FILE *popen(const char *c, const char *m) { (void)c; (void)m; errno = ENOSYS; return NULL; }
int pclose(FILE *f) { (void)f; errno = ENOSYS; return -1; }
/* No shell: system(NULL) says so, as C allows; Lua's os.execute uses it. */
int system(const char *c) { if (!c) return 0; errno = ENOSYS; return -1; }
/* No anonymous temporary files without a writable directory known to the program. */
FILE *tmpfile(void) { errno = ENOSYS; return NULL; }

int readdir_r(DIR *restrict d, struct dirent *restrict entry, struct dirent **restrict result) {
  int saved = errno;
  errno = 0;
  struct dirent *e = readdir(d);
  if (!e) {
    int err = errno;
    errno = saved;
    *result = NULL;
    return err;
  }
  errno = saved;
  /* d_name is a flexible array member in wasi-libc: POSIX callers reserve NAME_MAX+1 for it. */
  memcpy(entry, e, offsetof(struct dirent, d_name) + strlen(e->d_name) + 1);
  *result = entry;
  return 0;
}

/* Lexical realpath: makes the path absolute with getcwd, folds "." and "..", and checks that
 * the result exists. WASI preview 1 paths resolve against preopened directories. */
char *realpath(const char *restrict path, char *restrict resolved) {
  if (!path) { errno = EINVAL; return NULL; }
  if (!*path) { errno = ENOENT; return NULL; }
  char buf[PATH_MAX];
  size_t len = 0;
  if (path[0] != '/') {
    if (!getcwd(buf, sizeof buf)) return NULL;
    len = strlen(buf);
    if (len == 1) len = 0; /* "/" */
  }
  const char *p = path;
  while (*p) {
    while (*p == '/') p++;
    if (!*p) break;
    const char *s = p;
    while (*p && *p != '/') p++;
    size_t n = (size_t)(p - s);
    if (n == 1 && s[0] == '.') continue;
    if (n == 2 && s[0] == '.' && s[1] == '.') {
      while (len > 0 && buf[len - 1] != '/') len--;
      if (len > 0) len--;
      continue;
    }
    if (len + 1 + n >= sizeof buf) { errno = ENAMETOOLONG; return NULL; }
    buf[len++] = '/';
    memcpy(buf + len, s, n);
    len += n;
  }
  if (len == 0) buf[len++] = '/';
  buf[len] = 0;
  struct stat st;
  if (stat(buf, &st) != 0) return NULL;
  if (!resolved) return strdup(buf);
  memcpy(resolved, buf, len + 1);
  return resolved;
}

/* Destructors of thread_local objects (cppcheck's programmemory.cpp has one). libc++abi built
 * without threads leaves out __cxa_thread_atexit; with one thread they run at exit, last
 * registered first, like the destructors of static objects. */
struct tls_dtor {
  void (*fn)(void *);
  void *obj;
  struct tls_dtor *next;
};
static struct tls_dtor *tls_dtors;
static void run_tls_dtors(void) {
  while (tls_dtors) {
    struct tls_dtor *d = tls_dtors;
    tls_dtors = d->next;
    d->fn(d->obj);
    free(d);
  }
}
int __cxa_thread_atexit(void (*fn)(void *), void *obj, void *dso) {
  static int registered;
  (void)dso;
  if (!registered) {
    if (atexit(run_tls_dtors) != 0) return -1;
    registered = 1;
  }
  struct tls_dtor *d = malloc(sizeof *d);
  if (!d) return -1;
  d->fn = fn;
  d->obj = obj;
  d->next = tls_dtors;
  tls_dtors = d;
  return 0;
}
