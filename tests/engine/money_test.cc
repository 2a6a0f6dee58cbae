#include <doctest/doctest.h>

#include <random>

#include "engine/money.h"
#include "engine/time.h"
#include "engine/types.h"

using namespace broker;

TEST_CASE("money formats with four decimals and parses strict decimal strings") {
    struct row {
        const char* text;
        std::optional<std::int64_t> ticks;
    };
    const row rows[] = {
        {"0", 0},           {"1", 10'000},         {"1.5", 15'000},       {"1234.5600", 12'345'600},
        {"0.0001", 1},      {"00012.3", 123'000},  {"", std::nullopt},    {"-1", std::nullopt},
        {"+1", std::nullopt}, {"1.", std::nullopt}, {".5", std::nullopt},  {"1.23456", std::nullopt},
        {"1e3", std::nullopt}, {"1,5", std::nullopt}, {" 1", std::nullopt}, {"1 ", std::nullopt},
        {"99999999999999999999", std::nullopt}, {"NaN", std::nullopt},
    };
    for (const auto& r : rows) {
        CAPTURE(r.text);
        const auto parsed = parse_money(r.text, money{limits::opening_cash_max_ticks});
        REQUIRE(parsed.has_value() == r.ticks.has_value());
        if (parsed) CHECK(parsed->ticks == *r.ticks);
    }
    CHECK(format_money(money{12'345'600}) == "1234.5600");
    CHECK(format_money(money{1}) == "0.0001");
    CHECK(format_money(money{-15'000}) == "-1.5000");
    CHECK(format_money(money{std::numeric_limits<std::int64_t>::min()}) ==
          "-922337203685477.5808");
}

TEST_CASE("parse_money refuses values above the given maximum") {
    CHECK(parse_money("100", money{100 * limits::ticks_per_usd}).has_value());
    CHECK_FALSE(parse_money("100.0001", money{100 * limits::ticks_per_usd}).has_value());
}

TEST_CASE("checked arithmetic reports overflow instead of wrapping") {
    const money big{std::numeric_limits<std::int64_t>::max()};
    CHECK_FALSE(checked_add(big, money{1}).has_value());
    CHECK_FALSE(checked_sub(money{std::numeric_limits<std::int64_t>::min()}, money{1}).has_value());
    CHECK_FALSE(checked_mul(big, quantity{2}).has_value());
    CHECK(checked_mul(money{limits::price_max_ticks}, quantity{limits::quantity_max}).has_value());
}

TEST_CASE("the collar rounds up to the next tick") {
    CHECK(apply_collar(money{100'0000}, 500)->ticks == 105'0000);
    CHECK(apply_collar(money{1}, 500)->ticks == 2);  // 1.05 ticks -> 2
    CHECK(apply_collar(money{20}, 500)->ticks == 21);
    CHECK(apply_collar(money{100}, 0)->ticks == 100);
}

TEST_CASE("symbols pack to one word and keep alphabetical order") {
    CHECK(to_string(*parse_symbol("AAPL")) == "AAPL");
    CHECK(to_string(*parse_symbol("BRK.B")) == "BRK.B");
    CHECK(*parse_symbol("AAPL") < *parse_symbol("AAPM"));
    CHECK(*parse_symbol("A") < *parse_symbol("AA"));
    for (const char* bad : {"", "aapl", "TOOLONGSYM", "A B", "A\"", "\xc3\xa9"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_symbol(bad).has_value());
    }
}

TEST_CASE("trade ids render as 16 hex digits that sort like the numbers") {
    CHECK(format_trade_id(trade_id{255}) == "00000000000000ff");
    CHECK(parse_trade_id("00000000000000ff")->value == 255);
    CHECK(format_trade_id(trade_id{9}) < format_trade_id(trade_id{10}));
    CHECK_FALSE(parse_trade_id("00000000000000FF").has_value());
    CHECK_FALSE(parse_trade_id("ff").has_value());
    CHECK_FALSE(parse_trade_id("00000000000000fg").has_value());
}

TEST_CASE("customer and client order ids are validated") {
    CHECK(valid_customer_id("demo-1"));
    CHECK(valid_customer_id(std::string(64, 'a')));
    CHECK_FALSE(valid_customer_id(std::string(65, 'a')));
    CHECK_FALSE(valid_customer_id(""));
    CHECK_FALSE(valid_customer_id("a b"));
    CHECK_FALSE(valid_customer_id("a/b"));
    CHECK(valid_client_order_id("order-1:x"));
    CHECK_FALSE(valid_client_order_id("quote\""));
    CHECK_FALSE(valid_client_order_id(""));
}

TEST_CASE("money and trade ids round trip through their text forms") {
    std::mt19937_64 rng(11);
    for (int i = 0; i < 100'000; ++i) {
        // Spread over every magnitude, not just large values.
        const std::int64_t ticks = static_cast<std::int64_t>(rng() >> (rng() % 63 + 1));
        const std::string text = format_money(money{ticks});
        CAPTURE(ticks);
        CAPTURE(text);
        REQUIRE(parse_money(text, money{std::numeric_limits<std::int64_t>::max()}) ==
                std::optional<money>{money{ticks}});
        const std::string negative = format_money(money{-ticks});
        REQUIRE(negative == (ticks == 0 ? text : "-" + text));
        const trade_id id{rng() | 1};
        const std::string hex = format_trade_id(id);
        REQUIRE(hex.size() == 16);
        REQUIRE(parse_trade_id(hex) == std::optional<trade_id>{id});
    }
}

TEST_CASE("RFC 3339 formatting round trips through parsing across four-digit years") {
    std::mt19937_64 rng(7);
    // 0001-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z
    std::uniform_int_distribution<std::int64_t> when(-62'135'596'800'000, 253'402'300'799'999);
    for (int i = 0; i < 100'000; ++i) {
        const std::int64_t t = when(rng);
        const std::string text = format_rfc3339_ms(t);
        CAPTURE(t);
        CAPTURE(text);
        REQUIRE(text.size() == 24);
        REQUIRE(parse_rfc3339_ms(text) == std::optional<timestamp_ms>{t});
    }
    CHECK(format_rfc3339_ms(253'402'300'799'999) == "9999-12-31T23:59:59.999Z");
    CHECK(format_rfc3339_ms(-62'135'596'800'000) == "0001-01-01T00:00:00.000Z");
}

TEST_CASE("RFC 3339 timestamps round trip with milliseconds in UTC") {
    CHECK(format_rfc3339_ms(0) == "1970-01-01T00:00:00.000Z");
    CHECK(format_rfc3339_ms(1'700'000'000'123) == "2023-11-14T22:13:20.123Z");
    CHECK(format_rfc3339_ms(-1) == "1969-12-31T23:59:59.999Z");
    CHECK(*parse_rfc3339_ms("2023-11-14T22:13:20.123Z") == 1'700'000'000'123);
    CHECK(*parse_rfc3339_ms("2023-11-14T22:13:20Z") == 1'700'000'000'000);
    CHECK(*parse_rfc3339_ms("2023-11-14T22:13:20.123456Z") == 1'700'000'000'123);
    for (const char* bad : {"2023-11-14 22:13:20Z", "2023-02-30T00:00:00Z", "2023-11-14T22:13:20",
                            "2023-11-14T22:13:20+01:00", "2023-11-14T24:00:00Z", "garbage"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_rfc3339_ms(bad).has_value());
    }
}

TEST_CASE("every business outcome has a stable snake_case name") {
    CHECK(to_string(errc::insufficient_funds) == "insufficient_funds");
    CHECK(static_cast<int>(errc::insufficient_funds) == 2001);
    CHECK(parse_errc("limit_not_marketable") == errc::limit_not_marketable);
    CHECK_FALSE(parse_errc("no_such_reason").has_value());
}
