// The router against an in-memory engine: every request is decided and applied at once, so
// these tests see exactly what a client would, without sockets or a journal.
#include <doctest/doctest.h>

#include "api/json.h"
#include "api/jwt.h"
#include "api/router.h"
#include "engine/decide.h"
#include "exchange/signature.h"
#include "tests/api/memory_services.h"

#include <fmt/format.h>

using namespace broker;
using namespace broker::api;
using broker::testing::memory_services;
using broker::testing::now_ms;

namespace {

struct fixture {
    memory_services svc;
    router r{svc, router_config{"jwt-secret", "exchange-secret", 300}};
    std::string admin = "Bearer " + sign_jwt(claims{"ops", "admin", now_ms / 1000 + 60, 0}, "jwt-secret");

    std::string token(const std::string& sub) {
        return "Bearer " + sign_jwt(claims{sub, "", now_ms / 1000 + 60, 0}, "jwt-secret");
    }

    http_response send(const http_request& req) {
        std::optional<http_response> out;
        r.handle(req, [&](http_response resp) { out = std::move(resp); });
        REQUIRE(out.has_value());  // every request is answered exactly once
        return *out;
    }

    http_response call(std::string_view method, std::string_view target, std::string_view auth,
                       std::string_view body = "", std::string_view signature = "") {
        return send(http_request{method, target, auth, signature, body});
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

    // Delivers a signed execution report twice, as an at-least-once exchange may: the first is
    // applied, the second acknowledged as a duplicate.
    void deliver_twice(const std::string& body, const std::string& signature) {
        const auto first = call("POST", "/v1/exchange/callbacks", "", body, signature);
        CHECK(first.status == 200);
        CHECK(field_of(first, "status") == "applied");
        const auto again = call("POST", "/v1/exchange/callbacks", "", body, signature);
        CHECK(again.status == 200);
        CHECK(field_of(again, "status") == "duplicate");
    }

    // Settles trade `id` as FILLED at 100 through a signed execution report; the answer's status.
    int fill(int id) {
        const std::string cb =
            fmt::format(R"({{"order_id":"{:016x}","exec_id":"E{}","status":"FILLED","quantity":1,)"
                        R"("fill_price":"100","executed_at":"2027-01-15T08:00:00Z"}})",
                        id, id);
        return call("POST", "/v1/exchange/callbacks", "", cb,
                    exchange::sign_callback("exchange-secret", now_ms / 1000, cb))
            .status;
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
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantity":18446744073709551616})", 400, "invalid_json"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantity":-9223372036854775809})", 400, "invalid_json"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"buy","quantity":1})", 422, "invalid_side"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":null,"quantity":1})", 422, "invalid_side"},
        {"POST", "/v1/trades", R"({"symbol":"ZZZZ","side":"BUY","quantity":1})", 422, "unknown_symbol"},
        {"POST", "/v1/trades", R"({"symbol":"aapl","side":"BUY","quantity":1})", 422, "invalid_symbol"},
        {"POST", "/v1/trades", R"({"symbol":7,"side":"BUY","quantity":1})", 422, "invalid_symbol"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantity":1,"quantity":2})", 400, "duplicate_field"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantiy":1})", 422, "unknown_field"},
        {"POST", "/v1/trades", R"({"symbol":"AAPL","side":"BUY","quantity":1,"client_order_id":5})", 422, "invalid_client_order_id"},
        {"PUT", "/v1/trades", "", 405, "method_not_allowed"},
        {"GET", "/v1/trades?status=everything", "", 422, "invalid_parameter"},
        {"GET", "/v1/trades?limit=0", "", 422, "invalid_parameter"},
        {"GET", "/v1/trades?limit=501", "", 422, "invalid_parameter"},
        {"GET", "/v1/trades?after=xyz", "", 422, "invalid_parameter"},
        {"GET", "/v1/trades?colour=red", "", 422, "invalid_parameter"},
        {"GET", "/v1/trades?limit=1&limit=2", "", 422, "invalid_parameter"},
        {"GET", "/v1/trades?symbol=%ZZ", "", 422, "invalid_parameter"},
        {"GET", "/v1/trades?%FF=1", "", 422, "invalid_parameter"},  // echoed name stays valid JSON
        {"GET", "/v1/account?x=1", "", 422, "invalid_parameter"},
        {"GET", "/v1/trades:by_client_order_id", "", 422, "invalid_parameter"},
        {"GET", "/v1/stream", "", 426, "upgrade_required"},
        {"PATCH", "/v1/trades/0000000000000001", "{}", 422, "missing_field"},
        {"PATCH", "/v1/trades/0000000000000001", R"({"quantity":0})", 422, "invalid_quantity"},
        {"PATCH", "/v1/trades/0000000000000001", R"({"quantity":1,"side":"SELL"})", 422, "unknown_field"},
        {"PATCH", "/v1/trades/0000000000000099", R"({"quantity":1})", 404, "trade_not_found"},
        {"DELETE", "/v1/trades/0000000000000099", "", 404, "trade_not_found"},
        {"DELETE", "/v1/trades/nope", "", 404, "trade_not_found"},
        {"DELETE", "/v1/account", "", 405, "method_not_allowed"},
        {"GET", "/v1/nothing", "", 404, "not_found"},
        {"GET", "/", "", 404, "not_found"},
        // Empty path segments name no route (a literal-minded proxy in front sees another path).
        {"GET", "//v1/account", "", 404, "not_found"},
        {"GET", "/v1//account", "", 404, "not_found"},
        {"GET", "/v1/account/", "", 404, "not_found"},
        {"POST", "/v1/trades/", R"({"symbol":"AAPL","side":"BUY","quantity":1})", 404, "not_found"},
        {"DELETE", "/v1/trades/", "", 404, "not_found"},
        {"GET", "/v1/trades//", "", 404, "not_found"},
        {"GET", "*", "", 404, "not_found"},
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
        const std::string_view method = r.method, target = r.target, body = r.body;
        CAPTURE(method);
        CAPTURE(target);
        CAPTURE(body);
        const bool admin = std::string_view(r.target).starts_with("/admin");
        const auto resp = f.call(r.method, r.target, admin ? f.admin : alice, r.body);
        CHECK(resp.status == r.status);
        CHECK(f.code_of(resp) == r.code);
    }
    CHECK(f.svc.s.last_sequence == before);
}

