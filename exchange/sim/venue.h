// The simulated venue's rules: exchange-sim's deterministic core.
//
// Decisions take time, quotes and randomness as arguments and change nothing (`accept`,
// `execute`); state changes only by applying facts (`apply`), the same records the order log
// holds, so that recovery after a crash is `apply` over the log, the same code as the live path.
// No IO, no clock, no Asio.
//
// Rules:
//   - an order executes once, after a latency drawn at acceptance (fixed N, uniform over [0, 2N],
//     or exponential with mean N capped at latency_cap_factor x N);
//   - at execution, in this order: an unlisted symbol is REJECTED "unknown_symbol"; the reject
//     knob (reject_rate) REJECTS with a reason drawn uniformly from reject_reasons; a BUY whose
//     limit is below the quote, or a SELL whose limit is above it, is REJECTED
//     "limit_not_marketable"; anything else is FILLED at the quote;
//   - the exec id is derived from the order id, so every delivery of an execution, before or
//     after a restart, names the same one.
//
// Memory: every order stays in memory (about 300 bytes each) so that status queries and
// idempotent re-posts are answered at any age; orders_max bounds it. That suits tests and demos
// (a million orders is ~300 MB); a long-lived venue would page terminal orders out.
//
// Thread-safety: none; one thread (exchange-sim's io thread) owns a venue.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/money.h"
#include "engine/result.h"
#include "exchange/sim/order_log.h"
#include "exchange/sim/protocol.h"

namespace broker::exchange::sim {

inline constexpr std::size_t orders_max = 2'000'000;
inline constexpr std::int64_t latency_ms_max = 600'000;
inline constexpr std::int64_t latency_cap_factor = 20;  // bounds the exponential's tail

enum class latency_dist { fixed, uniform, exponential };

struct venue_config {
    double reject_rate = 0;
    std::vector<std::string> reject_reasons{"exchange_rejected"};
    std::int64_t latency_ms = 20;
    latency_dist latency = latency_dist::uniform;
};

struct order_entry {
    order_accepted accepted;
    std::optional<order_executed> execution;
    bool acknowledged = false;  // the callback got a 2xx (and that fact is durable)
};

class venue {
  public:
    explicit venue(venue_config config);

    [[nodiscard]] const order_entry* find(std::uint64_t order_id) const;
    [[nodiscard]] std::size_t size() const { return orders_.size(); }

    // Whether a re-post names the same order (symbol, side, quantity) rather than reusing an id
    // for another. The limit price and callback URL of the first post stand.
    [[nodiscard]] static bool same_order(const new_order& o, const order_accepted& existing);

    // The acceptance of a new order at `now`; draws its latency from `rng`.
    [[nodiscard]] order_accepted accept(const new_order& o, timestamp_ms now,
                                        std::mt19937_64& rng) const;

    // The execution of `a` at `now`, given the symbol's quote (nullopt: not listed).
    [[nodiscard]] order_executed execute(const order_accepted& a, std::optional<money> quote,
                                         timestamp_ms now, std::mt19937_64& rng) const;

    // Applies a fact. An error means the facts contradict each other (an order accepted twice,
    // an execution of an unknown order...): the log is corrupt.
    [[nodiscard]] result<ok_t, std::string> apply(const log_record& r);

    // Accepted orders not executed yet, and executed ones whose callback is not acknowledged.
    [[nodiscard]] std::vector<const order_entry*> unexecuted() const;
    [[nodiscard]] std::vector<const order_entry*> unacknowledged() const;

  private:
    [[nodiscard]] std::int64_t draw_latency_ms(std::mt19937_64& rng) const;

    venue_config config_;
    std::unordered_map<std::uint64_t, order_entry> orders_;
};

[[nodiscard]] std::string exec_id_for(std::uint64_t order_id);

}  // namespace broker::exchange::sim
