// brokerd's parsers for a networked exchange's answers (exchange/protocol.h): order status and
// quotes, by hand and as exchange-sim renders them (exchange/sim/protocol.h).
#include "exchange/protocol.h"

#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "engine/limits.h"
#include "engine/time.h"
#include "exchange/sim/protocol.h"

using namespace broker;
using namespace broker::exchange;

namespace {

constexpr timestamp_ms executed_ms = 1'700'000'000'123;  // 2023-11-14T22:13:20.123Z

order sell_order() {
    return order{trade_id{0x2a}, *parse_symbol("MSFT"), side::sell, quantity{5}, money{}};
}

std::string filled_body(std::string_view quantity_json = "5",
                        std::string_view price_json = R"("401.2500")") {
    return std::string(R"({"order_id":"000000000000002a","status":"FILLED","quantity":)") +
           std::string(quantity_json) + R"(,"fill_price":)" + std::string(price_json) +
           R"(,"reason":null,"exec_id":"X-1","executed_at":"2023-11-14T22:13:20.123Z"})";
}

std::string rejected_body(std::string_view reason_json) {
    return std::string(R"({"order_id":"000000000000002a","status":"REJECTED","quantity":5,)") +
           R"("fill_price":null,"reason":)" + std::string(reason_json) +
           R"(,"exec_id":"X-2","executed_at":"2023-11-14T22:13:20.123Z"})";
}

using quote_list = std::vector<std::pair<symbol, money>>;

quote_list quotes(std::initializer_list<std::pair<const char*, std::int64_t>> entries) {
    quote_list out;
    for (const auto& [text, ticks] : entries) out.emplace_back(*parse_symbol(text), money{ticks});
    return out;
}

}  // namespace