TEST_CASE("a body declared as anything but JSON is refused 415 and changes nothing") {
    fixture f;
    f.open("alice");
    const auto alice = f.token("alice");
    const std::string trade = R"({"symbol":"AAPL","side":"BUY","quantity":1})";
    const auto place = [&](std::string_view content_type) {
        return f.send(http_request{"POST", "/v1/trades", alice, {}, trade, content_type});
    };
    for (const char* refused :
         {"application/x-www-form-urlencoded", "text/plain", "text/json",
          "multipart/form-data; boundary=x", "application/jsonp", "application/+json",
          "application/json; charset=iso-8859-1", "application/json; charset=\"utf-16\"", "json"}) {
        CAPTURE(refused);
        const auto before = f.svc.s.last_sequence;
        const auto r = place(refused);
        CHECK(r.status == 415);
        CHECK(f.code_of(r) == "unsupported_media_type");
        CHECK(f.svc.s.last_sequence == before);
    }
    // The same body under each way of saying JSON, and without the header at all, is placed.
    for (const char* accepted :
         {"", "application/json", "Application/JSON", "application/json; charset=utf-8",
          " application/json ;CHARSET=\"UTF-8\"", "application/json; version=1",
          "application/vnd.broker+json",
          // A quoted value is one value, whatever it holds: this names no charset.
          "application/json; profile=\"x;charset=latin1\""}) {
        CAPTURE(accepted);
        CHECK(place(accepted).status == 201);
    }
    // The other JSON routes check it too; a route without a body does not look at it.
    CHECK(f.send(http_request{"PUT", "/admin/v1/customers/zed", f.admin, {}, R"({"cash":"1"})",
                              "text/plain"})
              .status == 415);
    CHECK(f.send(http_request{"POST", "/v1/exchange/callbacks", "", "t=1,v1=00", "{}",
                              "text/plain"})
              .status == 415);
    CHECK(f.send(http_request{"GET", "/v1/account", alice, {}, {}, "text/plain"}).status == 200);
}

