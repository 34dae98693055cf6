/* Input for cppcheck.wasm (tests/corpus/big/run cppcheck): ordinary bugs cppcheck reports. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct point {
    int x, y;
};

static int sum(const int *v, int n)
{
    int s = 0;
    for (int i = 0; i <= n; i++) /* reads v[n] */
        s += v[i];
    return s;
}

int overrun(void)
{
    int a[10];
    for (int i = 0; i < 10; i++)
        a[i] = i * i;
    a[10] = 1;
    return sum(a, 10);
}

char *copy_name(const char *name)
{
    char *s = malloc(8);
    strcpy(s, "a name that is too long");
    if (name[0] == 0)
        return NULL; /* leaks s */
    return s;
}

int uninit(int flag)
{
    int y;
    if (flag)
        y = 1;
    return y;
}

int null_deref(struct point *p)
{
    if (p == NULL)
        printf("no point\n");
    return p->x + p->y;
}

void leak_file(const char *path)
{
    FILE *f = fopen(path, "r");
    char buf[16];
    if (!f)
        return;
    if (fgets(buf, sizeof buf, f) == NULL)
        return; /* f leaks */
    fclose(f);
}

int divide(int a)
{
    int zero = 0;
    return a / zero;
}

void double_free(void)
{
    char *p = malloc(4);
    free(p);
    free(p);
}

int shifts(void)
{
    int x = 1;
    return x << 40;
}

unsigned char narrow(void)
{
    unsigned char c = 300;
    return c;
}
