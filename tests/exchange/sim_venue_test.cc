// exchange-sim's venue rules, with time, quotes and randomness injected.
#include <doctest/doctest.h>

#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "exchange/sim/venue.h"

using namespace broker;
using namespace broker::exchange::sim;

namespace {

constexpr timestamp_ms t0 = 1'700'000'000'000;

new_order order(std::uint64_t id, side s, std::int64_t qty, std::int64_t limit_ticks = 0,
                std::string sym = "AAPL") {
    return new_order{id,  std::move(sym), s,
                     qty, limit_ticks,    "http://127.0.0.1:9/v1/exchange/callbacks"};
}

venue_config config(double reject_rate = 0,
                    std::vector<std::string> reasons = {"exchange_rejected"}) {
    venue_config c;
    c.reject_rate = reject_rate;
    c.reject_reasons = std::move(reasons);
    c.latency_ms = 20;
    c.latency = latency_dist::fixed;
    return c;
}

const money quote{190'1234};  // $190.1234

}  // namespace

TEST_CASE("execution follows the venue's rules for each kind of order") {
    struct row {
        const char* what;
        side s;
        std::int64_t limit;
        std::optional<money> quote;
        order_outcome outcome;
        const char* reason;
    };
    const row rows[] = {
        {"market buy", side::buy, 0, quote, order_outcome::filled, ""},
        {"market sell", side::sell, 0, quote, order_outcome::filled, ""},
        {"buy limit above the quote", side::buy, 200'0000, quote, order_outcome::filled, ""},
        {"buy limit at the quote", side::buy, quote.ticks, quote, order_outcome::filled, ""},
        {"buy limit below the quote", side::buy, 190'0000, quote, order_outcome::rejected,
         "limit_not_marketable"},
        {"sell limit below the quote", side::sell, 180'0000, quote, order_outcome::filled, ""},
        {"sell limit above the quote", side::sell, 191'0000, quote, order_outcome::rejected,
         "limit_not_marketable"},
        {"unlisted symbol", side::buy, 0, std::nullopt, order_outcome::rejected, "unknown_symbol"},
    };
    for (const auto& r : rows) {
        CAPTURE(r.what);
        venue v(config());
        std::mt19937_64 rng(1);
        const auto a = v.accept(order(0x10, r.s, 7, r.limit), t0, rng);
        const auto e = v.execute(a, r.quote, t0 + 20, rng);
        CHECK(e.outcome == r.outcome);
        CHECK(e.reason == r.reason);
        CHECK(e.order_id == 0x10);
        CHECK(e.executed_at == t0 + 20);
        CHECK(e.fill_price_ticks == (r.outcome == order_outcome::filled ? quote.ticks : 0));
    }
}

TEST_CASE("the reject knob rejects its share of orders with the configured reasons") {
    venue v(config(0.3, {"halted", "price_band"}));
    std::mt19937_64 rng(42);
    std::map<std::string, int> reasons;
    int rejected = 0;
    constexpr int n = 10'000;
    for (int i = 0; i < n; ++i) {
        const auto a = v.accept(order(static_cast<std::uint64_t>(i + 1), side::buy, 1), t0, rng);
        const auto e = v.execute(a, quote, t0, rng);
        if (e.outcome == order_outcome::rejected) {
            ++rejected;
            ++reasons[e.reason];
        }
    }
    CHECK(rejected > n * 27 / 100);
    CHECK(rejected < n * 33 / 100);
    CHECK(reasons.size() == 2);
    CHECK(reasons.count("halted") == 1);
    CHECK(reasons.count("price_band") == 1);
}

TEST_CASE("with the reject knob at zero no listed order is rejected, at one every order is") {
    for (const double rate : {0.0, 1.0}) {
        venue v(config(rate));
        std::mt19937_64 rng(3);
        for (std::uint64_t id = 1; id <= 200; ++id) {
            const auto e = v.execute(v.accept(order(id, side::buy, 1), t0, rng), quote, t0, rng);
            CHECK(e.outcome == (rate == 0.0 ? order_outcome::filled : order_outcome::rejected));
            if (rate == 1.0) CHECK(e.reason == "exchange_rejected");
        }
    }
}

TEST_CASE("an order is accepted once and a re-post of the same order is recognised") {
    venue v(config());
    std::mt19937_64 rng(1);
    const auto o = order(0xabc, side::buy, 10, 200'0000);
    const auto a = v.accept(o, t0, rng);
    REQUIRE(v.apply(a).has_value());
    const order_entry* e = v.find(0xabc);
    REQUIRE(e != nullptr);
    CHECK(e->accepted == a);
    CHECK_FALSE(e->execution.has_value());

    CHECK(venue::same_order(o, e->accepted));
    auto other_limit = o;
    other_limit.limit_price_ticks = 201'0000;  // the first post's limit stands
    CHECK(venue::same_order(other_limit, e->accepted));
    auto other_qty = o;
    other_qty.quantity = 11;
    CHECK_FALSE(venue::same_order(other_qty, e->accepted));
    auto other_side = o;
    other_side.order_side = side::sell;
    CHECK_FALSE(venue::same_order(other_side, e->accepted));

    // Applying the acceptance again is a contradiction: the log would be corrupt.
    CHECK_FALSE(v.apply(a).has_value());
    CHECK(v.size() == 1);
}

TEST_CASE("an order executes at most once and always under the same exec id") {
    venue v(config());
    std::mt19937_64 rng(1);
    const auto a = v.accept(order(0x77, side::buy, 1), t0, rng);
    REQUIRE(v.apply(a).has_value());
    const auto e1 = v.execute(a, quote, t0 + 5, rng);
    const auto e2 = v.execute(a, money{quote.ticks + 1}, t0 + 9, rng);
    CHECK(e1.exec_id == e2.exec_id);
    CHECK(e1.exec_id == exec_id_for(0x77));
    REQUIRE(v.apply(e1).has_value());
    CHECK_FALSE(v.apply(e2).has_value());
    CHECK(v.find(0x77)->execution == e1);
}

TEST_CASE("facts that contradict each other are refused") {
    venue v(config());
    std::mt19937_64 rng(1);
    const auto a = v.accept(order(1, side::buy, 1), t0, rng);
    const auto e = v.execute(a, quote, t0, rng);
    CHECK_FALSE(v.apply(e).has_value());                  // execution of an unknown order
    CHECK_FALSE(v.apply(callback_acked{1}).has_value());  // acknowledgement of an unknown order
    REQUIRE(v.apply(a).has_value());
    CHECK_FALSE(v.apply(callback_acked{1}).has_value());  // acknowledged before executed
    REQUIRE(v.apply(e).has_value());
    CHECK(v.apply(callback_acked{1}).has_value());
    CHECK(v.apply(callback_acked{1}).has_value());  // a second acknowledgement is harmless
}

TEST_CASE("recovery finds the orders still to execute and the callbacks still owed") {
    venue v(config());
    std::mt19937_64 rng(1);
    std::vector<order_accepted> acc;
    for (std::uint64_t id = 1; id <= 4; ++id) {
        acc.push_back(v.accept(order(id, side::buy, 1), t0 + static_cast<std::int64_t>(id), rng));
        REQUIRE(v.apply(acc.back()).has_value());
    }
    // 1: executed and acknowledged; 2 and 3: executed, callback owed; 4: not executed.
    for (std::uint64_t id = 1; id <= 3; ++id) {
        REQUIRE(
            v.apply(v.execute(acc[id - 1], quote, t0 + 100 - static_cast<std::int64_t>(id), rng))
                .has_value());
    }
    REQUIRE(v.apply(callback_acked{1}).has_value());

    const auto todo = v.unexecuted();
    REQUIRE(todo.size() == 1);
    CHECK(todo[0]->accepted.order_id == 4);
    const auto owed = v.unacknowledged();
    REQUIRE(owed.size() == 2);
    CHECK(owed[0]->accepted.order_id == 3);  // executed first, re-delivered first
    CHECK(owed[1]->accepted.order_id == 2);
}

TEST_CASE("latency follows the configured distribution") {
    std::mt19937_64 rng(5);
    SUBCASE("fixed latency executes exactly N ms after acceptance") {
        venue v(config());
        for (std::uint64_t id = 1; id <= 50; ++id) {
            CHECK(v.accept(order(id, side::buy, 1), t0, rng).execute_at == t0 + 20);
        }
    }
    SUBCASE("uniform latency stays within [0, 2N] and averages about N") {
        auto c = config();
        c.latency = latency_dist::uniform;
        venue v(c);
        std::int64_t sum = 0;
        for (std::uint64_t id = 1; id <= 2000; ++id) {
            const auto d = v.accept(order(id, side::buy, 1), t0, rng).execute_at - t0;
            CHECK(d >= 0);
            CHECK(d <= 40);
            sum += d;
        }
        CHECK(sum / 2000 >= 18);
        CHECK(sum / 2000 <= 22);
    }
    SUBCASE("exponential latency is capped") {
        auto c = config();
        c.latency = latency_dist::exponential;
        venue v(c);
        for (std::uint64_t id = 1; id <= 2000; ++id) {
            const auto d = v.accept(order(id, side::buy, 1), t0, rng).execute_at - t0;
            CHECK(d >= 0);
            CHECK(d <= latency_cap_factor * 20);
        }
    }
}

TEST_CASE("posted orders are parsed strictly") {
    const std::string url = R"("callback_url":"http://127.0.0.1:8080/v1/exchange/callbacks")";
    const auto ok =
        parse_new_order(R"({"order_id":"00000000000000a1","symbol":"BRK.B","side":"BUY",)"
                        R"("quantity":5,"limit_price":"190.5",)" +
                        url + "}");
    REQUIRE(ok.has_value());
    CHECK(ok->order_id == 0xa1);
    CHECK(ok->symbol == "BRK.B");
    CHECK(ok->order_side == side::buy);
    CHECK(ok->quantity == 5);
    CHECK(ok->limit_price_ticks == 190'5000);

    const auto market = parse_new_order(
        R"({"order_id":"00000000000000a1","symbol":"KO","side":"SELL","quantity":1,"limit_price":null,)" +
        url + "}");
    REQUIRE(market.has_value());
    CHECK(market->limit_price_ticks == 0);

    struct bad {
        std::string body;
        unsigned status;
        const char* code;
    };
    const std::string base = R"("symbol":"KO","side":"SELL","quantity":1,)" + url;
    const bad cases[] = {
        {"{", 400, "invalid_json"},
        {"[1,2]", 400, "invalid_json"},
        {R"({"order_id":"00000000000000A1",)" + base + "}", 422, "invalid_order_id"},
        {R"({"order_id":"a1",)" + base + "}", 422, "invalid_order_id"},
        {"{" + base + "}", 422, "invalid_order_id"},
        {R"({"order_id":"00000000000000a1","order_id":"00000000000000a2",)" + base + "}", 400,
         "duplicate_field"},
        {R"({"order_id":"00000000000000a1","symbol":"ko","side":"SELL","quantity":1,)" + url + "}",
         422, "invalid_symbol"},
        {R"({"order_id":"00000000000000a1","symbol":"KO","side":"sell","quantity":1,)" + url + "}",
         422, "invalid_side"},
        {R"({"order_id":"00000000000000a1","symbol":"KO","side":"SELL","quantity":0,)" + url + "}",
         422, "invalid_quantity"},
        {R"({"order_id":"00000000000000a1","symbol":"KO","side":"SELL","quantity":1.5,)" + url +
             "}",
         422, "invalid_quantity"},
        {R"({"order_id":"00000000000000a1","symbol":"KO","side":"SELL","quantity":"1",)" + url +
             "}",
         422, "invalid_quantity"},
        {R"({"order_id":"00000000000000a1",)" + base + R"(,"limit_price":190.5})", 422,
         "invalid_price"},
        {R"({"order_id":"00000000000000a1",)" + base + R"(,"limit_price":"0"})", 422,
         "invalid_price"},
        {R"({"order_id":"00000000000000a1","symbol":"KO","side":"SELL","quantity":1})", 422,
         "invalid_callback_url"},
        {R"({"order_id":"00000000000000a1","symbol":"KO","side":"SELL","quantity":1,)"
         R"("callback_url":"https://127.0.0.1/cb"})",
         422, "invalid_callback_url"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.body);
        const auto r = parse_new_order(c.body);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().status == c.status);
        CHECK(r.error().code == c.code);
    }
}

TEST_CASE("callback URLs are plain http to an IP literal or localhost") {
    const auto t = parse_callback_url("http://127.0.0.1:8080/v1/exchange/callbacks?x=1");
    REQUIRE(t.has_value());
    CHECK(t->host == "127.0.0.1");
    CHECK(t->port == 8080);
    CHECK(t->target == "/v1/exchange/callbacks?x=1");
    const auto local = parse_callback_url("http://localhost");
    REQUIRE(local.has_value());
    CHECK(local->host == "127.0.0.1");
    CHECK(local->port == 80);
    CHECK(local->target == "/");
    const auto v6 = parse_callback_url("http://[::1]:9/cb");
    REQUIRE(v6.has_value());
    CHECK(v6->host == "::1");
    CHECK(v6->port == 9);
    for (const char* bad : {"https://127.0.0.1/cb", "http://example.com/cb", "http://127.0.0.1:0/",
                            "http://127.0.0.1:65536/", "http://127.0.0.1:/", "http://127.0.0.1/a b",
                            "http://[::1/cb", "ftp://127.0.0.1/", "http://127.0.0.1/#frag"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_callback_url(bad).has_value());
    }
    CHECK_FALSE(parse_callback_url("http://127.0.0.1/" + std::string(600, 'a')).has_value());
}

TEST_CASE("order state and callback JSON carry nulls until the order executes") {
    std::mt19937_64 rng(1);
    venue v(config());
    const auto a = v.accept(order(0xa1, side::buy, 5), t0, rng);
    CHECK(order_json(a, nullptr) ==
          R"({"order_id":"00000000000000a1","status":"ACCEPTED","quantity":5,"fill_price":null,)"
          R"("reason":null,"exec_id":null,"executed_at":null})");
    const auto filled = v.execute(a, quote, t0 + 20, rng);
    CHECK(callback_json(a, filled) ==
          R"({"order_id":"00000000000000a1","exec_id":"XS-00000000000000a1","status":"FILLED",)"
          R"("quantity":5,"fill_price":"190.1234","reason":null,)"
          R"("executed_at":"2023-11-14T22:13:20.020Z"})");
    const auto rejected = v.execute(a, std::nullopt, t0 + 20, rng);
    CHECK(order_json(a, &rejected) ==
          R"({"order_id":"00000000000000a1","status":"REJECTED","quantity":5,"fill_price":null,)"
          R"("reason":"unknown_symbol","exec_id":"XS-00000000000000a1",)"
          R"("executed_at":"2023-11-14T22:13:20.020Z"})");
}