TEST_CASE("HEAD is routed as GET, and the Allow header of a GET route names it") {
    fixture f;
    f.open("alice");
    const auto alice = f.token("alice");
    const auto get = f.call("GET", "/v1/account", alice);
    const auto head = f.call("HEAD", "/v1/account", alice);
    CHECK(head.status == 200);
    CHECK(head.body == get.body);  // the server leaves the body out and keeps its length
    CHECK(f.call("HEAD", "/v1/account", "").status == 401);
    const auto not_allowed = f.call("HEAD", "/v1/exchange/callbacks", "");
    CHECK(not_allowed.status == 405);
    CHECK(not_allowed.allow == "POST");
    CHECK(f.call("DELETE", "/v1/account", alice).allow == "GET, HEAD");
    CHECK(f.call("PUT", "/v1/trades", alice).allow == "POST, GET, HEAD");
}

TEST_CASE("a full engine queue is answered 503 overloaded") {
    fixture f;
    f.open("alice");
    f.svc.full = true;
    const auto r = f.call("POST", "/v1/trades", f.token("alice"), R"({"symbol":"AAPL","side":"BUY","quantity":1})");
    CHECK(r.status == 503);
    CHECK(f.code_of(r) == "overloaded");
}

TEST_CASE("before the exchange's first quote a symbol is not refused as unlisted") {
    fixture f;
    f.open("alice");
    f.svc.no_quotes_yet = true;
    const auto placed = f.call("POST", "/v1/trades", f.token("alice"),
                               R"({"symbol":"AAPL","side":"BUY","quantity":1})");
    CHECK(placed.status == 503);
    CHECK(f.code_of(placed) == "quotes_unavailable");
    CHECK(placed.retry_after_s == 1);
    const auto opened =
        f.call("PUT", "/admin/v1/customers/bob", f.admin, R"({"cash":"1","positions":{"AAPL":1}})");
    CHECK(opened.status == 503);
    CHECK(f.code_of(opened) == "quotes_unavailable");
    // Nothing was placed or opened; once quotes come, an unlisted symbol is 422 again.
    CHECK(f.svc.s.customers.count("bob") == 0);
    f.svc.no_quotes_yet = false;
    const auto unlisted = f.call("POST", "/v1/trades", f.token("alice"),
                                 R"({"symbol":"ZZZZ","side":"BUY","quantity":1})");
    CHECK(unlisted.status == 422);
    CHECK(f.code_of(unlisted) == "unknown_symbol");
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

    f.deliver_twice(body, good);
    CHECK(f.svc.s.find_customer("alice")->cash.ticks == 10'000 * limits::ticks_per_usd - 10 * 1'012'500);

    const auto got = f.call("GET", "/v1/trades/0000000000000001", f.token("alice"));
    CHECK(f.field_of(got, "status") == "FILLED");

    // Refusals are counted, not only logged: an operator can alert on forged callbacks.
    const auto metrics = f.call("GET", "/metrics", "");
    CHECK(metrics.status == 200);
    CHECK(metrics.content_type.starts_with("text/plain"));
    CHECK(metrics.body.find("broker_exchange_callbacks_refused_total 3\n") != std::string::npos);
    CHECK(metrics.body.find("broker_exchange_callbacks_applied_total 1\n") != std::string::npos);
    CHECK(metrics.body.find("broker_exchange_callbacks_duplicate_total 1\n") != std::string::npos);
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

TEST_CASE(
    "a signed report with an over-long exec_id is applied with the id cut, and acknowledged "
    "again") {
    // As a status query keeps it: refusing the report would not stop the exchange repeating it.
    fixture f;
    f.open("alice");
    REQUIRE(f.call("POST", "/v1/trades", f.token("alice"),
                   R"({"symbol":"AAPL","side":"BUY","quantity":10})")
                .status == 201);
    const std::string long_id = "X" + std::string(limits::exec_id_max + 35, '7');
    const std::string body =
        R"({"order_id":"0000000000000001","exec_id":")" + long_id +
        R"(","status":"FILLED","quantity":10,"fill_price":"101.2500","executed_at":"2027-01-15T08:00:00.000Z"})";
    f.deliver_twice(body, exchange::sign_callback("exchange-secret", now_ms / 1000, body));
    REQUIRE(f.svc.closed.contains(1));
    CHECK(f.svc.closed.at(1).status == trade_status::filled);
    CHECK(f.svc.closed.at(1).exec_id == long_id.substr(0, limits::exec_id_max));
    CHECK(f.svc.s.find_customer("alice")->cash.ticks ==
          10'000 * limits::ticks_per_usd - 10 * 1'012'500);
}

