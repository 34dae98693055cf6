/* Input for cppcheck.wasm: broken code. cppcheck throws an InternalError from its tokenizer and
   catches it in CppCheck::checkFile, then reports syntaxError and goes on with the next file. */
int main(void)
{
    int x = (1 + ;
    return x;
}
