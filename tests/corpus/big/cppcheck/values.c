/* Input for cppcheck.wasm: value-flow and style findings over a few more functions. */
#include <stdlib.h>
#include <string.h>

#define N 16

struct table {
    int keys[N];
    int vals[N];
    int used;
};

static int find(const struct table *t, int key)
{
    for (int i = 0; i < t->used; i++)
        if (t->keys[i] == key)
            return i;
    return -1;
}

int lookup(const struct table *t, int key)
{
    int i = find(t, key);
    return t->vals[i]; /* i may be -1 */
}

int put(struct table *t, int key, int val)
{
    if (t->used > N)
        return -1;
    t->keys[t->used] = key; /* used may be N */
    t->vals[t->used] = val;
    t->used++;
    return 0;
}

int same_branches(int a)
{
    if (a > 3)
        return a * 2;
    else
        return a * 2;
}

int redundant(int a)
{
    int b = a;
    b = a + 1;
    b = a + 2;
    return b;
}

int always_true(unsigned int u)
{
    if (u >= 0)
        return 1;
    return 0;
}

char last(const char *s)
{
    size_t n = strlen(s);
    char buf[4];
    memcpy(buf, s, n);
    return buf[n - 1];
}

int *stack_address(void)
{
    int local = 3;
    return &local;
}

int compare(int a, int b)
{
    if (a == b && a == b)
        return 1;
    return a < b ? -1 : 1;
}

void realloc_leak(void)
{
    char *p = malloc(10);
    p = realloc(p, 20);
    free(p);
}
