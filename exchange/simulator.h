// The embedded SIMULATED exchange: a stand-in for a real venue, for demos and tests.
//
// It is not a real exchange and says so in its name. It lists a fixed universe of real US tickers
// whose prices follow a random walk, fills collared market orders at the current price after a
// configurable latency (rejecting a BUY whose limit the price has moved past), rejects a
// configurable share of orders, and delivers every execution report at least once, with
// configurable duplicates. Being in the broker's process, it hands its reports over as typed
// apply_execution commands (no JSON, no signature: nothing crosses a wire); the networked
// exchange-sim (exchange/sim/) is the one that speaks the signed HTTP protocol.
// Orders live in memory only: after a restart the broker re-sends what is in flight, and the
// simulator executes it then (re-sends are idempotent by order id while it runs).
//
// Orders execute on whole-millisecond ticks, and the reports of one tick are handed over together.
// Submissions wait in an inbox that the simulator's thread takes when it next looks (at the next
// due millisecond, or at once when that would be too late for them), so a busy broker does not
// wake it once per commit; the delay to execution counts from the millisecond an order arrived in.
//
// Thread-safety: one internal thread owns the order state (the set of orders owed a report is
// also touched, under a mutex, by the broker's thread that settles them); the public members may
// be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "exchange/gateway.h"

namespace broker::exchange {

struct simulator_config {
    std::int64_t latency_ms = 20;        // mean delay from order to execution
    double reject_rate = 0.02;           // share of orders the venue rejects
    double duplicate_rate = 0.05;        // share of reports delivered a second time
    std::int64_t quote_interval_ms = 100;  // how often prices move
    std::uint64_t seed = 1;
};

[[nodiscard]] std::unique_ptr<gateway> make_simulated_exchange(const simulator_config& config,
                                                               report_sink sink);

// The listed universe, for documentation and tests: "AAPL", "MSFT", ...
[[nodiscard]] std::vector<std::string> simulated_symbols();

}  // namespace broker::exchange
