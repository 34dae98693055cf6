/* build-big-program WASI shim: the 2022 wasi-libc's <setjmp.h> cannot be included (WASI preview 1
 * had no setjmp/longjmp, and bits/setjmp.h is missing). Lua compiled as C++ unwinds with C++
 * exceptions and only includes it for a type it then does not use; so this declares jmp_buf and
 * nothing else: a program that calls setjmp or longjmp still fails to build. */
#ifndef BIG_SHIM_SETJMP_H
#define BIG_SHIM_SETJMP_H
typedef struct { unsigned long __unused[8]; } jmp_buf[1];
#endif
