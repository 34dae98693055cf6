/* Input for cppcheck.wasm: preprocessor configurations (each #ifdef branch is checked). */
#include <string.h>

#ifdef USE_FAST
#define COPY(d, s, n) memcpy(d, s, n)
#else
#define COPY(d, s, n) memmove(d, s, n)
#endif

#if defined(BIG_BUFFERS)
#define SIZE 64
#else
#define SIZE 8
#endif

int fill(const char *src)
{
    char buf[SIZE];
    COPY(buf, src, 12);
    return buf[0];
}

#ifdef BROKEN
int broken(void) { return ( ; }
#endif
