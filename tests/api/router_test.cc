// The router against an in-memory engine: every request is decided and applied at once, so
// these tests see exactly what a client would, without sockets or a journal.
#include <doctest/doctest.h>

#include "api/json.h"
#include "api/jwt.h"
#include "api/router.h"
#include "engine/decide.h"
#include "exchange/signature.h"

using namespace broker;
using namespace broker::api;

namespace {

constexpr std::int64_t now_ms = 1'800'000'000'000;

class memory_services final : public services {
public:
    state s;
    bool market_is_open = true;
    bool full = false;

    bool submit(command c, completion done) override {
        if (full) return false;
        decision d = decide(s, c, now_ms);
        outcome o;
        o.code = d.code;
        o.repeated = d.repeated;
        for (auto& body : d.events) {
            auto change = apply(s, event{s.last_sequence + 1, now_ms, std::move(body)});
            if (change && !o.trade_view) o.trade_view = change->snapshot;
            if (change && is_terminal(change->snapshot.status)) closed[change->snapshot.id.value] = change->snapshot;
        }
        if (auto* g = std::get_if<get_trade>(&c); g && d.code == errc::ok) o.trade_view = *s.find_open_trade(g->id);
        std::string who;
        if (auto* a = std::get_if<get_account>(&c)) who = a->customer_id;
        if (auto* oc = std::get_if<open_customer>(&c)) who = oc->customer_id;
        if (!who.empty() && d.code == errc::ok) {
            const customer* cu = s.find_customer(who);
            o.account = account_view{cu->id, cu->cash, cu->reserved_cash, cu->positions};
        }
        done(std::move(o));
        return true;
    }
    bool submit_digest(completion done) override {
        outcome o;
        o.sequence = s.last_sequence;
        o.digest = "test";
        done(std::move(o));
        return true;
    }
    std::optional<trade> find_closed_trade(trade_id id) override {
        auto it = closed.find(id.value);
        if (it == closed.end()) return std::nullopt;
        return it->second;
    }
    std::optional<money> quote(symbol sym) override {
        if (sym == *parse_symbol("AAPL")) return money{100 * limits::ticks_per_usd};
        if (sym == *parse_symbol("MSFT")) return money{400 * limits::ticks_per_usd};
        return std::nullopt;
    }
    bool market_open(timestamp_ms) override { return market_is_open; }
    std::int64_t collar_bps() const override { return 500; }
    timestamp_ms now() override { return now_ms; }

    std::unordered_map<std::uint64_t, trade> closed;
};

struct fixture {
    memory_services svc;
    router r{svc, router_config{"jwt-secret", "exchange-secret", 300}};
    std::string admin = "Bearer " + sign_jwt(claims{"ops", "admin", now_ms / 1000 + 60, 0}, "jwt-secret");

    std::string token(const std::string& sub) {
        return "Bearer " + sign_jwt(claims{sub, "", now_ms / 1000 + 60, 0}, "jwt-secret");
    }

    http_response call(std::string_view method, std::string_view target, std::string_view auth,
                       std::string_view body = "", std::string_view signature = "") {
        std::optional<http_response> out;
        r.handle(http_request{method, target, auth, signature, body},
                 [&](http_response resp) { out = std::move(resp); });
        REQUIRE(out.has_value());  // every request is answered exactly once
        return *out;
    }

    std::string code_of(const http_response& resp) {
        auto obj = parse_object(resp.body);
        REQUIRE(obj.has_value());
        for (const auto& [k, v] : *obj) {
            if (k == "code") return v.text;
        }
        return "";
    }

    std::string field_of(const http_response& resp, std::string_view name) {
        auto obj = parse_object(resp.body);
        REQUIRE(obj.has_value());
        for (const auto& [k, v] : *obj) {
            if (k == name) return v.type == json_value::kind::integer ? std::to_string(v.integer) : v.text;
        }
        return "<absent>";
    }