TEST_CASE("a retried client_order_id returns the original trade, and another body is refused") {
    fixture f;
    f.open("alice");
    const auto alice = f.token("alice");
    const char* body = R"({"symbol":"AAPL","side":"BUY","quantity":2,"client_order_id":"k-1"})";
    const auto first = f.call("POST", "/v1/trades", alice, body);
    REQUIRE(first.status == 201);
    const auto again = f.call("POST", "/v1/trades", alice, body);
    CHECK(again.status == 200);
    CHECK(f.field_of(again, "trade_id") == f.field_of(first, "trade_id"));
    const auto other = f.call("POST", "/v1/trades", alice,
                              R"({"symbol":"AAPL","side":"BUY","quantity":3,"client_order_id":"k-1"})");
    CHECK(other.status == 422);
    CHECK(f.code_of(other) == "client_order_id_conflict");
    CHECK(f.svc.s.next_trade_id == 2);
    const auto found = f.call("GET", "/v1/trades:by_client_order_id?client_order_id=k%2D1", alice);
    CHECK(found.status == 200);
    CHECK(f.field_of(found, "trade_id") == f.field_of(first, "trade_id"));
    CHECK(f.call("GET", "/v1/trades:by_client_order_id?client_order_id=k-2", alice).status == 404);
    CHECK(f.call("GET", "/v1/trades:by_client_order_id?client_order_id=k-1", f.token("bob")).status == 404);

    // After a change of quantity the same body is still the same request; the new quantity
    // never was one. (Trade 1 is at the exchange, so this one waits, PLACED, and can change.)
    const char* second = R"({"symbol":"AAPL","side":"BUY","quantity":2,"client_order_id":"k-3"})";
    const auto placed = f.call("POST", "/v1/trades", alice, second);
    REQUIRE(placed.status == 201);
    const auto id = f.field_of(placed, "trade_id");
    REQUIRE(f.call("PATCH", "/v1/trades/" + id, alice, R"({"quantity":4})").status == 200);
    const auto retried = f.call("POST", "/v1/trades", alice, second);
    CHECK(retried.status == 200);
    CHECK(f.field_of(retried, "trade_id") == id);
    CHECK(f.field_of(retried, "quantity") == "4");
    const auto as_patched =
        f.call("POST", "/v1/trades", alice,
               R"({"symbol":"AAPL","side":"BUY","quantity":4,"client_order_id":"k-3"})");
    CHECK(as_patched.status == 422);
    CHECK(f.code_of(as_patched) == "client_order_id_conflict");
}

TEST_CASE("the trade list pages newest first through open and closed trades") {
    fixture f;
    f.open("alice", R"({"cash":"100000","positions":{"AAPL":100}})");
    const auto alice = f.token("alice");
    for (int i = 0; i < 5; ++i) {
        REQUIRE(f.call("POST", "/v1/trades", alice, R"({"symbol":"AAPL","side":"SELL","quantity":1})").status == 201);
    }
    // Settle the first two through signed callbacks, so the list mixes closed and open trades.
    for (const int id : {1, 2}) REQUIRE(f.fill(id) == 200);
    const auto page1 = f.call("GET", "/v1/trades?limit=3", alice);
    REQUIRE(page1.status == 200);
    CHECK(page1.body.find("\"next_after\":\"0000000000000003\"") != std::string::npos);
    CHECK(page1.body.find("0000000000000005") < page1.body.find("0000000000000004"));
    const auto page2 = f.call("GET", "/v1/trades?limit=3&after=0000000000000003", alice);
    CHECK(page2.body.find("0000000000000002") < page2.body.find("0000000000000001"));
    CHECK(page2.body.find("\"next_after\":null") != std::string::npos);
    const auto closed = f.call("GET", "/v1/trades?status=closed", alice);
    CHECK(closed.body.find("0000000000000003") == std::string::npos);
    CHECK(closed.body.find("0000000000000001") != std::string::npos);
    const auto open = f.call("GET", "/v1/trades?status=open&symbol=AAPL", alice);
    CHECK(open.body.find("0000000000000001") == std::string::npos);
    CHECK(open.body.find("0000000000000005") != std::string::npos);
    CHECK(f.call("GET", "/v1/trades?symbol=MSFT", alice).body.find("trade_id") == std::string::npos);
    CHECK(f.call("GET", "/v1/trades", f.token("bob")).status == 404);  // bob has no account
}

