// The simulated exchange of the deterministic simulator (tests/sim/simulator.h).
//
// It plays the venue of DESIGN.md's exchange protocol, with faults: orders are idempotent by
// order id; each is executed after a random delay at the current market price (a BUY whose limit
// the price has moved past is rejected as limit_not_marketable, and a share of orders is rejected
// outright); execution reports go back as callbacks that are retried until the broker answers ok,
// and may be duplicated, delayed, and delivered out of order. During an outage orders and status
// queries are lost and callbacks wait. A status query (reconcile) of an executed order answers
// with its report; of an order it never saw, it takes the order as new.
//
// It also keeps what an auditor needs: every execution, the venue's net shares and cash (the
// counterparty side of every fill), and a list of violations of invariant 2 it observed (a
// customer's orders must arrive in placement order, one at a time).
//
// Randomness comes from the generator the caller passes in (the simulator's per-step one), so
// that a run is a pure function of its seed. Single-threaded.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/commands.h"
#include "tests/sim/sim_node.h"

namespace broker::sim {

using log_fn = std::function<void(std::string)>;
using counter_fn = std::function<void(const std::string&)>;

struct exchange_knobs {
    double reject_rate = 0.05;  // orders rejected outright
    std::int64_t exec_delay_max_ms = 2'000;
    double slow_rate = 0.05;  // orders that take far longer (the watchdog asks about them)
    std::int64_t callback_delay_max_ms = 1'500;
    double duplicate_rate = 0.10;       // a callback delivered twice in a row
    double late_duplicate_rate = 0.05;  // a second copy of a report, delivered much later
    std::int64_t retry_ms = 2'000;      // an unanswered callback is sent again after this
};

enum class venue_status : std::uint8_t { working, filled, rejected };

struct venue_order {
    sim_order order;
    venue_status status = venue_status::working;
    timestamp_ms execute_at = 0;
    money fill_price;
    errc reason = errc::ok;
    std::string exec_id;
    timestamp_ms executed_at = 0;
};

class sim_exchange {
  public:
    // Delivers a report to the broker; `answered` runs with the broker's answer, if it answers.
    using report_sink =
        std::function<void(const apply_execution& report, std::function<void(errc)> answered)>;

    sim_exchange(std::vector<std::pair<symbol, money>> prices, exchange_knobs knobs, log_fn log,
                 counter_fn count);

    // Market data: the latest price of a listed symbol.
    [[nodiscard]] std::optional<money> quote(symbol s) const;
    void move_prices(std::mt19937_64& rng);
    [[nodiscard]] const std::map<std::uint64_t, money>& prices() const { return prices_; }

    // Faults.
    void start_outage(timestamp_ms until) { outage_until_ = until; }
    [[nodiscard]] bool in_outage(timestamp_ms now) const { return now < outage_until_; }
    void set_knobs(const exchange_knobs& k) { knobs_ = k; }

    // The protocol: POST /v1/orders, and the broker's status query for an order.
    void submit(const sim_order& o, timestamp_ms now, std::mt19937_64& rng);
    void reconcile(const sim_order& o, timestamp_ms now, std::mt19937_64& rng,
                   const report_sink& status_answer);

    // The venue's own clock: executes orders that are due, delivers callbacks that are due.
    void execute_due(timestamp_ms now, std::mt19937_64& rng);
    void deliver_due(timestamp_ms now, std::mt19937_64& rng, const report_sink& send);

    // Nothing working and every report answered.
    [[nodiscard]] bool idle() const;
    [[nodiscard]] std::size_t working() const;
    [[nodiscard]] std::size_t unanswered_callbacks() const;

    // For the auditor.
    [[nodiscard]] const venue_order* find(trade_id id) const;
    [[nodiscard]] const std::map<std::uint64_t, venue_order>& orders() const { return orders_; }
    [[nodiscard]] const std::map<std::uint64_t, std::int64_t>& net_shares() const {
        return net_shares_;
    }
    [[nodiscard]] std::int64_t net_cash_ticks() const { return net_cash_ticks_; }
    [[nodiscard]] const std::vector<std::string>& violations() const { return violations_; }

  private:
    struct callback {
        std::uint64_t serial = 0;
        apply_execution report;
        timestamp_ms due = 0;
        bool answered = false;
    };

    void accept(const sim_order& o, timestamp_ms now, std::mt19937_64& rng);
    void execute(venue_order& v, timestamp_ms now, std::mt19937_64& rng);
    [[nodiscard]] apply_execution report_of(const venue_order& v) const;
    void queue_callback(const apply_execution& r, timestamp_ms due);

    std::map<std::uint64_t, money> prices_;  // by packed symbol
    exchange_knobs knobs_;
    log_fn log_;
    counter_fn count_;
    timestamp_ms outage_until_ = 0;
    std::map<std::uint64_t, venue_order> orders_;         // by trade id
    std::map<std::string, std::uint64_t> last_order_of_;  // customer -> newest order id received
    std::vector<callback> outbox_;
    std::uint64_t next_serial_ = 1;
    std::uint64_t next_exec_ = 1;
    std::map<std::uint64_t, std::int64_t> net_shares_;  // by packed symbol
    std::int64_t net_cash_ticks_ = 0;
    std::vector<std::string> violations_;
};

}  // namespace broker::sim
