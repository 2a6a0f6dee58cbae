// A Prometheus histogram of durations with fixed bounds: any thread adds, /metrics reads.
//
// Counts per bucket (the last one past the largest bound) and the total time, all relaxed
// atomics: an add is two increments, cheap enough for every request.
// `render` writes the cumulative buckets, the sum and the count; the count is the buckets' sum as
// read, so the lines agree with each other even while adds go on.
#pragma once

#include <fmt/format.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace broker::node {

class latency_histogram {
  public:
    // Upper bounds in seconds, 100 µs to 1 s: fine where a group commit and a request's wait
    // for one fall (a fraction of a millisecond to a few), coarse above.
    static constexpr std::array<double, 14> bounds_s{0.0001, 0.00025, 0.0005, 0.00075, 0.001,
                                                     0.0015, 0.002,   0.003,  0.005,   0.01,
                                                     0.025,  0.1,     0.25,   1.0};

    // Counts `times` events that each took `took` (a round's requests share its commit).
    void add(std::chrono::steady_clock::duration took, std::uint64_t times = 1) {
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(took).count();
        const double seconds = static_cast<double>(ns) / 1e9;
        std::size_t bucket = 0;
        while (bucket < bounds_s.size() && seconds > bounds_s[bucket]) ++bucket;
        counts_[bucket].fetch_add(times, std::memory_order_relaxed);
        // A clock that stepped back counts as no time, not as 584 years.
        if (ns > 0) {
            sum_ns_.fetch_add(static_cast<std::uint64_t>(ns) * times, std::memory_order_relaxed);
        }
    }

    // Appends `name`'s bucket, sum and count lines; `labels` (`stage="queued"`, say) go before
    // `le` in each. The HELP and TYPE lines are the caller's: one per name, however many labels.
    void render(std::string& out, std::string_view name, std::string_view labels = {}) const {
        const std::string sep = labels.empty() ? "" : ",";
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i < counts_.size(); ++i) {
            cumulative += counts_[i].load(std::memory_order_relaxed);
            const std::string le = i < bounds_s.size() ? fmt::format("{}", bounds_s[i]) : "+Inf";
            out +=
                fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep, le, cumulative);
        }
        const std::string braced = labels.empty() ? "" : fmt::format("{{{}}}", labels);
        out += fmt::format("{}_sum{} {:.6f}\n{}_count{} {}\n", name, braced,
                           static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9, name,
                           braced, cumulative);
    }

  private:
    std::array<std::atomic<std::uint64_t>, bounds_s.size() + 1> counts_{};
    std::atomic<std::uint64_t> sum_ns_{0};
};

}  // namespace broker::node