TEST_CASE("a symbol filter reads a bounded run of closed trades per page and pages on") {
    fixture f;
    f.open("alice", R"({"cash":"100000","positions":{"AAPL":100,"MSFT":100}})");
    const auto alice = f.token("alice");
    // Trades 1-9, of which 1, 4, 8 and 9 are MSFT. A customer's trades go to the exchange one
    // at a time: 1-3 fill, 4 stays at the exchange, 5-8 are canceled while queued behind it, and
    // 9 stays queued.
    for (const char* ticker :
         {"MSFT", "AAPL", "AAPL", "MSFT", "AAPL", "AAPL", "AAPL", "MSFT", "MSFT"}) {
        REQUIRE(f.call("POST", "/v1/trades", alice,
                       fmt::format(R"({{"symbol":"{}","side":"SELL","quantity":1}})", ticker))
                    .status == 201);
    }
    for (const int id : {1, 2, 3}) REQUIRE(f.fill(id) == 200);
    for (const int id : {5, 6, 7, 8}) {
        REQUIRE(f.call("DELETE", fmt::format("/v1/trades/{:016x}", id), alice).status == 200);
    }
    auto ids_of = [](const std::string& body) {
        std::vector<std::string> out;
        for (auto at = body.find(R"("trade_id":")"); at != std::string::npos;
             at = body.find(R"("trade_id":")", at + 1)) {
            out.push_back(body.substr(at + 12, 16));
        }
        return out;
    };
    using ids = std::vector<std::string>;
    // Unbounded enough: one page.
    const auto whole = f.call("GET", "/v1/trades?symbol=MSFT", alice);
    REQUIRE(whole.status == 200);
    CHECK(ids_of(whole.body) ==
          ids{"0000000000000009", "0000000000000008", "0000000000000004", "0000000000000001"});
    CHECK(whole.body.find(R"("next_after":null)") != std::string::npos);

    // Three closed trades read per page: 8, 7, 6, then 5, 3, 2, then 1. An open trade joins the
    // page only above where the read stopped, so trade 4 waits for the second page, once the
    // closed trades around it have been read.
    router_config small{"jwt-secret", "exchange-secret", 300};
    small.list_scan_max = 3;
    router r{f.svc, small};
    auto get = [&](std::string_view target) {
        std::optional<http_response> out;
        r.handle(http_request{"GET", target, alice, {}, {}},
                 [&](http_response resp) { out = std::move(resp); });
        REQUIRE(out.has_value());
        REQUIRE(out->status == 200);
        return out->body;
    };
    const auto p1 = get("/v1/trades?symbol=MSFT");
    CHECK(ids_of(p1) == ids{"0000000000000009", "0000000000000008"});
    CHECK(p1.find(R"("next_after":"0000000000000006")") != std::string::npos);
    const auto p2 = get("/v1/trades?symbol=MSFT&after=0000000000000006");
    CHECK(ids_of(p2) == ids{"0000000000000004"});
    CHECK(p2.find(R"("next_after":"0000000000000002")") != std::string::npos);
    const auto p3 = get("/v1/trades?symbol=MSFT&after=0000000000000002");
    CHECK(ids_of(p3) == ids{"0000000000000001"});
    CHECK(p3.find(R"("next_after":null)") != std::string::npos);
    // A page that fills ends at its last trade, as always.
    const auto full = get("/v1/trades?symbol=MSFT&limit=1");
    CHECK(ids_of(full) == ids{"0000000000000009"});
    CHECK(full.find(R"("next_after":"0000000000000009")") != std::string::npos);
    // Open trades alone never touch the store.
    const auto open = get("/v1/trades?status=open&symbol=MSFT");
    CHECK(ids_of(open) == ids{"0000000000000009", "0000000000000004"});
    CHECK(open.find(R"("next_after":null)") != std::string::npos);

    // Trade 4 fills after the engine listed it open and before the store is read: below where
    // the first page's read stops, so that page leaves it out, and the second lists it filled.
    f.svc.before_closed_trades = [&] { REQUIRE(f.fill(4) == 200); };
    const auto q1 = get("/v1/trades?symbol=MSFT");
    CHECK_FALSE(static_cast<bool>(f.svc.before_closed_trades));
    CHECK(ids_of(q1) == ids{"0000000000000009", "0000000000000008"});
    CHECK(q1.find(R"("next_after":"0000000000000006")") != std::string::npos);
    const auto q2 = get("/v1/trades?symbol=MSFT&after=0000000000000006");
    CHECK(ids_of(q2) == ids{"0000000000000004"});
    CHECK(q2.find(R"("status":"FILLED")") != std::string::npos);
    CHECK(q2.find(R"("next_after":"0000000000000003")") != std::string::npos);
    const auto q3 = get("/v1/trades?symbol=MSFT&after=0000000000000003");
    CHECK(ids_of(q3) == ids{"0000000000000001"});
    CHECK(q3.find(R"("next_after":null)") != std::string::npos);
}

