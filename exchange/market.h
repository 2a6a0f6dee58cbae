// The simulated market: a fixed universe of real US tickers whose prices follow a random walk.
//
// Shared by the embedded simulator (simulator.cc) and the `exchange-sim` server (sim/), so that
// both list the same symbols at the same starting prices and move them the same way. It is not
// market data: prices are illustrative and the walk is a toy.
//
// Thread-safety: `quote`, `price_at` and the listing accessors may be called from any thread at
// any time; `step` must be called by one thread at a time (the owner's timer thread). Prices are
// relaxed atomics: a reader sees some recent price, which is all a quote promises.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/money.h"
#include "engine/types.h"

namespace broker::exchange {

struct listing {
    const char* ticker;
    std::int64_t start_price_ticks;
};

// Every listed ticker with its starting price, in a fixed order.
[[nodiscard]] std::span<const listing> market_universe();

class market {
  public:
    market();
    market(const market&) = delete;
    market& operator=(const market&) = delete;

    // The latest price of a listed symbol; nullopt when it is not listed.
    [[nodiscard]] std::optional<money> quote(symbol s) const;

    // One step of the walk for every listing: up to +/-0.1% in integer ticks, never below one
    // cent. Draws exactly one value from `rng` per listing, in universe order.
    void step(std::mt19937_64& rng);

    [[nodiscard]] std::size_t size() const { return quotes_.size(); }
    [[nodiscard]] const char* ticker_at(std::size_t i) const;
    [[nodiscard]] money price_at(std::size_t i) const;

  private:
    std::vector<std::atomic<std::int64_t>> quotes_;
    std::unordered_map<std::uint64_t, std::size_t> index_;  // const after construction
};

}  // namespace broker::exchange
