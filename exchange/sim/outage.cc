#include "exchange/sim/outage.h"

namespace broker::exchange::sim {

namespace {

// Seconds with up to three decimals, as milliseconds; no sign, no exponent.
std::optional<std::int64_t> parse_seconds_ms(std::string_view text) {
    if (text.empty()) return std::nullopt;
    const std::size_t dot = text.find('.');
    const std::string_view whole = text.substr(0, dot);
    const std::string_view frac = dot == std::string_view::npos ? "" : text.substr(dot + 1);
    if (whole.empty() || whole.size() > 7 || frac.size() > 3) return std::nullopt;
    if (dot != std::string_view::npos && frac.empty()) return std::nullopt;
    std::int64_t ms = 0;
    for (const char c : whole) {
        if (c < '0' || c > '9') return std::nullopt;
        ms = ms * 10 + (c - '0');
    }
    std::int64_t f = 0;
    for (std::size_t i = 0; i < 3; ++i) {
        const char c = i < frac.size() ? frac[i] : '0';
        if (c < '0' || c > '9') return std::nullopt;
        f = f * 10 + (c - '0');
    }
    if (ms > outage_seconds_max) return std::nullopt;
    return ms * 1000 + f;
}

}  // namespace

std::optional<outage_window> parse_outage(std::string_view text) {
    const std::size_t colon = text.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    const auto start = parse_seconds_ms(text.substr(0, colon));
    const auto duration = parse_seconds_ms(text.substr(colon + 1));
    if (!start || !duration || *duration == 0) return std::nullopt;
    return outage_window{*start, *duration};
}

bool down_at(const std::vector<outage_window>& windows, std::int64_t elapsed_ms) {
    for (const auto& w : windows) {
        if (elapsed_ms >= w.start_ms && elapsed_ms < w.start_ms + w.duration_ms) return true;
    }
    return false;
}

std::optional<std::int64_t> next_change(const std::vector<outage_window>& windows,
                                        std::int64_t elapsed_ms) {
    std::optional<std::int64_t> next;
    for (const auto& w : windows) {
        for (const std::int64_t edge : {w.start_ms, w.start_ms + w.duration_ms}) {
            if (edge > elapsed_ms && (!next || edge < *next)) next = edge;
        }
    }
    return next;
}

}  // namespace broker::exchange::sim