TEST_CASE("a trade that closes while the list is read is listed once, closed") {
    fixture f;
    f.open("alice", R"({"cash":"100000","positions":{"AAPL":100}})");
    const auto alice = f.token("alice");
    for (int i = 0; i < 3; ++i) {
        REQUIRE(
            f.call("POST", "/v1/trades", alice, R"({"symbol":"AAPL","side":"SELL","quantity":1})")
                .status == 201);
    }
    // The engine answers with trades 1-3 open; trade 1 fills before the store is read.
    f.svc.before_closed_trades = [&] { REQUIRE(f.fill(1) == 200); };
    const auto page = f.call("GET", "/v1/trades", alice);
    REQUIRE(page.status == 200);
    CHECK_FALSE(static_cast<bool>(f.svc.before_closed_trades));  // the fill did land in between
    const auto first = page.body.find("0000000000000001");
    REQUIRE(first != std::string::npos);
    CHECK(page.body.find("0000000000000001", first + 1) == std::string::npos);
    CHECK(page.body.find(R"("status":"FILLED")") != std::string::npos);
    CHECK(page.body.find("0000000000000003") < page.body.find("0000000000000002"));
    CHECK(page.body.find("0000000000000002") < first);

    // A store that cannot be read is a 503, not a page that silently lacks the closed trades.
    f.svc.store_unreadable = true;
    const auto failed = f.call("GET", "/v1/trades", alice);
    CHECK(failed.status == 503);
    CHECK(f.code_of(failed) == "storage_error");
    CHECK(f.call("GET", "/v1/trades?status=open", alice).status == 200);  // the engine alone
}

// router::authorize_stream's answer (the test services answer at once).
result<stream_request, http_response> authorize_stream(router& r, std::string_view target,
                                                       std::string_view authorization) {
    std::optional<result<stream_request, http_response>> got;
    r.authorize_stream(http_request{"GET", target, authorization, {}, {}},
                       [&](result<stream_request, http_response> answer) { got = answer; });
    REQUIRE(got.has_value());
    return *got;
}

TEST_CASE("a stream opens only for a customer that exists") {
    fixture f;
    f.open("alice");
    CHECK(authorize_stream(f.r, "/v1/stream", f.token("alice")).has_value());
    for (const std::string& who : {f.token("nobody"), f.admin}) {
        // With a cursor too: a customer that does not exist has no updates, and "since is past
        // the last update" would send the app after the wrong fix.
        for (const char* target : {"/v1/stream", "/v1/stream?since=0", "/v1/stream?since=5"}) {
            CAPTURE(target);
            const auto refused = authorize_stream(f.r, target, who);
            REQUIRE_FALSE(refused.has_value());
            CHECK(refused.error().status == 404);
            CHECK(f.code_of(refused.error()) == "customer_not_found");
        }
    }
    // Nor does an unreadable store hide that the customer does not exist.
    f.svc.store_unreadable = true;
    const auto unknown = authorize_stream(f.r, "/v1/stream?since=5", f.token("nobody"));
    REQUIRE_FALSE(unknown.has_value());
    CHECK(unknown.error().status == 404);
    f.svc.store_unreadable = false;
    f.svc.full = true;  // the engine's queue: asked, and full
    const auto busy = authorize_stream(f.r, "/v1/stream", f.token("alice"));
    REQUIRE_FALSE(busy.has_value());
    CHECK(busy.error().status == 503);
}