    void open(const std::string& id, const char* body = R"({"cash":"10000.0000","positions":{"AAPL":10}})") {
        REQUIRE(call("PUT", "/admin/v1/customers/" + id, admin, body).status == 201);
    }
};

}  // namespace

TEST_CASE("a customer places a trade and reads it, the account and the positions") {
    fixture f;
    f.open("alice");
    const auto alice = f.token("alice");
    const auto placed = f.call("POST", "/v1/trades", alice, R"({"symbol":"AAPL","side":"BUY","quantity":10})");
    CHECK(placed.status == 201);
    CHECK(f.field_of(placed, "status") == "PLACED");
    CHECK(f.field_of(placed, "trade_id") == "0000000000000001");
    const auto got = f.call("GET", "/v1/trades/0000000000000001", alice);
    CHECK(got.status == 200);
    CHECK(f.field_of(got, "status") == "IN_PROGRESS");
    const auto account = f.call("GET", "/v1/account", alice);
    CHECK(account.status == 200);
    CHECK(f.field_of(account, "cash") == "10000.0000");
    CHECK(f.field_of(account, "reserved_cash") == "1050.0000");
    CHECK(f.field_of(account, "buying_power") == "8950.0000");
    const auto positions = f.call("GET", "/v1/positions", alice);
    CHECK(positions.body ==
          R"([{"symbol":"AAPL","quantity":10,"reserved_quantity":0,"available_quantity":10}])");
}

TEST_CASE("a buy beyond buying power is answered 201 REJECTED insufficient_funds") {
    fixture f;
    f.open("alice");
    const auto r = f.call("POST", "/v1/trades", f.token("alice"), R"({"symbol":"MSFT","side":"BUY","quantity":100})");
    CHECK(r.status == 201);
    CHECK(f.field_of(r, "status") == "REJECTED");
    CHECK(f.field_of(r, "reason") == "insufficient_funds");
    CHECK(f.svc.s.find_customer("alice")->reserved_cash.ticks == 0);
}

TEST_CASE("requests without a valid token are refused with 401") {
    fixture f;
    f.open("alice");
    const std::string expired = "Bearer " + sign_jwt(claims{"alice", "", now_ms / 1000 - 1, 0}, "jwt-secret");
    const std::string other_secret = "Bearer " + sign_jwt(claims{"alice", "", 0, 0}, "other");
    for (const std::string& auth : {std::string(""), std::string("Bearer"), std::string("Basic abc"),
                                   std::string("Bearer x.y.z"), expired, other_secret}) {
        CAPTURE(auth);
        const auto r = f.call("GET", "/v1/account", auth);
        CHECK(r.status == 401);
        CHECK(f.code_of(r) == "unauthorized");
    }
}

TEST_CASE("admin routes need an admin token") {
    fixture f;
    const auto r = f.call("PUT", "/admin/v1/customers/bob", f.token("bob"), R"({"cash":"1"})");
    CHECK(r.status == 403);
    CHECK(f.svc.s.customers.empty());
    CHECK(f.call("GET", "/admin/v1/digest", f.token("bob")).status == 403);
    CHECK(f.call("GET", "/admin/v1/digest", f.admin).status == 200);
}

TEST_CASE("another customer's trade is 404 to everybody else") {
    fixture f;
    f.open("alice");
    f.open("bob");
    REQUIRE(f.call("POST", "/v1/trades", f.token("alice"), R"({"symbol":"AAPL","side":"SELL","quantity":1})").status == 201);
    CHECK(f.call("GET", "/v1/trades/0000000000000001", f.token("bob")).status == 404);
    CHECK(f.call("GET", "/v1/trades/0000000000000001", f.token("alice")).status == 200);
    CHECK(f.call("GET", "/v1/trades/00000000000000ff", f.token("alice")).status == 404);
    CHECK(f.call("GET", "/v1/trades/not-an-id", f.token("alice")).status == 404);
}