TEST_CASE("a FILLED status is a fill of the order that was asked about") {
    const auto x = parse_order_status(sell_order(), filled_body());
    REQUIRE(x.has_value());
    CHECK(x->id == trade_id{0x2a});
    CHECK(x->filled);
    CHECK(x->qty == quantity{5});
    CHECK(x->fill_price == money{401'2500});
    CHECK(x->exec_id == "X-1");
    CHECK(x->executed_at == executed_ms);
}

TEST_CASE("the status's order_id is not what names the trade: the question does") {
    const order other{trade_id{7}, *parse_symbol("MSFT"), side::sell, quantity{5}, money{}};
    const auto x = parse_order_status(other, filled_body());
    REQUIRE(x.has_value());
    CHECK(x->id == trade_id{7});
}

TEST_CASE("a status that is not an execution is no report") {
    const order o = sell_order();
    CHECK_FALSE(parse_order_status(o, R"({"order_id":"000000000000002a","status":"ACCEPTED",)"
                                      R"("quantity":5,"fill_price":null,"reason":null,)"
                                      R"("exec_id":null,"executed_at":null})"));
    CHECK_FALSE(parse_order_status(o, R"({"status":"filled","fill_price":"1.0000"})"));
    CHECK_FALSE(parse_order_status(o, R"({"status":3})"));
    CHECK_FALSE(parse_order_status(o, R"({"quantity":5})"));
    CHECK_FALSE(parse_order_status(o, R"(["FILLED"])"));
    CHECK_FALSE(parse_order_status(o, "not json"));
    CHECK_FALSE(parse_order_status(o, ""));
    CHECK_FALSE(parse_order_status(o, filled_body().substr(0, 40)));
}

TEST_CASE("a fill without a valid fill_price is no report") {
    const order o = sell_order();
    CHECK_FALSE(parse_order_status(o, filled_body("5", "null")));
    CHECK_FALSE(parse_order_status(o, filled_body("5", "401.25")));  // a number, not a string
    CHECK_FALSE(parse_order_status(o, filled_body("5", R"("-1.0000")")));
    CHECK_FALSE(parse_order_status(o, filled_body("5", R"("1.00001")")));
    CHECK_FALSE(parse_order_status(o, filled_body("5", R"("1000000.0001")")));
    CHECK_FALSE(parse_order_status(o, R"({"status":"FILLED","quantity":5})"));
    const auto at_max = parse_order_status(o, filled_body("5", R"("1000000")"));
    REQUIRE(at_max.has_value());
    CHECK(at_max->fill_price == money{limits::price_max_ticks});
}

TEST_CASE("quantity, exec_id and executed_at are taken leniently; the engine checks the fill") {
    const order o = sell_order();
    SUBCASE("a missing or non-integer quantity is the order's") {
        const auto missing = parse_order_status(o, R"({"status":"FILLED","fill_price":"1"})");
        REQUIRE(missing.has_value());
        CHECK(missing->qty == quantity{5});
        CHECK(missing->exec_id.empty());
        CHECK(missing->executed_at == 0);
        const auto text = parse_order_status(o, filled_body(R"("7")"));
        REQUIRE(text.has_value());
        CHECK(text->qty == quantity{5});
    }
    SUBCASE("another quantity is reported as such, for the engine to refuse") {
        const auto x = parse_order_status(o, filled_body("-3"));
        REQUIRE(x.has_value());
        CHECK(x->qty == quantity{-3});
    }
    SUBCASE("a long exec_id is cut to exec_id_max") {
        const std::string long_id(limits::exec_id_max + 10, 'e');
        const auto x = parse_order_status(
            o, R"({"status":"FILLED","fill_price":"1","exec_id":")" + long_id + R"("})");
        REQUIRE(x.has_value());
        CHECK(x->exec_id == long_id.substr(0, limits::exec_id_max));
    }
    SUBCASE("a long exec_id is not cut inside a UTF-8 sequence") {
        // 63 ASCII bytes, then "é" (2 bytes) across the 64-byte bound, then more.
        const std::string head(limits::exec_id_max - 1, 'e');
        const auto x = parse_order_status(
            o, R"({"status":"FILLED","fill_price":"1","exec_id":")" + head + "\u00e9xyz\"}");
        REQUIRE(x.has_value());
        CHECK(x->exec_id == head);
        CHECK(bounded_exec_id(head + "\xc3\xa9") == head);      // 65 bytes: the é goes
        CHECK(bounded_exec_id(head + "e") == head + "e");       // 64 bytes: kept whole
        CHECK(bounded_exec_id(head + "\xe2\x82\xac") == head);  // a 3-byte sequence, cut
        CHECK(bounded_exec_id(std::string(200, 'a')).size() == limits::exec_id_max);
    }
    SUBCASE("a malformed executed_at is 0") {
        const auto x = parse_order_status(
            o, R"({"status":"FILLED","fill_price":"1","executed_at":"yesterday"})");
        REQUIRE(x.has_value());
        CHECK(x->executed_at == 0);
    }
}

TEST_CASE("a REJECTED status keeps an exchange reason the broker knows, else exchange_rejected") {
    const order o = sell_order();
    const auto reason_of = [&](std::string_view json) {
        const auto x = parse_order_status(o, rejected_body(json));
        REQUIRE(x.has_value());
        CHECK_FALSE(x->filled);
        CHECK(x->fill_price == money{});
        return x->reason;
    };
    CHECK(reason_of(R"("limit_not_marketable")") == errc::limit_not_marketable);
    CHECK(reason_of(R"("expired")") == errc::expired);
    CHECK(reason_of(R"("exchange_rejected")") == errc::exchange_rejected);
    CHECK(reason_of(R"("halted")") == errc::exchange_rejected);
    CHECK(reason_of(R"("insufficient_funds")") == errc::exchange_rejected);  // not the exchange's
    CHECK(reason_of("null") == errc::exchange_rejected);
    CHECK(reason_of("5002") == errc::exchange_rejected);
}

TEST_CASE("order states as exchange-sim renders them parse back to what it executed") {
    sim::order_accepted a;
    a.order_id = 0x2a;
    a.symbol = "MSFT";
    a.order_side = side::sell;
    a.quantity = 5;
    a.callback_url = "http://127.0.0.1:9/cb";
    CHECK_FALSE(parse_order_status(sell_order(), sim::order_json(a, nullptr)));

    sim::order_executed fill{0x2a, "XS-000000000000002a", sim::order_outcome::filled,
                             399'0001, "", executed_ms};
    const auto x = parse_order_status(sell_order(), sim::order_json(a, &fill));
    REQUIRE(x.has_value());
    CHECK(x->filled);
    CHECK(x->qty == quantity{5});
    CHECK(x->fill_price == money{399'0001});
    CHECK(x->exec_id == fill.exec_id);
    CHECK(x->executed_at == executed_ms);

    sim::order_executed reject{0x2a, "XS-2", sim::order_outcome::rejected, 0,
                               "limit_not_marketable", executed_ms};
    const auto r = parse_order_status(sell_order(), sim::order_json(a, &reject));
    REQUIRE(r.has_value());
    CHECK_FALSE(r->filled);
    CHECK(r->reason == errc::limit_not_marketable);
    CHECK(r->exec_id == "XS-2");
}

TEST_CASE("quotes are read in order; unusable entries are skipped") {
    const auto q = parse_quotes(
        R"({"quotes":[{"symbol":"AAPL","price":"190.1234","timestamp":"2023-11-14T22:13:20.123Z"},)"
        R"({"symbol":"aapl","price":"1"},{"symbol":"TOOLONGSYM","price":"1"},)"
        R"({"symbol":"MSFT","price":"0"},{"symbol":"MSFT","price":"0.0000"},)"
        R"({"symbol":"MSFT","price":"-1"},{"symbol":"MSFT","price":400},)"
        R"({"symbol":"MSFT"},{"price":"1"},"MSFT",null,[],)"
        R"({"symbol":"BRK.B","price":"1000000"},{"symbol":"MSFT","price":"1000000.0001"},)"
        R"({"symbol":"MSFT","price":"401.5"},{"symbol":"AAPL","price":"191"}]})");
    REQUIRE(q.has_value());
    CHECK(*q == quotes({{"AAPL", 190'1234},
                        {"BRK.B", limits::price_max_ticks},
                        {"MSFT", 401'5000},
                        {"AAPL", 191'0000}}));
}

TEST_CASE("a quotes body that is not {\"quotes\":[...]} is no quote table at all") {
    CHECK_FALSE(parse_quotes(""));
    CHECK_FALSE(parse_quotes("not json"));
    CHECK_FALSE(parse_quotes(R"({"quotes":{}})"));
    CHECK_FALSE(parse_quotes(R"({"quote":[]})"));
    CHECK_FALSE(parse_quotes(R"([{"symbol":"AAPL","price":"1"}])"));
    CHECK_FALSE(parse_quotes(R"({"quotes":[{"symbol":"AAPL","price":"1"}])"));  // truncated
    const auto empty = parse_quotes(R"({"quotes":[]})");
    REQUIRE(empty.has_value());
    CHECK(empty->empty());
}

TEST_CASE("quotes as exchange-sim renders them parse back exactly") {
    const std::string body = R"({"quotes":[)" +
                             sim::quote_json("AAPL", money{190'1234}, executed_ms) + "," +
                             sim::quote_json("BRK.B", money{1}, executed_ms) + "]}";
    const auto q = parse_quotes(body);
    REQUIRE(q.has_value());
    CHECK(*q == quotes({{"AAPL", 190'1234}, {"BRK.B", 1}}));
}
