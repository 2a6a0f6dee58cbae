// The simulator's auditor: an independent model of the ledger, rebuilt from the journal as the
// store reads it back, checked against the live state and the simulated exchange's records.
//
// The model knows only what a bank auditor would: opening balances, and the fills the exchange
// made. It shares no code with the engine's `apply`: a customer's cash is opening cash minus the
// BUY fills plus the SELL fills that the broker settled, and every settled fill must be one the
// exchange made, at its price, settled once. Per symbol and for cash, customers plus the
// exchange's net side of every fill must equal the opening totals (fills the exchange made but
// the broker has not settled yet are in flight and counted back).
//
// A failed check throws check_failed; the simulator stops the run there. Single-threaded.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "engine/state.h"
#include "journal/store.h"
#include "tests/sim/sim_exchange.h"

namespace broker::sim {

// What a failing check throws: its kind (see simulator.h) and what it saw.
struct check_failed {
    std::string kind;
    std::string message;
};

[[noreturn]] void fail(const char* kind, std::string message);

class auditor {
  public:
    auditor(const sim_exchange& exchange, counter_fn count);

    // Reads the journal records after the last one audited (checksums and hash chain verified
    // by the store) and checks each event against the model and the exchange.
    void tail(const journal::store& store);
    // The live state, which must equal the journal, against the model; conservation.
    void compare(const state& live) const;
    // After quiescence: every verdict of the exchange was settled the same way by the broker.
    void check_settled() const;

    [[nodiscard]] std::uint64_t audited() const { return audited_; }

  private:
    struct model_trade {
        std::string customer_id;
        symbol sym;
        side trade_side = side::buy;
        std::int64_t qty = 0;
        trade_status status = trade_status::placed;
    };
    struct model_customer {
        std::int64_t cash = 0;
        std::map<std::uint64_t, std::int64_t> shares;  // by packed symbol
        std::set<std::string> coids;
        std::deque<std::uint64_t> open;  // open trades, placement order
    };

    void audit(const event& e);
    void on(const customer_opened& e);
    void on(const trade_placed& e);
    void on(const trade_refused& e);
    void on(const trade_submitted& e);
    void on(const trade_modified& e);
    void on(const trade_filled& e);
    void on(const trade_rejected& e);
    void on(const trade_canceled& e);

    model_trade& trade_of(std::uint64_t id, const char* event_name);
    void new_trade(std::uint64_t id, const std::string& customer_id, const std::string& coid);
    void close(model_trade& t, std::uint64_t id, trade_status status);

    const sim_exchange& exchange_;
    counter_fn count_;
    std::uint64_t audited_ = 0;
    std::map<std::uint64_t, model_trade> trades_;
    std::map<std::string, model_customer> customers_;
    std::map<std::uint64_t, std::int64_t> opening_shares_;
    std::int64_t opening_cash_ = 0;
};

}  // namespace broker::sim
