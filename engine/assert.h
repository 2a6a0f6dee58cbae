// Always-on assertions for invariants.
//
// BROKER_ASSERT stays enabled in release builds: a broken invariant (a negative balance, an
// illegal state transition) must stop the process before it can be journaled or acknowledged,
// never pass silently. Use it for programmer errors and invariants only; bad input from the
// outside is reported with an error value, never with an assertion.
#pragma once

#include <errno.h>  // program_invocation_short_name (glibc)

#include <cstdio>
#include <cstdlib>

namespace broker::detail {
[[noreturn]] inline void assert_failed(const char* expr, const char* file, int line) {
    // Named after the binary that failed: the engine's code runs in more than brokerd.
    std::fprintf(stderr, "%s: assertion failed: %s at %s:%d\n", program_invocation_short_name, expr,
                 file, line);
    std::fflush(stderr);
    std::abort();
}
}  // namespace broker::detail

#define BROKER_ASSERT(expr)                                                     \
    do {                                                                        \
        if (!(expr)) [[unlikely]]                                               \
            ::broker::detail::assert_failed(#expr, __FILE__, __LINE__);         \
    } while (0)
