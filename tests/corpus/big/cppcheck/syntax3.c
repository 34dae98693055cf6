/* Input for cppcheck.wasm: garbage after a declaration (InternalError thrown and caught). */
struct s { int a; } } ;
int g(void) { return 0 }
