// Money and quantities as strong integer types.
//
// `money` counts ticks of 1/10,000 USD, the smallest US equity price increment below $1. There is
// no floating point anywhere near money: parsing and formatting go through decimal strings
// ("1234.5600"), and every multiplication is overflow-checked. Pure values; safe on any thread.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "engine/limits.h"

namespace broker {

struct money {
    std::int64_t ticks = 0;

    friend constexpr auto operator<=>(money, money) = default;
};

// Whole shares.
struct quantity {
    std::int64_t shares = 0;

    friend constexpr auto operator<=>(quantity, quantity) = default;
};

// a + b, or nullopt on overflow.
[[nodiscard]] std::optional<money> checked_add(money a, money b);
// a - b, or nullopt on overflow.
[[nodiscard]] std::optional<money> checked_sub(money a, money b);
// price x quantity, or nullopt on overflow.
[[nodiscard]] std::optional<money> checked_mul(money price, quantity q);
// price x (1 + bps/10,000), rounded up to the next tick so the collar never undershoots.
[[nodiscard]] std::optional<money> apply_collar(money price, std::int64_t bps);

// "1234.5600": always four decimals, a leading '-' for negative values.
[[nodiscard]] std::string format_money(money m);
// Accepts "123", "123.4", "123.4567"; rejects signs, exponents, more than four decimals,
// leading/trailing junk and values above `max`.
[[nodiscard]] std::optional<money> parse_money(std::string_view text, money max);

}  // namespace broker