TEST_CASE("a stream resumes only after an update the customer has had") {
    fixture f;
    f.open("alice");
    const auto alice = f.token("alice");
    REQUIRE(f.call("POST", "/v1/trades", alice, R"({"symbol":"AAPL","side":"BUY","quantity":1})")
                .status == 201);
    const auto last = f.svc.updates["alice"].back().sequence;
    REQUIRE(last >= 1);
    auto upgrade = [&](const std::string& target) { return authorize_stream(f.r, target, alice); };
    CHECK(upgrade("/v1/stream").has_value());
    CHECK(upgrade("/v1/stream?since=0").has_value());
    const auto at_last = upgrade(fmt::format("/v1/stream?since={}", last));
    REQUIRE(at_last.has_value());
    CHECK(at_last->since == last);
    for (const std::uint64_t ahead :
         {last + 1, last + 1000, std::uint64_t{18446744073709551615u}}) {
        CAPTURE(ahead);
        const auto refused = upgrade(fmt::format("/v1/stream?since={}", ahead));
        REQUIRE_FALSE(refused.has_value());
        CHECK(refused.error().status == 422);
        CHECK(f.code_of(refused.error()) == "since_ahead");
    }
    f.svc.store_unreadable = true;
    const auto unreadable = upgrade(fmt::format("/v1/stream?since={}", last));
    REQUIRE_FALSE(unreadable.has_value());
    CHECK(unreadable.error().status == 503);
    CHECK(upgrade("/v1/stream").has_value());  // nothing to read without since
}

TEST_CASE("cancel and modify answer 404 for trades the caller does not own, open or closed") {
    fixture f;
    f.open("alice");
    f.open("bob");
    const auto alice = f.token("alice");
    const auto bob = f.token("bob");
    f.call("POST", "/v1/trades", alice, R"({"symbol":"AAPL","side":"BUY","quantity":1})");  // sent
    f.call("POST", "/v1/trades", alice, R"({"symbol":"AAPL","side":"BUY","quantity":1})");  // PLACED
    CHECK(f.call("DELETE", "/v1/trades/0000000000000002", bob).status == 404);
    CHECK(f.call("PATCH", "/v1/trades/0000000000000002", bob, R"({"quantity":5})").status == 404);
    CHECK(f.call("DELETE", "/v1/trades/0000000000000001", alice).status == 422);
    const auto modified = f.call("PATCH", "/v1/trades/0000000000000002", alice, R"({"quantity":5})");
    CHECK(modified.status == 200);
    CHECK(f.field_of(modified, "quantity") == "5");
    const auto canceled = f.call("DELETE", "/v1/trades/0000000000000002", alice);
    CHECK(canceled.status == 200);
    CHECK(f.field_of(canceled, "status") == "CANCELED");
    CHECK(f.call("DELETE", "/v1/trades/0000000000000002", alice).status == 422);  // closed, owned
    CHECK(f.call("DELETE", "/v1/trades/0000000000000002", bob).status == 404);    // closed, not
    // Another customer's closed trade, another's open one and an id never issued get the same
    // answer, body and all.
    const auto closed_other =
        f.call("PATCH", "/v1/trades/0000000000000002", bob, R"({"quantity":2})");
    const auto open_other =
        f.call("PATCH", "/v1/trades/0000000000000001", bob, R"({"quantity":2})");
    const auto never = f.call("PATCH", "/v1/trades/00000000000000ff", bob, R"({"quantity":2})");
    CHECK(closed_other.status == 404);
    CHECK(closed_other.body == open_other.body);
    CHECK(closed_other.body == never.body);
    CHECK(f.call("DELETE", "/v1/trades/0000000000000001", bob).body == closed_other.body);
    CHECK(f.svc.s.find_customer("alice")->reserved_cash.ticks == 105 * limits::ticks_per_usd);
}

