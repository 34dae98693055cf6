/* Input for cppcheck.wasm: an integer literal beyond 64 bits. MathLib::toLongNumber calls
   std::stoull, which throws std::out_of_range from inside libc++; MathLib catches it and throws
   an InternalError, which CppCheck::checkFile catches. */
unsigned long long big(void)
{
    unsigned long long x = 0x1FFFFFFFFFFFFFFFFFFFF;
    return x + 1;
}
