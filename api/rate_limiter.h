// Per-customer token buckets: `rate_per_s` requests per second on average, bursts up to `burst`.
//
// One client cannot starve others: past its budget it gets 429 with the seconds until a token is
// back. Buckets of idle customers are dropped once refilled, so memory follows the active set.
// Thread-safe (sharded locks); time comes in as an argument.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace broker::api {

class rate_limiter {
public:
    // rate_per_s == 0 disables limiting.
    rate_limiter(double rate_per_s, double burst);

    // nullopt: allowed (a token was taken). Otherwise: whole seconds to wait (>= 1).
    [[nodiscard]] std::optional<std::int64_t> acquire(const std::string& key, std::int64_t now_ms);

private:
    struct bucket {
        double tokens = 0;
        std::int64_t at_ms = 0;
    };
    struct shard {
        std::mutex mutex;
        std::unordered_map<std::string, bucket> buckets;
    };
    static constexpr std::size_t shards_ = 16;
    static constexpr std::size_t sweep_above_ = 4096;  // buckets per shard before idle ones go

    double rate_per_ms_;
    double burst_;
    std::array<shard, shards_> shard_;
};

}  // namespace broker::api
