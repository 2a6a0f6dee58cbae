// Named limits of the trading domain.
//
// Every bound the engine enforces lives here, so that a reviewer can check in one place that no
// product of two bounded values can overflow a 64-bit integer. The static_asserts below are that
// proof; change a limit and the build tells you whether the arithmetic is still safe.
#pragma once

#include <cstdint>
#include <limits>

namespace broker::limits {

// Money is counted in ticks of 1/10,000 USD (see money.h).
inline constexpr std::int64_t ticks_per_usd = 10'000;

// Largest quantity of shares in one order (US exchanges cap single orders far below this).
inline constexpr std::int64_t quantity_max = 1'000'000;
// Highest price per share accepted from a quote or a fill: $1,000,000.0000.
inline constexpr std::int64_t price_max_ticks = 1'000'000 * ticks_per_usd;
// Largest notional (quantity x limit price) of one order: $50,000,000.
inline constexpr std::int64_t notional_max_ticks = 50'000'000 * ticks_per_usd;
// Largest cash balance an administrator may open an account with: $10,000,000,000.
inline constexpr std::int64_t opening_cash_max_ticks = 10'000'000'000 * ticks_per_usd;
// Largest opening position in one symbol.
inline constexpr std::int64_t opening_position_max = 1'000'000'000;
// Price collar added to market buys, in basis points (5% as Robinhood and Wealthsimple use).
inline constexpr std::int64_t collar_bps_default = 500;
inline constexpr std::int64_t collar_bps_max = 5'000;

// Identifiers.
inline constexpr std::size_t customer_id_max = 64;
inline constexpr std::size_t client_order_id_max = 64;
inline constexpr std::size_t symbol_max = 8;  // packed into one 64-bit word
inline constexpr std::size_t reason_max = 64;
// The exchange's execution id; longer ones are refused before they reach the journal.
inline constexpr std::size_t exec_id_max = 64;

// How long the engine remembers the client_order_id of a closed trade. Older ones are found in
// the store by the API before the command reaches the engine (see place_trade).
inline constexpr std::int64_t client_order_memory_ms = 10 * 60 * 1000;

// Per-customer bounds keep one customer from growing memory without limit.
inline constexpr std::size_t open_trades_per_customer_max = 1'000;
// Symbols held (a position, even of 0 shares, stays once opened): checked when an account is
// opened and when a BUY would open a new one, and the bound snapshots are read with.
inline constexpr std::size_t positions_per_customer_max = 1'000;

// quantity x price never overflows, and neither does the collar arithmetic on the price.
static_assert(quantity_max <= std::numeric_limits<std::int64_t>::max() / price_max_ticks);
static_assert(price_max_ticks <= std::numeric_limits<std::int64_t>::max() /
                                     (10'000 + collar_bps_max));
// A cash balance can absorb the proceeds of very many maximal sells before overflowing; the
// engine still checks every addition and rejects one that would overflow.
static_assert(opening_cash_max_ticks < std::numeric_limits<std::int64_t>::max() / 1'000);
static_assert(notional_max_ticks < opening_cash_max_ticks);

}  // namespace broker::limits
