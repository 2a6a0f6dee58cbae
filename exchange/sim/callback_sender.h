// exchange-sim's callback delivery: at least once, with the venue's faults.
//
// Every owed callback is POSTed, signed afresh at each attempt (exchange/signature.h), until the
// receiver answers 2xx; failed attempts are retried with exponential backoff (50 ms doubling to a
// 5 s cap) with jitter (each wait drawn from [backoff/2, backoff]). On the first 2xx the owner is
// told (`acknowledged`) so that it can log the fact. Fault knobs, drawn per callback when it is
// owed, or per attempt for drops:
//   delay      held back delay_ms before the first attempt;
//   reorder    held until the next callback's first attempt has completed (or reorder_hold_max_ms
//              passed), so it arrives after a callback executed later;
//   duplicate  delivered once more right after its acknowledgement (that answer is ignored);
//   drop       the attempt is silently not sent and counts as a failure (backoff, retry).
// Outages of the listener do not stop callbacks: they travel the other way.
//
// Bounds: one delivery per owed callback (the venue bounds orders); per-host concurrency is the
// http_client's.
//
// Thread-safety: single-threaded; call from the io thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "exchange/sim/http_client.h"
#include "exchange/sim/protocol.h"

namespace broker::exchange::sim {

inline constexpr std::int64_t backoff_initial_ms = 50;
inline constexpr std::int64_t backoff_max_ms = 5000;
inline constexpr std::int64_t reorder_hold_max_ms = 2000;

struct callback_faults {
    double duplicate_rate = 0;
    double delay_rate = 0;
    std::int64_t delay_ms = 1000;
    double reorder_rate = 0;
    double drop_rate = 0;
};

struct callback_stats {
    std::uint64_t attempts = 0;  // sent (drops not included)
    std::uint64_t failures = 0;  // non-2xx, no answer, or dropped
    std::uint64_t dropped = 0;
    std::uint64_t acknowledged = 0;  // first 2xx of a delivery
    std::uint64_t duplicates = 0;
};

class callback_sender {
  public:
    // `now_s` gives Unix seconds for signatures (injected so that tests can fix the clock).
    callback_sender(boost::asio::io_context& io, http_client& client, std::string secret,
                    callback_faults faults, std::uint64_t seed,
                    std::function<void(std::uint64_t order_id)> acknowledged,
                    std::function<std::int64_t()> now_s);
    ~callback_sender();
    callback_sender(const callback_sender&) = delete;
    callback_sender& operator=(const callback_sender&) = delete;

    // Owes `body` for `order_id` to `to` until a 2xx. Owing an order already owed is a no-op.
    void owe(std::uint64_t order_id, callback_target to, std::string body);

    [[nodiscard]] std::size_t owed() const { return owed_.size(); }
    [[nodiscard]] const callback_stats& stats() const { return stats_; }

    void stop();

  private:
    struct delivery;

    void first_attempt(const std::shared_ptr<delivery>& d);
    void attempt(const std::shared_ptr<delivery>& d);
    void on_result(const std::shared_ptr<delivery>& d, unsigned status);
    void release_held();
    [[nodiscard]] bool draw(double rate);

    boost::asio::io_context& io_;
    http_client& client_;
    std::string secret_;
    callback_faults faults_;
    std::mt19937_64 rng_;
    std::function<void(std::uint64_t)> acknowledged_;
    std::function<std::int64_t()> now_s_;
    std::unordered_map<std::uint64_t, std::shared_ptr<delivery>> owed_;
    std::vector<std::shared_ptr<delivery>> held_;  // reordered, waiting for the next callback
    callback_stats stats_;
    bool stopped_ = false;
};

}  // namespace broker::exchange::sim
