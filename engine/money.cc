#include "engine/money.h"


namespace broker {

std::optional<money> checked_add(money a, money b) {
    std::int64_t r = 0;
    if (__builtin_add_overflow(a.ticks, b.ticks, &r)) return std::nullopt;
    return money{r};
}

std::optional<money> checked_sub(money a, money b) {
    std::int64_t r = 0;
    if (__builtin_sub_overflow(a.ticks, b.ticks, &r)) return std::nullopt;
    return money{r};
}

std::optional<money> checked_mul(money price, quantity q) {
    std::int64_t r = 0;
    if (__builtin_mul_overflow(price.ticks, q.shares, &r)) return std::nullopt;
    return money{r};
}

std::optional<money> apply_collar(money price, std::int64_t bps) {
    if (price.ticks < 0 || bps < 0) return std::nullopt;
    std::int64_t scaled = 0;
    if (__builtin_mul_overflow(price.ticks, 10'000 + bps, &scaled)) return std::nullopt;
    // Round up: a collar that rounded down could leave the limit below price x (1 + collar).
    return money{scaled / 10'000 + (scaled % 10'000 != 0 ? 1 : 0)};
}

std::string format_money(money m) {
    const bool negative = m.ticks < 0;
    // Work in unsigned so that the most negative value formats without overflow.
    const std::uint64_t magnitude =
        negative ? ~static_cast<std::uint64_t>(m.ticks) + 1 : static_cast<std::uint64_t>(m.ticks);
    // Digits by hand (every trade JSON and account answer formats money): "-", the whole
    // dollars, ".", then exactly four decimals.
    static_assert(limits::ticks_per_usd == 10'000);
    char buf[32];
    char* end = buf + sizeof buf;
    char* p = end;
    std::uint64_t fraction = magnitude % limits::ticks_per_usd;
    for (int i = 0; i < 4; ++i, fraction /= 10) *--p = static_cast<char>('0' + fraction % 10);
    *--p = '.';
    std::uint64_t whole = magnitude / limits::ticks_per_usd;
    do {
        *--p = static_cast<char>('0' + whole % 10);
        whole /= 10;
    } while (whole != 0);
    if (negative) *--p = '-';
    return std::string(p, end);
}

std::optional<money> parse_money(std::string_view text, money max) {
    if (text.empty() || text.size() > 32) return std::nullopt;
    std::int64_t whole = 0;
    std::size_t i = 0;
    std::size_t whole_digits = 0;
    for (; i < text.size() && text[i] != '.'; ++i) {
        const char c = text[i];
        if (c < '0' || c > '9') return std::nullopt;
        if (__builtin_mul_overflow(whole, 10, &whole)) return std::nullopt;
        if (__builtin_add_overflow(whole, c - '0', &whole)) return std::nullopt;
        ++whole_digits;
    }
    if (whole_digits == 0) return std::nullopt;
    std::int64_t fraction = 0;
    if (i < text.size()) {
        ++i;  // the '.'
        const std::size_t decimals = text.size() - i;
        if (decimals == 0 || decimals > 4) return std::nullopt;
        for (std::size_t d = 0; d < 4; ++d) {
            fraction *= 10;
            if (d < decimals) {
                const char c = text[i + d];
                if (c < '0' || c > '9') return std::nullopt;
                fraction += c - '0';
            }
        }
    }
    std::int64_t ticks = 0;
    if (__builtin_mul_overflow(whole, limits::ticks_per_usd, &ticks)) return std::nullopt;
    if (__builtin_add_overflow(ticks, fraction, &ticks)) return std::nullopt;
    if (ticks > max.ticks) return std::nullopt;
    return money{ticks};
}

}  // namespace broker
