// libFuzzer target: one untrusted HTTP request through api::router, down to the engine.
//
// The router is where bytes from the network become engine commands (JSON via simdjson, JWTs,
// callback HMACs, ids, money), so it is fuzzed with the in-memory services, which decide and apply
// each command at once: a request that gets past parsing also exercises the engine's rules.
//
// Input layout:
//
//   input := mode:u8 method '\n' target '\n' authorization '\n' signature '\n' body
//
// Missing lines are empty; the body is the rest and may contain '\n'. Random bytes almost never
// form a valid HS256 token or callback HMAC, so the mode byte lets the fuzzer reach authenticated
// code by substituting credentials minted here:
//
//   bits 0-1  authorization: 0 as given, 1 customer "alice", 2 admin, 3 customer "bob" (no account)
//   bits 2-3  signature: 0 as given, 1 valid over the body, 2 valid but stale, 3 as given
//   bits 4-5  entry point: 0 and 3 handle(request), 1 handle_exchange_callback(signature, body),
//             2 authorize_stream(request)
//   bits 6-7  Content-Type: 0 none, 1 application/json (every printable seed letter), 2 a form,
//             3 JSON in ISO-8859-1
//
// In seed files the mode is a printable letter: '@' all as given, 'A' alice, 'B' admin, 'C' bob,
// 'D' signed callback, 'H' stale callback, 'P' callback called directly, 'T' signed callback
// called directly, '`' and 'a' stream authorization as given and as alice.
//
// Every input starts from a copy of the same seeded state (alice funded, one closed, one
// in-progress and one queued trade), so that an input reproduces on its own, in any order.
//
// Properties checked after every request (a violation traps, so libFuzzer saves the input):
// the responder ran exactly once; the status is in [200, 599] and never 500; the body is valid
// JSON; a 405 names the allowed method and a 429 when to retry; the engine's invariants hold.
#include <fmt/format.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>  // tests/api/memory_services.h uses std::sort without including it
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "api/json.h"
#include "api/jwt.h"
#include "api/router.h"
#include "engine/state.h"
#include "exchange/signature.h"
#include "tests/api/memory_services.h"

