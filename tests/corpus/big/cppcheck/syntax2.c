/* Input for cppcheck.wasm: unbalanced braces (InternalError thrown and caught). */
int f(int a)
{
    if (a) {
        return 1;
    }}
    return 0;
}
