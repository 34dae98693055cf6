# CMake platform file for wasm32-wasi (CMake 3.25 has none); used by build-big-program
# through CMAKE_MODULE_PATH when it builds libc++/libc++abi/libunwind.
set(WASI 1)
set(UNIX 1)
set(CMAKE_EXECUTABLE_SUFFIX ".wasm")
set(CMAKE_STATIC_LIBRARY_PREFIX "lib")
set(CMAKE_STATIC_LIBRARY_SUFFIX ".a")
