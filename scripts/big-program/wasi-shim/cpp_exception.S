# The wasm exception tag of C++ exceptions, `__cpp_exception` (one i32: the thrown object).
# Since LLVM 20 compiled code only refers to it; LLVM's own runtimes define it (libunwind,
# compiler-rt's wasm/__cpp_exception.S), but Debian's wasm32 compiler-rt 22 was built without
# exception handling and so has an empty one, and the LLVM 19 libunwind built here predates it.
# build-big-program adds this object to the libunwind.a it builds.
.globl __cpp_exception
.tagtype __cpp_exception i32
__cpp_exception:
