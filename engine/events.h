// Events: past-tense facts, the only thing the journal stores.
//
// Each event type has a stable numeric code (event_type); a code is never reused or renumbered,
// because journals written years ago must still decode. Adding a field to an event means a new
// record version in journal/codec, not a silent change here. Plain values; safe on any thread.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "engine/money.h"
#include "engine/types.h"

namespace broker {

enum class event_type : std::uint16_t {
    customer_opened = 1,
    trade_placed = 2,
    trade_refused = 3,
    trade_submitted = 4,
    trade_filled = 5,
    trade_rejected = 6,
    trade_canceled = 7,
    trade_modified = 8,
};

struct position_amount {
    symbol sym;
    quantity qty;
    friend bool operator==(const position_amount&, const position_amount&) = default;
};

// An administrator opened a funded account (deposits happen outside the broker).
struct customer_opened {
    std::string customer_id;
    money cash;
    std::vector<position_amount> positions;  // sorted by symbol, no duplicates
    friend bool operator==(const customer_opened&, const customer_opened&) = default;
};

// A trade passed the risk checks; its reservation is taken from buying power (BUY: cash,
// SELL: shares).
struct trade_placed {
    trade_id id;
    std::string customer_id;
    std::string client_order_id;  // empty when the client gave none
    symbol sym;
    side trade_side = side::buy;
    quantity qty;
    money reference_price;  // the exchange quote at placement
    money limit_price;      // BUY: reference x (1 + collar); SELL: 0 (no floor)
    money reserved_cash;    // BUY: qty x limit_price; SELL: 0
    friend bool operator==(const trade_placed&, const trade_placed&) = default;
};

// A placement that failed its checks, journaled so that the audit trail has every request that
// became a trade. Terminal at once (REJECTED); it reserves nothing.
struct trade_refused {
    trade_id id;
    std::string customer_id;
    std::string client_order_id;
    symbol sym;
    side trade_side = side::buy;
    quantity qty;
    money reference_price;
    errc reason = errc::ok;
    friend bool operator==(const trade_refused&, const trade_refused&) = default;
};

// The trade became its customer's one trade at the exchange (PLACED -> IN_PROGRESS). The order is
// sent only after this event is durable.
struct trade_submitted {
    trade_id id;
    friend bool operator==(const trade_submitted&, const trade_submitted&) = default;
};

// The exchange executed the whole quantity at fill_price (<= limit_price for a BUY).
struct trade_filled {
    trade_id id;
    money fill_price;
    std::string exec_id;
    timestamp_ms executed_at = 0;
    friend bool operator==(const trade_filled&, const trade_filled&) = default;
};

// The exchange rejected the order, or it expired; the reservation is released.
struct trade_rejected {
    trade_id id;
    errc reason = errc::exchange_rejected;
    std::string exec_id;
    friend bool operator==(const trade_rejected&, const trade_rejected&) = default;
};

// The customer canceled the trade while it was still PLACED; the reservation is released.
struct trade_canceled {
    trade_id id;
    friend bool operator==(const trade_canceled&, const trade_canceled&) = default;
};

// The customer changed the quantity of a trade still PLACED; the reservation was re-computed at
// the quote of that moment (reference_price) and replaces the old one.
struct trade_modified {
    trade_id id;
    quantity qty;
    money reference_price;
    money limit_price;
    money reserved_cash;
    friend bool operator==(const trade_modified&, const trade_modified&) = default;
};

using event_body = std::variant<customer_opened, trade_placed, trade_refused, trade_submitted,
                                trade_filled, trade_rejected, trade_canceled, trade_modified>;

[[nodiscard]] event_type type_of(const event_body& body);
[[nodiscard]] std::string_view to_string(event_type t);

// An event as journaled: sequence numbers start at 1 and have no gaps.
struct event {
    std::uint64_t sequence = 0;
    timestamp_ms at = 0;
    event_body body;
    friend bool operator==(const event&, const event&) = default;
};

}  // namespace broker
