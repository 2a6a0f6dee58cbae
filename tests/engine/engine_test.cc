#include <algorithm>
#include <random>

#include <doctest/doctest.h>
#include <fmt/format.h>

#include "engine/decide.h"
#include "engine/state.h"
#include "tests/engine/random_journal.h"

using namespace broker;

namespace {

const symbol aapl = *parse_symbol("AAPL");
const symbol msft = *parse_symbol("MSFT");
constexpr std::int64_t usd = limits::ticks_per_usd;

// Runs commands the way the node does: decide, then journal (here: keep) and apply each event.
struct engine {
    state s;
    std::vector<event> journal;
    timestamp_ms now = 1'700'000'000'000;

    decision run(const command& c) {
        decision d = decide(s, c, now);
        for (const auto& body : d.events) {
            event e{s.last_sequence + 1, now, body};
            apply(s, e);
            journal.push_back(std::move(e));
        }
        const auto broken = check_invariants(s);
        INFO(broken.value_or(""));
        REQUIRE_FALSE(broken.has_value());
        ++now;
        return d;
    }

    void open(const std::string& id, std::int64_t cash_usd, std::vector<position_amount> pos = {}) {
        REQUIRE(run(open_customer{id, money{cash_usd * usd}, std::move(pos)}).code == errc::ok);
    }

    decision place(const std::string& id, side sd, std::int64_t qty, std::int64_t price_usd = 100,
                   symbol sym = aapl, bool open = true) {
        return run(place_trade{id, "", sym, sd, quantity{qty}, money{price_usd * usd}, open,
                               limits::collar_bps_default});
    }

    decision fill(trade_id id, std::int64_t qty, std::int64_t price_ticks) {
        return run(apply_execution{id, true, quantity{qty}, money{price_ticks}, errc::ok, "x", now});
    }

    decision reject(trade_id id) {
        return run(apply_execution{id, false, quantity{0}, money{0}, errc::exchange_rejected, "x", now});
    }

    const customer& c(const std::string& id) { return *s.find_customer(id); }
    const trade& t(trade_id id) { return *s.find_open_trade(id); }
};

std::vector<event_type> types(const decision& d) {
    std::vector<event_type> out;
    for (const auto& b : d.events) out.push_back(type_of(b));
    return out;
}

}  // namespace

TEST_CASE("opening a customer is idempotent and a conflicting open is refused") {
    engine e;
    e.open("alice", 1000, {{aapl, quantity{10}}});
    CHECK(e.c("alice").cash.ticks == 1000 * usd);
    CHECK(e.c("alice").find_position(aapl)->shares == 10);

    const auto again = e.run(open_customer{"alice", money{1000 * usd}, {{aapl, quantity{10}}}});
    CHECK(again.code == errc::ok);
    CHECK(again.repeated);
    CHECK(again.events.empty());

    CHECK(e.run(open_customer{"alice", money{999 * usd}, {}}).code == errc::customer_exists_different);
    CHECK(e.run(open_customer{"alice", money{1000 * usd}, {}}).code == errc::customer_exists_different);
}

TEST_CASE("opening a customer with bad values changes nothing") {
    struct row {
        open_customer cmd;
        errc expect;
    };
    const row rows[] = {
        {{"", money{0}, {}}, errc::invalid_customer_id},
        {{"has space", money{0}, {}}, errc::invalid_customer_id},
        {{"bob", money{-1}, {}}, errc::invalid_amount},
        {{"bob", money{limits::opening_cash_max_ticks + 1}, {}}, errc::invalid_amount},
        {{"bob", money{0}, {{aapl, quantity{-1}}}}, errc::invalid_quantity},
        {{"bob", money{0}, {{aapl, quantity{1}}, {aapl, quantity{2}}}}, errc::invalid_symbol},
    };
    engine e;
    for (const auto& r : rows) {
        CAPTURE(static_cast<int>(r.expect));
        const auto d = e.run(r.cmd);
        CHECK(d.code == r.expect);
        CHECK(d.events.empty());
    }
    CHECK(e.s.customers.empty());
}