TEST_CASE("opening a customer is 201, then 200 for the same body and 409 for another") {
    fixture f;
    const char* body = R"({"cash":"500.5","positions":{"AAPL":3}})";
    CHECK(f.call("PUT", "/admin/v1/customers/carol", f.admin, body).status == 201);
    CHECK(f.call("PUT", "/admin/v1/customers/carol", f.admin, body).status == 200);
    const auto conflict = f.call("PUT", "/admin/v1/customers/carol", f.admin, R"({"cash":"500.6"})");
    CHECK(conflict.status == 409);
    CHECK(f.code_of(conflict) == "customer_exists_different");
}

TEST_CASE("malformed requests get a 4xx JSON error and change nothing") {
    fixture f;
    f.open("alice");
    const auto alice = f.token("alice");
    struct row {
        const char* method;
        const char* target;
        const char* body;
        unsigned status;
        const char* code;
    };
    const row rows[] = {
        {"POST", "/v1/trades", "", 400, "invalid_json"},
        {"POST", "/v1/trades", "{", 400, "invalid_json"},
        {"POST", "/v1/trades", "[1,2]", 400, "invalid_json"},
        {"POST", "/v1/trades", "\"AAPL\"", 400, "invalid_json"},
        {"POST", "/v1/trades", "{\"symbol\":\"\xff\",\"side\":\"BUY\",\"quantity\":1}", 400, "invalid_json"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY"})", 422, "missing_field"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantity":0})", 422, "invalid_quantity"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantity":-3})", 422, "invalid_quantity"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantity":1.5})", 422, "invalid_quantity"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantity":"1"})", 422, "invalid_quantity"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantity":1000001})", 422, "invalid_quantity"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantity":18446744073709551615})", 422, "invalid_quantity"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantity":1e400})", 400, "invalid_json"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"buy","quantity":1})", 422, "invalid_side"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":null,"quantity":1})", 422, "invalid_side"},
        {"POST", "/v1/trades", R"({"symbol":"ZZZZ","side":"BUY","quantity":1})", 422, "unknown_symbol"},
        {"POST", "/v1/trades", R"({"symbol":"aapl","side":"BUY","quantity":1})", 422, "invalid_symbol"},
        {"POST", "/v1/trades", R"({"symbol":7,"side":"BUY","quantity":1})", 422, "invalid_symbol"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantity":1,"quantity":2})", 400, "duplicate_field"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantiy":1})", 422, "unknown_field"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantity":1,"client_order_id":5})", 422, "invalid_client_order_id"},
        {"GET", "/v1/trades", "", 405, "method_not_allowed"},
        {"DELETE", "/v1/account", "", 405, "method_not_allowed"},
        {"GET", "/v1/nothing", "", 404, "not_found"},
        {"GET", "/", "", 404, "not_found"},
        {"PUT", "/admin/v1/customers/bad%20id", "{\"cash\":\"1\"}", 422, "invalid_customer_id"},
        {"PUT", "/admin/v1/customers/dave", "{\"cash\":1}", 422, "invalid_amount"},
        {"PUT", "/admin/v1/customers/dave", "{\"cash\":\"-1\"}", 422, "invalid_amount"},
        {"PUT", "/admin/v1/customers/dave", "{\"cash\":\"1.00001\"}", 422, "invalid_amount"},
        {"PUT", "/admin/v1/customers/dave", "{\"cash\":\"99999999999999\"}", 422, "invalid_amount"},
        {"PUT", "/admin/v1/customers/dave", R"({"cash":"1","positions":{"NOPE":1}})", 422, "unknown_symbol"},
        {"PUT", "/admin/v1/customers/dave", R"({"cash":"1","positions":{"AAPL":-1}})", 422, "invalid_quantity"},
        {"PUT", "/admin/v1/customers/dave", R"({"cash":"1","positions":[1]})", 422, "invalid_positions"},
    };
    const auto before = f.svc.s.last_sequence;
    for (const auto& r : rows) {
        CAPTURE(r.method);
        CAPTURE(r.target);
        CAPTURE(r.body);
        const bool admin = std::string_view(r.target).starts_with("/admin");
        const auto resp = f.call(r.method, r.target, admin ? f.admin : alice, r.body);
        CHECK(resp.status == r.status);
        CHECK(f.code_of(resp) == r.code);
    }
    CHECK(f.svc.s.last_sequence == before);
}

