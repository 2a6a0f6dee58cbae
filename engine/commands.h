// Commands: verbs asking the engine to change state, and queries reading it.
//
// A command carries everything the engine needs, including outside facts (the exchange quote,
// whether the market is open), so that the engine stays a pure function. The node fills these in
// from its IO threads; the engine thread alone reads or changes state.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/events.h"
#include "engine/limits.h"
#include "engine/money.h"
#include "engine/types.h"

namespace broker {

struct open_customer {
    std::string customer_id;
    money cash;
    std::vector<position_amount> positions;  // any order; the engine sorts and checks duplicates
};

struct place_trade {
    std::string customer_id;
    std::string client_order_id;  // empty: none
    symbol sym;
    side trade_side = side::buy;
    quantity qty;
    std::optional<money> reference_price;  // nullopt: the symbol is not listed
    bool market_open = true;
    std::int64_t collar_bps = limits::collar_bps_default;
    // Idempotency beyond the engine's memory: the trade the store recorded for client_order_id
    // (if any) when the caller looked, and when it looked. The engine remembers client order ids
    // of open trades and of trades closed within limits::client_order_memory_ms; a lookup older
    // than half that window could have missed a trade closed since, so it is refused.
    std::optional<trade_id> known_client_order;
    timestamp_ms client_order_checked_at = 0;
};

// Change the quantity of a trade that is still PLACED (not yet at the exchange).
struct modify_trade {
    std::string customer_id;
    trade_id id;
    quantity qty;
    std::optional<money> reference_price;  // the current quote of the trade's symbol
    std::int64_t collar_bps = limits::collar_bps_default;
};

struct cancel_trade {
    std::string customer_id;
    trade_id id;
};

// An execution report from the exchange (callback or status query), already authenticated.
struct apply_execution {
    trade_id id;
    bool filled = false;  // false: rejected
    quantity qty;         // must equal the trade's quantity when filled (no partial fills)
    money fill_price;
    errc reason = errc::exchange_rejected;  // when rejected
    std::string exec_id;  // at most limits::exec_id_max bytes: see bounded_exec_id
    timestamp_ms executed_at = 0;
};

// An exchange's execution id as brokerd keeps it: whole when it fits limits::exec_id_max bytes,
// else its longest prefix that fits and does not end inside a UTF-8 sequence. Callbacks and
// status queries both keep ids this way, so a report reads the same by either path.
[[nodiscard]] inline std::string bounded_exec_id(std::string_view id) {
    if (id.size() <= limits::exec_id_max) return std::string(id);
    std::size_t end = limits::exec_id_max;
    // Back off over continuation bytes (10xxxxxx) to the start of the sequence that was cut.
    while (end > 0 && (static_cast<unsigned char>(id[end]) & 0xC0) == 0x80) --end;
    return std::string(id.substr(0, end));
}

// Queries change nothing and produce no events.
struct get_trade {
    std::string customer_id;
    trade_id id;
};
struct get_account {
    std::string customer_id;
};
struct list_open_trades {
    std::string customer_id;
};
// The trade a client_order_id names, if the engine still remembers it (open or recently closed).
struct find_client_order {
    std::string customer_id;
    std::string client_order_id;
};

// Trades still PLACED (never sent) that were created before `created_before` become REJECTED
// with reason expired, so that no trade waits forever behind a stuck one (at most `max` per
// command, oldest first).
struct expire_placed {
    timestamp_ms created_before = 0;
    std::size_t max = 10'000;
};
// Query: trades IN_PROGRESS whose last change is older than `updated_before` (the watchdog asks
// the exchange about them), oldest first, at most `max`.
struct find_stuck_trades {
    timestamp_ms updated_before = 0;
    std::size_t max = 10'000;
};

using command = std::variant<open_customer, place_trade, cancel_trade, modify_trade, apply_execution,
                             get_trade, get_account, list_open_trades, find_client_order,
                             expire_placed, find_stuck_trades>;

}  // namespace broker
