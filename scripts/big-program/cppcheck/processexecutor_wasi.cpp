// build-big-program: replaces cppcheck's cli/processexecutor.cpp on WASI. The original checks
// files in parallel (-j N) in fork()ed children; WASI preview 1 has no processes. With -j 1 (the
// default) cppcheck never constructs a ProcessExecutor, so this only refuses -j N > 1.
#include "processexecutor.h"

#include "color.h"
#include "errorlogger.h"

ProcessExecutor::ProcessExecutor(const std::map<std::string, std::size_t> &files, Settings &settings, ErrorLogger &errorLogger)
    : Executor(files, settings, errorLogger)
{}

ProcessExecutor::~ProcessExecutor() {}

unsigned int ProcessExecutor::check()
{
    mErrorLogger.reportOut("cppcheck: -j N > 1 is not available on WASI (no processes); use -j 1", Color::FgRed);
    return 1;
}