TEST_CASE("a buy reserves quantity x price x 1.05 and goes to the exchange when nothing is ahead") {
    engine e;
    e.open("alice", 10'000);
    const auto d = e.place("alice", side::buy, 10, 100);
    CHECK(d.code == errc::ok);
    CHECK(types(d) == std::vector{event_type::trade_placed, event_type::trade_submitted});
    const trade& t = e.t(*d.trade);
    CHECK(t.status == trade_status::in_progress);
    CHECK(t.limit_price.ticks == 105 * usd);
    CHECK(t.reserved_cash.ticks == 1050 * usd);
    CHECK(e.c("alice").reserved_cash.ticks == 1050 * usd);
    CHECK(e.c("alice").buying_power().ticks == 8950 * usd);
    CHECK(e.c("alice").cash.ticks == 10'000 * usd);
}

TEST_CASE("a customer's second trade waits in the FIFO until the first is terminal") {
    engine e;
    e.open("alice", 10'000);
    const auto first = e.place("alice", side::buy, 1);
    const auto second = e.place("alice", side::buy, 1);
    CHECK(types(second) == std::vector{event_type::trade_placed});
    CHECK(e.t(*second.trade).status == trade_status::placed);

    const auto filled = e.fill(*first.trade, 1, 100 * usd);
    CHECK(types(filled) == std::vector{event_type::trade_filled, event_type::trade_submitted});
    CHECK(e.t(*second.trade).status == trade_status::in_progress);
}

TEST_CASE("other customers are independent: each has its own trade at the exchange") {
    engine e;
    e.open("alice", 10'000);
    e.open("bob", 10'000);
    const auto a = e.place("alice", side::buy, 1);
    const auto b = e.place("bob", side::buy, 1);
    CHECK(e.t(*a.trade).status == trade_status::in_progress);
    CHECK(e.t(*b.trade).status == trade_status::in_progress);
}

TEST_CASE("placement failures become REJECTED trades with a reason and reserve nothing") {
    struct row {
        const char* name;
        side sd;
        std::int64_t qty;
        bool market_open;
        errc reason;
    };
    const row rows[] = {
        {"a buy larger than buying power is rejected with insufficient_funds", side::buy, 96, true,
         errc::insufficient_funds},
        {"a sell of more shares than available is rejected with insufficient_shares", side::sell, 11,
         true, errc::insufficient_shares},
        {"a placement while the market is closed is rejected with market_closed", side::buy, 1, false,
         errc::market_closed},
    };
    for (const auto& r : rows) {
        CAPTURE(r.name);
        engine e;
        e.open("alice", 10'000, {{aapl, quantity{10}}});  // 95 shares at 105.00 fit, 96 do not
        const auto d = e.place("alice", r.sd, r.qty, 100, aapl, r.market_open);
        CHECK(d.code == errc::ok);
        REQUIRE(types(d) == std::vector{event_type::trade_refused});
        CHECK(std::get<trade_refused>(d.events[0]).reason == r.reason);
        CHECK(e.s.open_trades.empty());
        CHECK(e.c("alice").reserved_cash.ticks == 0);
        CHECK(e.c("alice").find_position(aapl)->reserved == 0);
        CHECK(e.s.next_trade_id == 2);  // the refused trade has an id and is in the audit trail
    }
}

TEST_CASE("the buying-power boundary is exact to the tick") {
    engine e;
    e.open("alice", 0);
    REQUIRE(e.run(open_customer{"bob", money{9975 * usd}, {}}).code == errc::ok);  // 95 x 105.00
    CHECK(types(e.place("bob", side::buy, 95)) ==
          std::vector{event_type::trade_placed, event_type::trade_submitted});
    REQUIRE(e.run(open_customer{"carol", money{9975 * usd - 1}, {}}).code == errc::ok);
    CHECK(types(e.place("carol", side::buy, 95)) == std::vector{event_type::trade_refused});
}

TEST_CASE("invalid placements are errors that create no trade") {
    engine e;
    e.open("alice", 10'000);
    struct row {
        place_trade cmd;
        errc expect;
    };
    const row rows[] = {
        {{"alice", "", aapl, side::buy, quantity{0}, money{usd}, true, 500}, errc::invalid_quantity},
        {{"alice", "", aapl, side::buy, quantity{-5}, money{usd}, true, 500}, errc::invalid_quantity},
        {{"alice", "", aapl, side::buy, quantity{limits::quantity_max + 1}, money{usd}, true, 500},
         errc::invalid_quantity},
        {{"alice", "", aapl, side::buy, quantity{1}, std::nullopt, true, 500}, errc::unknown_symbol},
        {{"alice", "", aapl, side::buy, quantity{1}, money{0}, true, 500}, errc::invalid_price},
        {{"alice", "", aapl, side::buy, quantity{1}, money{limits::price_max_ticks + 1}, true, 500},
         errc::invalid_price},
        {{"alice", "", aapl, side::buy, quantity{limits::quantity_max},
          money{limits::price_max_ticks}, true, 500},
         errc::notional_too_large},
        {{"alice", "bad\"id", aapl, side::buy, quantity{1}, money{usd}, true, 500},
         errc::invalid_client_order_id},
        {{"nobody", "", aapl, side::buy, quantity{1}, money{usd}, true, 500}, errc::customer_not_found},
    };
    for (const auto& r : rows) {
        CAPTURE(static_cast<int>(r.expect));
        const auto d = e.run(r.cmd);
        CHECK(d.code == r.expect);
        CHECK(d.events.empty());
    }
    CHECK(e.s.next_trade_id == 1);
}

TEST_CASE("a filled buy debits the exact notional and releases the rest of the reservation") {
    engine e;
    e.open("alice", 10'000);
    const auto d = e.place("alice", side::buy, 10, 100);
    CHECK(types(e.fill(*d.trade, 10, 1'012'345)) == std::vector{event_type::trade_filled});
    const customer& c = e.c("alice");
    CHECK(c.cash.ticks == 10'000 * usd - 10 * 1'012'345);
    CHECK(c.reserved_cash.ticks == 0);
    CHECK(c.find_position(aapl)->shares == 10);
    CHECK(e.s.open_trades.empty());
}

TEST_CASE("a filled sell credits the notional and removes the shares") {
    engine e;
    e.open("alice", 0, {{aapl, quantity{10}}});
    const auto d = e.place("alice", side::sell, 4, 100);
    CHECK(e.c("alice").find_position(aapl)->reserved == 4);
    // A second sell sees only the shares not yet reserved.
    CHECK(types(e.place("alice", side::sell, 7)) == std::vector{event_type::trade_refused});
    e.fill(*d.trade, 4, 99 * usd);
    CHECK(e.c("alice").cash.ticks == 4 * 99 * usd);
    CHECK(e.c("alice").find_position(aapl)->shares == 6);
    CHECK(e.c("alice").find_position(aapl)->reserved == 0);
}

TEST_CASE("a fill is applied exactly once however often the exchange repeats it") {
    engine e;
    e.open("alice", 10'000);
    const auto d = e.place("alice", side::buy, 10, 100);
    e.fill(*d.trade, 10, 100 * usd);
    const money cash = e.c("alice").cash;
    for (int i = 0; i < 3; ++i) {
        const auto again = e.fill(*d.trade, 10, 100 * usd);
        CHECK(again.code == errc::ok);
        CHECK(again.repeated);
        CHECK(again.events.empty());
        const auto rejected_late = e.reject(*d.trade);  // a contradicting late report too
        CHECK(rejected_late.repeated);
    }
    CHECK(e.c("alice").cash == cash);
    CHECK(e.c("alice").find_position(aapl)->shares == 10);
}

TEST_CASE("reports for no trade, or for one not at the exchange, are refused and change nothing") {
    engine e;
    e.open("alice", 10'000);
    const auto d = e.place("alice", side::buy, 10, 100);  // limit 105.00
    CHECK(e.fill(trade_id{999}, 10, 100 * usd).code == errc::trade_not_found);
    const auto queued = e.place("alice", side::buy, 1, 100);
    CHECK(e.fill(*queued.trade, 1, 100 * usd).code == errc::trade_not_in_progress);
    CHECK(e.t(*d.trade).status == trade_status::in_progress);
    CHECK(e.t(*queued.trade).status == trade_status::placed);
    CHECK(e.fill(*d.trade, 10, 105 * usd).code == errc::ok);  // exactly the limit is fine
    CHECK(e.t(*queued.trade).status == trade_status::in_progress);
}

TEST_CASE("a fill against the order's terms ends the trade REJECTED fill_mismatch, not stuck") {
    struct broken {
        const char* what;
        side trade_side;
        std::int64_t qty;
        std::int64_t price_ticks;
    };
    for (const broken& b :
         {broken{"BUY above its limit", side::buy, 10, 105 * usd + 1},
          broken{"another quantity", side::buy, 9, 100 * usd}, broken{"no price", side::buy, 10, 0},
          broken{"SELL of another quantity", side::sell, 11, 100 * usd}}) {
        CAPTURE(b.what);
        engine e;
        e.open("alice", 10'000, {{aapl, quantity{10}}});
        const auto d = e.place("alice", b.trade_side, 10, 100);  // a BUY's limit: 105.00
        const auto next = e.place("alice", side::buy, 1, 100);
        const money cash = e.c("alice").cash;
        const auto report = e.fill(*d.trade, b.qty, b.price_ticks);
        CHECK(report.code == errc::ok);
        CHECK(types(report) ==
              std::vector{event_type::trade_rejected, event_type::trade_submitted});
        CHECK(std::get<trade_rejected>(report.events[0]).reason == errc::fill_mismatch);
        CHECK(e.s.find_open_trade(*d.trade) == nullptr);  // terminal
        // Nothing of the fill was applied, the reservation is released, and the customer's next
        // trade goes to the exchange.
        CHECK(e.c("alice").cash == cash);
        CHECK(e.c("alice").find_position(aapl)->shares == 10);
        CHECK(e.c("alice").find_position(aapl)->reserved == 0);
        CHECK(e.c("alice").reserved_cash == e.t(*next.trade).reserved_cash);
        CHECK(e.t(*next.trade).status == trade_status::in_progress);
        // The exchange repeats its report until acknowledged: the repeats change nothing.
        const auto again = e.fill(*d.trade, b.qty, b.price_ticks);
        CHECK(again.code == errc::ok);
        CHECK(again.repeated);
        CHECK(again.events.empty());
    }
}

TEST_CASE("an exchange rejection releases the reservation and sends the next trade") {
    engine e;
    e.open("alice", 10'000, {{aapl, quantity{5}}});
    const auto first = e.place("alice", side::sell, 5);
    const auto second = e.place("alice", side::buy, 1);
    CHECK(types(e.reject(*first.trade)) ==
          std::vector{event_type::trade_rejected, event_type::trade_submitted});
    CHECK(e.c("alice").find_position(aapl)->reserved == 0);
    CHECK(e.t(*second.trade).status == trade_status::in_progress);
}

TEST_CASE("a trade can be canceled only while PLACED, and only by its owner") {
    engine e;
    e.open("alice", 10'000);
    e.open("bob", 10'000);
    const auto first = e.place("alice", side::buy, 1);
    const auto second = e.place("alice", side::buy, 2);
    CHECK(e.run(cancel_trade{"alice", *first.trade}).code == errc::trade_not_cancelable);
    CHECK(e.run(cancel_trade{"bob", *second.trade}).code == errc::trade_not_found);
    const auto canceled = e.run(cancel_trade{"alice", *second.trade});
    CHECK(types(canceled) == std::vector{event_type::trade_canceled});
    CHECK(e.c("alice").reserved_cash == e.t(*first.trade).reserved_cash);
    CHECK(e.run(cancel_trade{"alice", *second.trade}).code == errc::trade_not_cancelable);
}

TEST_CASE("a customer's open trades are bounded") {
    engine e;
    e.open("alice", 1'000'000);
    for (std::size_t i = 0; i < limits::open_trades_per_customer_max; ++i) e.place("alice", side::buy, 1);
    const auto d = e.place("alice", side::buy, 1);
    REQUIRE(types(d) == std::vector{event_type::trade_refused});
    CHECK(std::get<trade_refused>(d.events[0]).reason == errc::too_many_open_trades);
}

TEST_CASE("a BUY that would open a position past the limit is rejected with too_many_positions") {
    // Every position but one is taken at opening; open BUYs of new symbols count as held.
    engine e;
    std::vector<position_amount> held;
    for (std::size_t i = 0; i + 1 < limits::positions_per_customer_max; ++i) {
        held.push_back({*parse_symbol(fmt::format("S{}", i)), quantity{1}});
    }
    e.open("alice", 1'000'000, held);
    const symbol fresh = *parse_symbol("NEWA");
    const symbol other = *parse_symbol("NEWB");
    const auto first = e.place("alice", side::buy, 1, 100, fresh);  // at the exchange
    REQUIRE(first.code == errc::ok);
    REQUIRE(types(first) == std::vector{event_type::trade_placed, event_type::trade_submitted});
    CHECK(types(e.place("alice", side::buy, 1, 100, fresh)) ==
          std::vector{event_type::trade_placed});  // the same new symbol again
    const auto refused = e.place("alice", side::buy, 1, 100, other);
    REQUIRE(types(refused) == std::vector{event_type::trade_refused});
    CHECK(std::get<trade_refused>(refused.events[0]).reason == errc::too_many_positions);
    CHECK(types(e.place("alice", side::buy, 1, 100, held[0].sym)) ==
          std::vector{event_type::trade_placed});  // a symbol already held
    // Once the first BUY fills, the limit is reached for good.
    REQUIRE(e.fill(*first.trade, 1, 100 * usd).code == errc::ok);
    CHECK(e.c("alice").positions.size() == limits::positions_per_customer_max);
    const auto still = e.place("alice", side::buy, 1, 100, other);
    REQUIRE(types(still) == std::vector{event_type::trade_refused});
    CHECK(std::get<trade_refused>(still.events[0]).reason == errc::too_many_positions);
    CHECK(to_string(errc::too_many_positions) == "too_many_positions");
    CHECK(parse_errc("too_many_positions") == errc::too_many_positions);
}

TEST_CASE("replaying the journal with apply alone reproduces the live state exactly") {
    // Random streams of every command: invariants hold after every step, and a fresh state fed
    // the journal alone ends byte-for-byte equal.
    for (std::uint64_t seed = 1; seed <= 40; ++seed) {
        CAPTURE(seed);
        const testing::random_journal e({seed, 400, 1}, [](const state& s) {
            const auto broken = check_invariants(s);
            INFO(broken.value_or(""));
            REQUIRE_FALSE(broken.has_value());
        });
        state replayed;
        for (const auto& ev : e.journal) apply(replayed, ev);
        std::string live_bytes, replay_bytes;
        write_canonical(e.s, live_bytes);
        write_canonical(replayed, replay_bytes);
        CHECK(live_bytes == replay_bytes);
        for (const auto& [id, c] : e.s.customers) {
            CHECK(c.cash.ticks >= 0);
            for (const auto& p : c.positions) CHECK(p.shares >= 0);
        }
    }
}

TEST_CASE("check_invariants reports a state that breaks them") {
    engine e;
    e.open("alice", 100);
    e.place("alice", side::buy, 1, 10);
    state broken = e.s;
    broken.customers["alice"].reserved_cash.ticks += 1;
    CHECK(check_invariants(broken).has_value());
    broken = e.s;
    broken.customers["alice"].cash.ticks = -1;
    CHECK(check_invariants(broken).has_value());
    broken = e.s;
    broken.customers["alice"].fifo.push_back(trade_id{77});
    CHECK(check_invariants(broken).has_value());
    CHECK_FALSE(check_invariants(e.s).has_value());
}

TEST_CASE("a repeated client_order_id names the original trade instead of placing another") {
    engine e;
    e.open("alice", 10'000);
    auto with_coid = [&](std::int64_t qty) {
        return e.run(place_trade{"alice", "order-1", aapl, side::buy, quantity{qty}, money{100 * usd},
                                 true, 500, std::nullopt, e.now});
    };
    const auto first = with_coid(1);
    REQUIRE(first.code == errc::ok);
    const auto again = with_coid(1);
    CHECK(again.repeated);
    CHECK(again.events.empty());
    CHECK(*again.trade == *first.trade);
    // The engine only names the trade; comparing bodies (same or conflicting) is the API's job.
    CHECK(with_coid(5).trade == first.trade);
    // Still remembered after the trade closed, within the memory window.
    e.fill(*first.trade, 1, 100 * usd);
    CHECK(*with_coid(1).trade == *first.trade);
    // Another customer may use the same id.
    e.open("bob", 10'000);
    const auto bobs = e.run(place_trade{"bob", "order-1", aapl, side::buy, quantity{1}, money{100 * usd},
                                        true, 500, std::nullopt, e.now});
    CHECK_FALSE(bobs.repeated);
}

TEST_CASE("client order ids of long-closed trades are forgotten and then found through the store") {
    engine e;
    e.open("alice", 10'000);
    const auto first = e.run(place_trade{"alice", "old", aapl, side::buy, quantity{1}, money{100 * usd},
                                         true, 500, std::nullopt, e.now});
    e.fill(*first.trade, 1, 100 * usd);
    e.now += limits::client_order_memory_ms + 1;
    e.place("alice", side::buy, 1);  // any placement prunes the memory
    CHECK(e.c("alice").find_client_order("old") == nullptr);
    // The API looked the id up in the store and passes what it found.
    const auto found = e.run(place_trade{"alice", "old", aapl, side::buy, quantity{1}, money{100 * usd},
                                         true, 500, first.trade, e.now});
    CHECK(found.repeated);
    CHECK(*found.trade == *first.trade);
    // A lookup older than half the window might have missed a trade closed since: refused.
    const auto stale = e.run(place_trade{"alice", "new", aapl, side::buy, quantity{1}, money{100 * usd},
                                         true, 500, std::nullopt,
                                         e.now - limits::client_order_memory_ms / 2 - 1});
    CHECK(stale.code == errc::stale_request);
    CHECK(stale.events.empty());
}

TEST_CASE("a PLACED trade's quantity can change when the new reservation fits") {
    engine e;
    e.open("alice", 10'000, {{aapl, quantity{10}}});
    e.place("alice", side::buy, 1);                        // at the exchange
    const auto queued = e.place("alice", side::buy, 10);   // PLACED, reserves 1,050.00
    REQUIRE(e.t(*queued.trade).status == trade_status::placed);
    const auto d = e.run(modify_trade{"alice", *queued.trade, quantity{20}, money{110 * usd}, 500});
    CHECK(types(d) == std::vector{event_type::trade_modified});
    CHECK(e.t(*queued.trade).qty.shares == 20);
    CHECK(e.t(*queued.trade).reserved_cash.ticks == 20 * 1155 * usd / 10);  // 20 x 115.50
    CHECK(e.c("alice").reserved_cash.ticks == 105 * usd + 2310 * usd);

    // The same quantity again changes nothing, whatever the price did meanwhile: no event, the
    // reservation as it was, and the answer names the trade.
    const std::uint64_t sequence = e.s.last_sequence;
    const auto same =
        e.run(modify_trade{"alice", *queued.trade, quantity{20}, money{150 * usd}, 500});
    CHECK(same.code == errc::ok);
    CHECK(same.repeated);
    CHECK(same.events.empty());
    CHECK(*same.trade == *queued.trade);
    CHECK(e.s.last_sequence == sequence);
    CHECK(e.t(*queued.trade).reserved_cash.ticks == 20 * 1155 * usd / 10);
    // Nor does it skip the checks before it: another customer's trade is still not found.
    CHECK(e.run(modify_trade{"bob", *queued.trade, quantity{20}, money{110 * usd}, 500}).code ==
          errc::trade_not_found);

    // Too large: refused, nothing changes.
    CHECK(e.run(modify_trade{"alice", *queued.trade, quantity{90}, money{110 * usd}, 500}).code ==
          errc::insufficient_funds);
    CHECK(e.t(*queued.trade).qty.shares == 20);
    CHECK(e.run(modify_trade{"alice", *queued.trade, quantity{0}, money{110 * usd}, 500}).code ==
          errc::invalid_quantity);
    CHECK(e.run(modify_trade{"bob", *queued.trade, quantity{1}, money{110 * usd}, 500}).code ==
          errc::trade_not_found);

    // Sells: the trade's own shares count as available again.
    e.place("bob-less", side::buy, 1);  // unknown customer: no effect
    const auto sell = e.place("alice", side::sell, 4);
    CHECK(e.run(modify_trade{"alice", *sell.trade, quantity{10}, money{100 * usd}, 500}).code == errc::ok);
    CHECK(e.c("alice").find_position(aapl)->reserved == 10);
    CHECK(e.run(modify_trade{"alice", *sell.trade, quantity{11}, money{100 * usd}, 500}).code ==
          errc::insufficient_shares);
}

TEST_CASE("a trade at the exchange or closed cannot change quantity") {
    engine e;
    e.open("alice", 10'000);
    const auto sent = e.place("alice", side::buy, 1);
    CHECK(e.run(modify_trade{"alice", *sent.trade, quantity{2}, money{100 * usd}, 500}).code ==
          errc::trade_not_modifiable);
    // Also to the quantity it has: the answer says the trade is past changing.
    CHECK(e.run(modify_trade{"alice", *sent.trade, quantity{1}, money{100 * usd}, 500}).code ==
          errc::trade_not_modifiable);
    e.fill(*sent.trade, 1, 100 * usd);
    CHECK(e.run(modify_trade{"alice", *sent.trade, quantity{2}, money{100 * usd}, 500}).code ==
          errc::trade_not_modifiable);
}

TEST_CASE("trades still PLACED past their maximum age are rejected as expired") {
    engine e;
    e.open("alice", 10'000);
    const auto head = e.place("alice", side::buy, 1);      // at the exchange, stuck there
    const auto queued = e.place("alice", side::buy, 2);    // PLACED behind it
    const timestamp_ms placed_at = e.now - 1;
    e.now += 1000;
    const auto young = e.run(expire_placed{placed_at - 1, 100});
    CHECK(young.events.empty());
    const auto d = e.run(expire_placed{placed_at + 1, 100});
    REQUIRE(types(d) == std::vector{event_type::trade_rejected});
    CHECK(std::get<trade_rejected>(d.events[0]).id == *queued.trade);
    CHECK(std::get<trade_rejected>(d.events[0]).reason == errc::expired);
    CHECK(e.s.find_open_trade(*queued.trade) == nullptr);
    // The trade at the exchange is not expired: its outcome is the exchange's to report.
    CHECK(e.t(*head.trade).status == trade_status::in_progress);
    CHECK(e.c("alice").reserved_cash == e.t(*head.trade).reserved_cash);
}

TEST_CASE("the watchdog finds trades at the exchange without news, oldest first") {
    engine e;
    e.open("alice", 10'000);
    e.open("bob", 10'000);
    const auto a = e.place("alice", side::buy, 1);
    e.now += 10;
    const auto b = e.place("bob", side::buy, 1);
    const auto cutoff = e.now;
    e.now += 10;
    e.open("carol", 10'000);
    e.place("carol", side::buy, 1);  // too recent
    const auto d = decide(e.s, find_stuck_trades{cutoff, 10}, e.now);
    CHECK(d.trades == std::vector{*a.trade, *b.trade});
    CHECK(d.events.empty());
    CHECK(decide(e.s, find_stuck_trades{cutoff, 1}, e.now).trades == std::vector{*a.trade});
}
