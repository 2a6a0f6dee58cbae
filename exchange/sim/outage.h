// Outage windows of exchange-sim (`--outage START_S:DURATION_S`, repeatable): times relative to
// process start during which the exchange is down, either refusing connections or answering 503
// to every request (`--outage-mode`). Pure functions of the elapsed time; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace broker::exchange::sim {

inline constexpr std::int64_t outage_seconds_max = 7 * 24 * 3600;  // a week covers any test

enum class outage_mode { refuse, unavailable };

struct outage_window {
    std::int64_t start_ms = 0;
    std::int64_t duration_ms = 0;
};

// "START_S:DURATION_S": non-negative seconds with up to three decimals, e.g. "5:2.5"; the
// duration must be positive and both at most outage_seconds_max.
[[nodiscard]] std::optional<outage_window> parse_outage(std::string_view text);

// Whether any window covers `elapsed_ms` (start inclusive, end exclusive).
[[nodiscard]] bool down_at(const std::vector<outage_window>& windows, std::int64_t elapsed_ms);

// The first window boundary strictly after `elapsed_ms`, when the state may change next.
[[nodiscard]] std::optional<std::int64_t> next_change(const std::vector<outage_window>& windows,
                                                      std::int64_t elapsed_ms);

}  // namespace broker::exchange::sim
