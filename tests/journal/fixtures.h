// Hand-built event streams for the journal tests. Every stream here is legal for `apply`:
// sequences from 1, trade ids in placement order, submit before fill, fills within reservations.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/events.h"
#include "engine/state.h"
#include "journal/store.h"

namespace broker::journal::testing {

inline symbol sym(std::string_view text) {
    return parse_symbol(text).value();
}

inline money usd(std::int64_t dollars) {
    return money{dollars * limits::ticks_per_usd};
}

// Numbers events and stamps them with a clock that moves 7 ms per event.
class stream {
  public:
    stream& add(event_body body) {
        now_ += 7;
        events_.push_back(event{events_.size() + 1, now_, std::move(body)});
        return *this;
    }
    [[nodiscard]] const std::vector<event>& events() const { return events_; }
    [[nodiscard]] std::uint64_t next_trade_id() { return next_trade_id_++; }

    // A BUY of `qty` at `price` (5% collar), submitted and filled at `price`: 3 events.
    void filled_buy(const std::string& customer, std::string_view ticker, std::int64_t qty,
                    money price) {
        const trade_id id{next_trade_id()};
        const money limit{price.ticks + price.ticks / 20};
        add(trade_placed{id, customer, "", sym(ticker), side::buy, quantity{qty}, price, limit,
                         money{limit.ticks * qty}});
        add(trade_submitted{id});
        add(trade_filled{id, price, "X-" + std::to_string(id.value), now_});
    }

  private:
    std::vector<event> events_;
    timestamp_ms now_ = 1'700'000'000'000;
    std::uint64_t next_trade_id_ = 1;
};

// One of every event type, plus trades left open so that the state has reservations in it.
inline std::vector<event> sample_events() {
    stream s;
    s.add(customer_opened{
        "alice", usd(1'000'000), {{sym("AAPL"), quantity{100}}, {sym("MSFT"), quantity{50}}}});
    s.add(customer_opened{"bob", usd(500), {}});
    s.filled_buy("alice", "AAPL", 10, usd(150));  // trade 1
    const trade_id sell{s.next_trade_id()};       // trade 2
    s.add(trade_placed{sell, "alice", "c-2", sym("MSFT"), side::sell, quantity{20}, usd(300),
                       money{}, money{}});
    s.add(trade_submitted{sell});
    s.add(trade_rejected{sell, errc::limit_not_marketable, "X-2"});
    s.add(trade_refused{trade_id{s.next_trade_id()}, "bob", "c-3", sym("AAPL"), side::sell,
                        quantity{5}, usd(150), errc::insufficient_shares});  // trade 3
    const trade_id canceled{s.next_trade_id()};                              // trade 4
    s.add(trade_placed{canceled, "bob", "", sym("AAPL"), side::buy, quantity{1}, usd(150),
                       money{1'575'000}, money{1'575'000}});
    s.add(trade_canceled{canceled});
    const trade_id open_sell{s.next_trade_id()};  // trade 5, left at the exchange
    s.add(trade_placed{open_sell, "alice", "c-5", sym("AAPL"), side::sell, quantity{5}, usd(151),
                       money{}, money{}});
    s.add(trade_submitted{open_sell});
    const trade_id queued{s.next_trade_id()};  // trade 6, queued behind trade 5
    s.add(trade_placed{queued, "alice", "c-6", sym("MSFT"), side::buy, quantity{2}, usd(300),
                       money{3'150'000}, money{6'300'000}});
    return s.events();
}

// A longer stream: `customers` accounts, each buying `rounds` times.
inline std::vector<event> busy_events(int customers, int rounds) {
    stream s;
    for (int c = 0; c < customers; ++c) {
        s.add(customer_opened{"c" + std::to_string(c), usd(1'000'000), {}});
    }
    for (int r = 0; r < rounds; ++r) {
        for (int c = 0; c < customers; ++c) {
            s.filled_buy("c" + std::to_string(c), r % 2 == 0 ? "AAPL" : "BRK.B", 1 + r,
                         usd(10 + c));
        }
    }
    return s.events();
}

// Applies events as the live path does, collecting every trade change (for the store's
// indexes) and the trades that became terminal.
struct live_state {
    state st;
    std::vector<indexed_change> changes;
    std::vector<trade> closed;

    void apply_all(const std::vector<event>& events) {
        for (const event& e : events) {
            const bool created = std::holds_alternative<trade_placed>(e.body) ||
                                 std::holds_alternative<trade_refused>(e.body);
            auto change = apply(st, e);
            if (!change) continue;
            if (is_terminal(change->snapshot.status)) closed.push_back(change->snapshot);
            changes.push_back(index_change(st, *change, created));
        }
    }
};

}  // namespace broker::journal::testing