TEST_CASE("a store that cannot be read is a 503, never a 404 or a second trade") {
    fixture f;
    f.open("alice");
    const auto alice = f.token("alice");
    REQUIRE(f.call("POST", "/v1/trades", alice,
                   R"({"symbol":"AAPL","side":"BUY","quantity":1,"client_order_id":"k-1"})")
                .status == 201);  // sent: open
    REQUIRE(f.call("POST", "/v1/trades", alice,
                   R"({"symbol":"AAPL","side":"BUY","quantity":1,"client_order_id":"k-2"})")
                .status == 201);                                                    // waits, PLACED
    REQUIRE(f.call("DELETE", "/v1/trades/0000000000000002", alice).status == 200);  // closed
    const auto updates = f.svc.updates["alice"].size();

    f.svc.store_unreadable = true;
    auto refused = [&](const http_response& r) {
        CHECK(r.status == 503);
        CHECK(f.code_of(r) == "storage_error");
    };
    // Whether a client_order_id was used before is the store's to say: without its answer the
    // placement is refused, not placed a second time.
    refused(f.call("POST", "/v1/trades", alice,
                   R"({"symbol":"AAPL","side":"BUY","quantity":1,"client_order_id":"k-9"})"));
    refused(f.call("POST", "/v1/trades", alice,
                   R"({"symbol":"AAPL","side":"BUY","quantity":1,"client_order_id":"k-2"})"));
    CHECK(f.svc.s.next_trade_id == 3);
    CHECK(f.svc.updates["alice"].size() == updates);
    // The closed trade cannot be read, and is not reported missing.
    refused(f.call("GET", "/v1/trades/0000000000000002", alice));
    refused(f.call("GET", "/v1/trades:by_client_order_id?client_order_id=k-2", alice));
    refused(f.call("DELETE", "/v1/trades/0000000000000002", alice));
    refused(f.call("PATCH", "/v1/trades/0000000000000002", alice, R"({"quantity":2})"));
    // What the engine holds is still answered.
    CHECK(f.call("GET", "/v1/trades/0000000000000001", alice).status == 200);
    CHECK(f.call("GET", "/v1/trades:by_client_order_id?client_order_id=k-1", alice).status == 200);
    CHECK(f.call("POST", "/v1/trades", alice, R"({"symbol":"AAPL","side":"BUY","quantity":1})")
              .status == 201);

    f.svc.store_unreadable = false;
    const auto again =
        f.call("POST", "/v1/trades", alice,
               R"({"symbol":"AAPL","side":"BUY","quantity":1,"client_order_id":"k-2"})");
    CHECK(again.status == 200);
    CHECK(f.field_of(again, "status") == "CANCELED");
    CHECK(f.call("GET", "/v1/trades/0000000000000002", alice).status == 200);
}

TEST_CASE("the server upgrades exactly the paths the router reads as the stream") {
    for (const char* yes : {"/v1/stream", "/v1/stream?since=3", "/v1/stream?access_token=x"}) {
        CAPTURE(yes);
        CHECK(router::is_stream_target(yes));
    }
    for (const char* no :
         {"/v1/streams", "/v1/stream/x", "/v2/stream", "/stream", "/v1", "/", "/v1/trades",
          "/v1/stream%2F", "/v1/stream/", "/v1//stream", "/v1/stream/?access_token=x"}) {
        CAPTURE(no);
        CHECK_FALSE(router::is_stream_target(no));
    }
}

TEST_CASE("a signed fill against the order's terms is acknowledged and the trade ends REJECTED") {
    fixture f;
    f.open("alice");
    const auto alice = f.token("alice");
    REQUIRE(f.call("POST", "/v1/trades", alice, R"({"symbol":"AAPL","side":"BUY","quantity":10})")
                .status == 201);  // reserves 10 x 105.0000, its limit
    // 105.0001 is above the limit: more than was reserved.
    const std::string body =
        R"({"order_id":"0000000000000001","exec_id":"E1","status":"FILLED","quantity":10,)"
        R"("fill_price":"105.0001","executed_at":"2027-01-15T08:00:00.000Z"})";
    const auto signature = exchange::sign_callback("exchange-secret", now_ms / 1000, body);
    // Refusing it would have the exchange repeat it for ever and leave the trade IN_PROGRESS.
    f.deliver_twice(body, signature);
    const auto got = f.call("GET", "/v1/trades/0000000000000001", alice);
    CHECK(f.field_of(got, "status") == "REJECTED");
    CHECK(f.field_of(got, "reason") == "fill_mismatch");
    const auto account = f.call("GET", "/v1/account", alice);
    CHECK(f.field_of(account, "cash") == "10000.0000");
    CHECK(f.field_of(account, "reserved_cash") == "0.0000");
    CHECK(f.call("GET", "/v1/positions", alice).body ==  // the 10 opened with, no more
          R"([{"symbol":"AAPL","quantity":10,"reserved_quantity":0,"available_quantity":10}])");
}
