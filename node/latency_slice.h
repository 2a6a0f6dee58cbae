// Short scheduler slices for the threads an acknowledgement waits on.
//
// Linux's fair scheduler (EEVDF, 6.6 and later) lets a thread that wakes up preempt the running
// one only when its deadline is earlier, and a deadline is its wake-up time plus its slice: by
// default 0.75 ms times 1 + log2(cores), about 1.5 ms on two cores (1.4 ms on the machine
// docs/performance.md describes). An engine or HTTP thread woken while a flush, a compaction or a
// client holds the core could then wait up to that long, and every request crosses several such
// wake-ups. Since Linux 6.12 a SCHED_OTHER thread may ask for a shorter slice
// (sched_attr.sched_runtime, 0.1 to 100 ms); it then runs sooner after waking, in shorter turns,
// with the same share of the CPU. Older kernels ignore the field.
#pragma once

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include <spdlog/spdlog.h>

namespace broker::node {

inline constexpr std::uint64_t latency_slice_ns = 100'000;

// The kernel's struct sched_attr, first version (SCHED_ATTR_SIZE_VER0); its header clashes with
// glibc's <sched.h>, and glibc 2.36 has no wrapper for sched_setattr.
struct sched_attr_v0 {
    std::uint32_t size;
    std::uint32_t sched_policy;
    std::uint64_t sched_flags;
    std::int32_t sched_nice;
    std::uint32_t sched_priority;
    std::uint64_t sched_runtime;
    std::uint64_t sched_deadline;
    std::uint64_t sched_period;
};
static_assert(sizeof(sched_attr_v0) == 48);

// Asks for latency_slice_ns as the calling thread's slice, keeping its policy and nice value.
inline void use_short_slice() {
    sched_attr_v0 attr{};
    attr.size = sizeof attr;
    attr.sched_policy = SCHED_OTHER;
    errno = 0;
    const int nice = getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)));
    attr.sched_nice = errno == 0 ? nice : 0;
    attr.sched_runtime = latency_slice_ns;
    if (syscall(SYS_sched_setattr, 0, &attr, 0) != 0) {
        spdlog::debug("cannot shorten this thread's scheduler slice: {}", std::strerror(errno));
    }
}

}  // namespace broker::node
