// Engine state and `apply`: the single place where events change state.
//
// Live processing, start-up recovery, broker-replay and (later) the standby all rebuild state by
// calling `apply` on journaled events, so they cannot drift from each other. Memory holds open
// state only: customers and their non-terminal trades. A trade that reaches a terminal status is
// handed back to the caller by `apply` (to be stored) and removed.
//
// Each customer is an actor: its open trades form a FIFO (`fifo`), and only the oldest one may be
// at the exchange. The whole state is owned by the engine thread; nothing here locks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/events.h"
#include "engine/money.h"
#include "engine/types.h"

namespace broker {

struct position {
    symbol sym;
    std::int64_t shares = 0;
    std::int64_t reserved = 0;  // shares held by open SELL trades
};

struct trade {
    trade_id id;
    std::string customer_id;
    std::string client_order_id;
    symbol sym;
    side trade_side = side::buy;
    quantity qty;
    quantity placed_qty;  // as placed: a change of quantity (PATCH) moves qty, not this
    trade_status status = trade_status::placed;
    errc reason = errc::ok;
    timestamp_ms created_at = 0;
    timestamp_ms updated_at = 0;
    money reference_price;
    money limit_price;
    money reserved_cash;
    std::optional<money> fill_price;
    timestamp_ms filled_at = 0;
    std::string exec_id;
    friend bool operator==(const trade&, const trade&) = default;
};

// A client_order_id the engine remembers for idempotent placement.
struct client_order {
    std::string client_order_id;
    trade_id id;
    timestamp_ms closed_at = 0;  // 0 while the trade is open
    friend bool operator==(const client_order&, const client_order&) = default;
};

struct customer {
    std::string id;
    money cash;
    money reserved_cash;
    std::vector<position> positions;  // sorted by symbol
    std::vector<trade_id> fifo;       // open trades, oldest first; fifo[0] may be at the exchange
    std::uint64_t update_sequence = 0;  // per-customer count of trade status changes
    // Client order ids of open trades and of trades closed within limits::client_order_memory_ms.
    std::vector<client_order> client_orders;
    // What the account was opened with, so that a repeated open can be told apart from a
    // conflicting one.
    money opening_cash;
    std::vector<position_amount> opening_positions;

    [[nodiscard]] money buying_power() const { return money{cash.ticks - reserved_cash.ticks}; }
    [[nodiscard]] const position* find_position(symbol s) const;
    position& position_for(symbol s);  // creates an empty one when missing
    [[nodiscard]] const client_order* find_client_order(std::string_view client_order_id) const;
};

struct state {
    std::unordered_map<std::string, customer> customers;
    std::unordered_map<std::uint64_t, trade> open_trades;
    std::uint64_t last_sequence = 0;  // of the last applied event
    std::uint64_t next_trade_id = 1;
    std::uint64_t trades_total = 0;  // every trade ever created, terminal or not

    [[nodiscard]] const customer* find_customer(std::string_view id) const;
    [[nodiscard]] const trade* find_open_trade(trade_id id) const;
};

// What applying one event did to a trade, for the caller to publish or store.
struct trade_change {
    trade snapshot;              // the trade right after the event
    std::uint64_t update_sequence = 0;  // the customer's update sequence of this change
};

// Applies one journaled event. The event must be legal in `s` (it was decided on this state, or
// read back from a verified journal); an illegal one is a programmer error and asserts. Returns the
// trade the event changed, if any; a trade that became terminal is no longer in `s` afterwards.
std::optional<trade_change> apply(state& s, const event& e);

// Checks every invariant of DESIGN.md over the whole state: non-negative cash and positions,
// reservations equal to the sum over open trades, at most one trade at the exchange per customer,
// FIFO order. Returns a description of the first violation. O(size of state).
[[nodiscard]] std::optional<std::string> check_invariants(const state& s);

// The canonical byte encoding of the state: customers by id, trades by id, all integers in
// big-endian. Equal states give equal bytes; hashing it gives the state digest.
void write_canonical(const state& s, std::string& out);

}  // namespace broker
