// Identifiers and enumerations of the trading domain.
//
// Strong types for ids so that a trade id cannot be passed where a sequence is expected, and one
// enum of business outcomes (`errc`) grouped in numeric ranges, which the API maps to HTTP statuses
// in a single table. Values here are persisted in the journal: never renumber an enumerator.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "engine/limits.h"

namespace broker {

// Milliseconds since the Unix epoch, UTC. The engine never reads a clock; time comes in commands.
using timestamp_ms = std::int64_t;

// Server-generated trade id: a per-node counter, so ids sort by creation order. Rendered as 16
// lowercase hex digits so that string order equals numeric order.
struct trade_id {
    std::uint64_t value = 0;
    friend constexpr auto operator<=>(trade_id, trade_id) = default;
};
[[nodiscard]] std::string format_trade_id(trade_id id);
[[nodiscard]] std::optional<trade_id> parse_trade_id(std::string_view text);

// Customer ids are the JWT `sub`: 1..64 characters of [A-Za-z0-9._-].
[[nodiscard]] bool valid_customer_id(std::string_view id);
// Client order ids: 1..64 printable ASCII characters without quotes or backslashes.
[[nodiscard]] bool valid_client_order_id(std::string_view id);

// A ticker of 1..8 characters of [A-Z0-9.], packed into one word so that positions maps key on an
// integer. Packing is big-endian by character, so comparing words compares tickers alphabetically.
struct symbol {
    std::uint64_t packed = 0;
    friend constexpr auto operator<=>(symbol, symbol) = default;
};
[[nodiscard]] std::optional<symbol> parse_symbol(std::string_view text);
// Whether `s` is the packed form of a valid ticker (what parse_symbol can return); for decoders.
[[nodiscard]] bool valid_symbol(symbol s);
[[nodiscard]] std::string to_string(symbol s);

enum class side : std::uint8_t { buy = 1, sell = 2 };
[[nodiscard]] std::string_view to_string(side s);
[[nodiscard]] std::optional<side> parse_side(std::string_view text);

enum class trade_status : std::uint8_t {
    placed = 1,
    in_progress = 2,
    filled = 3,
    rejected = 4,
    canceled = 5,
};
[[nodiscard]] std::string_view to_string(trade_status s);
[[nodiscard]] constexpr bool is_terminal(trade_status s) {
    return s == trade_status::filled || s == trade_status::rejected ||
           s == trade_status::canceled;
}

// Business outcomes, grouped by range as exchange-core does. The API maps them to HTTP statuses in
// one table (api/errors). Persisted as reasons of rejected trades: never renumber.
enum class errc : std::uint16_t {
    ok = 0,
    // 1xxx: the request itself is invalid.
    invalid_quantity = 1001,
    invalid_symbol = 1002,
    unknown_symbol = 1003,
    invalid_price = 1004,
    invalid_customer_id = 1005,
    invalid_client_order_id = 1006,
    invalid_amount = 1007,
    notional_too_large = 1008,
    // 2xxx: risk checks at placement (become REJECTED trades).
    insufficient_funds = 2001,
    insufficient_shares = 2002,
    market_closed = 2003,
    too_many_open_trades = 2004,
    too_many_positions = 2005,
    // 3xxx: lookups.
    customer_not_found = 3001,
    trade_not_found = 3002,
    // 4xxx: conflicts with current state.
    customer_exists_different = 4001,
    trade_not_cancelable = 4002,
    trade_not_in_progress = 4003,
    fill_mismatch = 4004,
    trade_not_modifiable = 4005,
    client_order_id_conflict = 4006,
    stale_request = 4007,
    // 5xxx: outcomes reported by the exchange.
    exchange_rejected = 5001,
    limit_not_marketable = 5002,
    expired = 5003,
};
// snake_case name of an outcome, e.g. "insufficient_funds"; the API's error code and the reason
// recorded on rejected trades.
[[nodiscard]] std::string_view to_string(errc e);
[[nodiscard]] std::optional<errc> parse_errc(std::string_view text);

}  // namespace broker