namespace {

using namespace broker;
using namespace broker::api;
using broker::testing::memory_services;
using broker::testing::now_ms;

constexpr std::string_view jwt_secret = "fuzz-jwt-secret";
constexpr std::string_view exchange_secret = "fuzz-exchange-secret";
constexpr std::int64_t tolerance_s = 300;
constexpr std::int64_t now_s = now_ms / 1000;

router_config config() {
    return router_config{std::string(jwt_secret), std::string(exchange_secret), tolerance_s};
}

[[noreturn]] void fail(std::string_view what, const http_response* resp) {
    std::fprintf(stderr, "request_fuzz: property violated: %.*s\n", static_cast<int>(what.size()),
                 what.data());
    if (resp != nullptr) {
        std::fprintf(stderr, "  status %u, body: %s\n", resp->status, resp->body.c_str());
    }
    std::fflush(stderr);
    __builtin_trap();
}

std::string bearer(const std::string& sub, const std::string& role) {
    return "Bearer " + sign_jwt(claims{sub, role, now_s + 3600, now_s}, jwt_secret);
}

struct credentials {
    std::string alice = bearer("alice", "");
    std::string admin = bearer("ops", "admin");
    std::string bob = bearer("bob", "");
};

const credentials& creds() {
    static const credentials c;
    return c;
}

http_response call(router& r, const http_request& req) {
    std::optional<http_response> out;
    r.handle(req, [&](http_response resp) { out = std::move(resp); });
    if (!out) fail("seed request not answered", nullptr);
    return *out;
}

void expect(router& r, const http_request& req, unsigned status) {
    const auto resp = call(r, req);
    if (resp.status != status) fail("seed request got an unexpected status", &resp);
}

std::string fill_body(std::string_view id, int qty, std::string_view price, std::string_view exec) {
    return fmt::format(R"({{"order_id":"{}","status":"FILLED","quantity":{},"fill_price":"{}",)"
                       R"("exec_id":"{}","executed_at":"2027-01-15T08:00:00.000Z"}})",
                       id, qty, price, exec);
}

// The state every input starts from, built once through the router itself so that it is exactly
// what a client could have produced: alice with cash and shares; trade 1 (BUY AAPL) filled and
// closed; trade 2 (SELL MSFT) at the exchange; trade 3 (BUY AAPL, client order id "seed-3")
// queued behind it.
const memory_services& baseline() {
    static const memory_services seeded = [] {
        spdlog::set_level(spdlog::level::off);  // refused callbacks log warnings; keep runs quiet
        memory_services svc;
        router r(svc, config());
        const auto& c = creds();
        expect(r,
               {"PUT", "/admin/v1/customers/alice", c.admin, "",
                R"({"cash":"1000000.0000","positions":{"AAPL":100,"MSFT":50}})"},
               201);
        expect(
            r,
            {"POST", "/v1/trades", c.alice, "", R"({"symbol":"AAPL","side":"BUY","quantity":10})"},
            201);
        const auto fill = fill_body("0000000000000001", 10, "100.0000", "seed-exec-1");
        const auto sig = exchange::sign_callback(exchange_secret, now_s, fill);
        expect(r, {"POST", "/v1/exchange/callbacks", "", sig, fill}, 200);
        expect(
            r,
            {"POST", "/v1/trades", c.alice, "", R"({"symbol":"MSFT","side":"SELL","quantity":5})"},
            201);
        expect(r,
               {"POST", "/v1/trades", c.alice, "",
                R"({"symbol":"AAPL","side":"BUY","quantity":1,"client_order_id":"seed-3"})"},
               201);
        if (auto bad = check_invariants(svc.s)) fail(*bad, nullptr);
        return svc;
    }();
    return seeded;
}

// Takes the next '\n'-terminated field; the last one may end at the end of the input.
std::string_view next_line(std::string_view& rest) {
    const auto end = rest.find('\n');
    const auto line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
    return line;
}

bool is_json(const std::string& text) {
    static simdjson::dom::parser parser;
    const simdjson::padded_string padded(text);
    return !parser.parse(padded).error();
}

void check_response(int calls, const http_response& resp) {
    if (calls != 1) fail(calls == 0 ? "responder never called" : "responder called twice", &resp);
    if (resp.status < 200 || resp.status > 599) fail("status outside [200, 599]", &resp);
    if (resp.status == 500) fail("internal server error", &resp);
    // Every answer is JSON but the Prometheus text of GET /metrics, which says so.
    if (resp.content_type == "application/json" && !is_json(resp.body)) {
        fail("body is not valid JSON", &resp);
    }
    if (resp.content_type != "application/json" && resp.status != 200) fail("non-JSON error", &resp);
    if (resp.status == 405 && resp.allow.empty()) fail("405 without an Allow header", &resp);
    if (resp.status == 429 && resp.retry_after_s <= 0) fail("429 without Retry-After", &resp);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return -1;  // no mode byte: nothing to try, keep it out of the corpus
    const std::uint8_t mode = data[0];
    std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
    http_request req;
    req.method = next_line(rest);
    req.target = next_line(rest);
    req.authorization = next_line(rest);
    req.signature = next_line(rest);
    req.body = rest;

    const auto& c = creds();
    switch (mode & 3) {
        case 1:
            req.authorization = c.alice;
            break;
        case 2:
            req.authorization = c.admin;
            break;
        case 3:
            req.authorization = c.bob;
            break;
        default:
            break;
    }
    std::string signature;
    switch ((mode >> 2) & 3) {
        case 1:
            signature = exchange::sign_callback(exchange_secret, now_s, req.body);
            break;
        case 2:
            signature = exchange::sign_callback(exchange_secret, now_s - tolerance_s - 1, req.body);
            break;
        default:
            break;
    }
    if (!signature.empty()) req.signature = signature;
    static constexpr std::string_view content_types[] = {"", "application/json",
                                                         "application/x-www-form-urlencoded",
                                                         "application/json; charset=iso-8859-1"};
    req.content_type = content_types[(mode >> 6) & 3];

    memory_services svc = baseline();
    router r(svc, config());
    int calls = 0;
    http_response resp;
    auto respond = [&](http_response out) {
        ++calls;
        resp = std::move(out);
    };
    switch ((mode >> 4) & 3) {
        case 1:
            r.handle_exchange_callback(req.signature, req.body, respond);
            break;
        case 2: {
            // The test services answer at once, so the decision is in by the time this returns.
            std::optional<result<stream_request, http_response>> stream;
            int decided = 0;
            r.authorize_stream(req, [&](result<stream_request, http_response> s) {
                ++decided;
                stream = std::move(s);
            });
            if (decided != 1) fail("authorize_stream decided other than once", nullptr);
            if (*stream) {
                if (!valid_customer_id((*stream)->customer_id)) {
                    fail("stream for an invalid customer id", nullptr);
                }
                return 0;
            }
            respond(stream->error());
            break;
        }
        default:
            r.handle(req, respond);
            break;
    }
    check_response(calls, resp);
    if (auto bad = check_invariants(svc.s)) fail(*bad, &resp);
    return 0;
}
