#include "api/rate_limiter.h"

#include <algorithm>
#include <cmath>
#include <functional>

namespace broker::api {

rate_limiter::rate_limiter(double rate_per_s, double burst)
    : rate_per_ms_(rate_per_s / 1000.0), burst_(std::max(1.0, burst)) {}

std::optional<std::int64_t> rate_limiter::acquire(const std::string& key, std::int64_t now_ms) {
    if (rate_per_ms_ <= 0) return std::nullopt;
    shard& s = shard_[std::hash<std::string>{}(key) % shards_];
    std::lock_guard lock(s.mutex);
    if (s.buckets.size() > sweep_above_) {
        // Forget customers whose buckets have refilled: they would start full anyway.
        std::erase_if(s.buckets, [&](const auto& kv) {
            return kv.second.tokens + static_cast<double>(now_ms - kv.second.at_ms) * rate_per_ms_ >=
                   burst_;
        });
    }
    auto [it, fresh] = s.buckets.try_emplace(key, bucket{burst_, now_ms});
    bucket& b = it->second;
    if (!fresh && now_ms > b.at_ms) {
        b.tokens = std::min(burst_, b.tokens + static_cast<double>(now_ms - b.at_ms) * rate_per_ms_);
        b.at_ms = now_ms;
    }
    if (b.tokens >= 1.0) {
        b.tokens -= 1.0;
        return std::nullopt;
    }
    const double wait_ms = (1.0 - b.tokens) / rate_per_ms_;
    return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(wait_ms / 1000.0)));
}

}  // namespace broker::api