TEST_CASE("a full engine queue is answered 503 overloaded") {
    fixture f;
    f.open("alice");
    f.svc.full = true;
    const auto r = f.call("POST", "/v1/trades", f.token("alice"), R"({"symbol":"AAPL","side":"BUY","quantity":1})");
    CHECK(r.status == 503);
    CHECK(f.code_of(r) == "overloaded");
}

TEST_CASE("exchange callbacks are applied once when signed and refused when not") {
    fixture f;
    f.open("alice");
    REQUIRE(f.call("POST", "/v1/trades", f.token("alice"), R"({"symbol":"AAPL","side":"BUY","quantity":10})").status == 201);
    const std::string body =
        R"({"order_id":"0000000000000001","exec_id":"E1","status":"FILLED","quantity":10,)"
        R"("fill_price":"101.2500","reason":null,"executed_at":"2027-01-15T08:00:00.000Z"})";
    const auto good = exchange::sign_callback("exchange-secret", now_ms / 1000, body);

    CHECK(f.call("POST", "/v1/exchange/callbacks", "", body, "").status == 401);
    CHECK(f.call("POST", "/v1/exchange/callbacks", "", body,
                 exchange::sign_callback("wrong", now_ms / 1000, body)).status == 401);
    CHECK(f.call("POST", "/v1/exchange/callbacks", "", body,
                 exchange::sign_callback("exchange-secret", now_ms / 1000 - 3600, body)).status == 401);
    CHECK(f.svc.s.find_customer("alice")->cash.ticks == 10'000 * limits::ticks_per_usd);

    const auto applied = f.call("POST", "/v1/exchange/callbacks", "", body, good);
    CHECK(applied.status == 200);
    CHECK(f.field_of(applied, "status") == "applied");
    const auto again = f.call("POST", "/v1/exchange/callbacks", "", body, good);
    CHECK(again.status == 200);
    CHECK(f.field_of(again, "status") == "duplicate");
    CHECK(f.svc.s.find_customer("alice")->cash.ticks == 10'000 * limits::ticks_per_usd - 10 * 1'012'500);

    const auto got = f.call("GET", "/v1/trades/0000000000000001", f.token("alice"));
    CHECK(f.field_of(got, "status") == "FILLED");
    CHECK(f.field_of(got, "filled_price") == "101.2500");
    CHECK(f.field_of(got, "filled_at") == "2027-01-15T08:00:00.000Z");
}

TEST_CASE("a signed but malformed callback is refused with 422 and changes nothing") {
    fixture f;
    f.open("alice");
    const auto before = f.svc.s.last_sequence;
    for (const std::string& body : {
             std::string(R"({"order_id":"1","exec_id":"E","status":"FILLED","quantity":1,"fill_price":"1","executed_at":"2027-01-15T08:00:00Z"})"),
             std::string(R"({"order_id":"0000000000000001","exec_id":"E","status":"DONE","quantity":1,"executed_at":"2027-01-15T08:00:00Z"})"),
             std::string(R"({"order_id":"0000000000000001","exec_id":"E","status":"FILLED","quantity":1,"executed_at":"2027-01-15T08:00:00Z"})"),
             std::string(R"({"order_id":"0000000000000001","exec_id":"E","status":"FILLED","quantity":1,"fill_price":"1"})"),
         }) {
        CAPTURE(body);
        const auto r = f.call("POST", "/v1/exchange/callbacks", "", body,
                              exchange::sign_callback("exchange-secret", now_ms / 1000, body));
        CHECK(r.status == 422);
    }
    CHECK(f.svc.s.last_sequence == before);
}
