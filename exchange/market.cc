#include "exchange/market.h"

#include <algorithm>
#include <iterator>

#include "engine/assert.h"

namespace broker::exchange {

namespace {

// Real US tickers with round starting prices of the right order of magnitude; the walk takes
// them from there. Prices are illustrative, not market data.
constexpr listing universe[] = {
    {"AAPL", 190'0000},  {"MSFT", 410'0000}, {"AMZN", 180'0000}, {"GOOGL", 170'0000},
    {"META", 500'0000},  {"NVDA", 120'0000}, {"TSLA", 240'0000}, {"JPM", 200'0000},
    {"V", 280'0000},     {"KO", 62'0000},    {"PEP", 170'0000},  {"WMT", 68'0000},
    {"DIS", 100'0000},   {"NFLX", 650'0000}, {"INTC", 31'0000},  {"AMD", 160'0000},
    {"BAC", 39'0000},    {"XOM", 115'0000},  {"CVX", 155'0000},  {"PFE", 28'0000},
    {"T", 17'0000},      {"F", 12'0000},     {"GE", 160'0000},   {"IBM", 185'0000},
    {"ORCL", 140'0000},  {"CSCO", 48'0000},  {"NKE", 95'0000},   {"MCD", 270'0000},
    {"BRK.B", 410'0000}, {"SPY", 540'0000},
};

}  // namespace

std::span<const listing> market_universe() {
    return universe;
}

market::market() : quotes_(std::size(universe)) {
    for (std::size_t i = 0; i < std::size(universe); ++i) {
        quotes_[i].store(universe[i].start_price_ticks);
        const auto sym = parse_symbol(universe[i].ticker);
        BROKER_ASSERT(sym.has_value());
        index_.emplace(sym->packed, i);
    }
}

std::optional<money> market::quote(symbol s) const {
    const auto it = index_.find(s.packed);
    if (it == index_.end()) return std::nullopt;
    return money{quotes_[it->second].load(std::memory_order_relaxed)};
}

void market::step(std::mt19937_64& rng) {
    std::uniform_int_distribution<std::int64_t> step(-10, 10);
    for (auto& q : quotes_) {
        const std::int64_t p = q.load(std::memory_order_relaxed);
        q.store(std::max<std::int64_t>(100, p + p * step(rng) / 10'000), std::memory_order_relaxed);
    }
}

const char* market::ticker_at(std::size_t i) const {
    BROKER_ASSERT(i < std::size(universe));
    return universe[i].ticker;
}

money market::price_at(std::size_t i) const {
    BROKER_ASSERT(i < quotes_.size());
    return money{quotes_[i].load(std::memory_order_relaxed)};
}

}  // namespace broker::exchange
