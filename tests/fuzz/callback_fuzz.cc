// libFuzzer target: one exchange callback (POST /v1/exchange/callbacks) through
// api::router::handle_exchange_callback, down to the engine.
//
// A callback is the one input that moves money without a customer's token: its X-Exchange-Signature
// header (exchange/signature.h) is all that stands between the network and apply_execution. This
// target fuzzes both halves: the header grammar and HMAC check, and, behind a valid signature, the
// callback JSON and the engine's settlement rules.
//
// Input layout:
//
//   input := mode:u8 header '\n' body          (no '\n': the whole rest is the header, body empty)
//
//   bits 0-1  the signature header sent:
//             0  `header` as given (the signature grammar on arbitrary bytes)
//             1  sign_callback over `body` at the current time (reaches the JSON and the engine)
//             2  sign_callback over `body` at a time chosen by bits 2-3 (the tolerance window)
//             3  `header` supplies the parts, we supply the MAC: header := T [',' REST], sent as
//                "t=" T ",v1=" HMAC(secret, T "." body) [',' REST], so that the timestamp text
//                and the trailing parts are fuzzed behind a MAC that matches
//   bits 2-3  with signature mode 2, the signing time: now - tolerance - 1 (stale), now +
//             tolerance + 1 (stale), now - tolerance, now + tolerance (both still accepted)
//   bit 4     deliver the same callback twice, as an at-least-once exchange does
//
// In seed files the mode is a printable letter: '@' header as given, 'A' signed now, 'B'/'F'
// stale (past/future), 'J'/'N' at the edges of the window, 'C' given parts with our MAC, and with
// bit 4 set 'P' (as given, twice), 'Q' (signed now, twice), 'S' (given parts, twice).
//
// Every input starts from a copy of the same seeded state, so that an input reproduces alone:
//   alice: trade 1 (BUY AAPL 10) FILLED and closed; trade 2 (SELL MSFT 5) IN_PROGRESS;
//          trade 3 (BUY AAPL 1) PLACED behind it;
//   bob:   trade 4 (BUY AAPL 2, limit 105.0000 from the 5% collar) IN_PROGRESS.
//
// Properties checked for every delivery (a violation traps, so libFuzzer saves the input):
//   - the responder ran exactly once, with a 2xx or 4xx status (never 5xx) and a JSON body;
//   - 401 exactly when verify_callback refuses the header, which (for modes 1-3) must be for the
//     reason the mode implies: never for a header signed now, only `stale` outside the window,
//     never `mismatch` when we supplied the MAC;
//   - a header that verifies re-encodes: sign_callback(secret, t, body) is exactly its t and v1
//     parts (one spelling per timestamp and MAC);
//   - 200 is {"status":"applied"}, which appended events, or {"status":"duplicate"}; any other
//     answer changed nothing;
//   - the engine's invariants (check_invariants) hold afterwards;
//   - a second delivery is answered as the first, except that "applied" becomes "duplicate",
//     and changes nothing.
#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>  // tests/api/memory_services.h uses std::sort without including it
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

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

[[noreturn]] void fail(std::string_view what, const http_response* resp = nullptr) {
    std::fprintf(stderr, "callback_fuzz: property violated: %.*s\n", static_cast<int>(what.size()),
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

http_response call(router& r, const http_request& req) {
    std::optional<http_response> out;
    r.handle(req, [&](http_response resp) { out = std::move(resp); });
    if (!out) fail("seed request not answered");
    return *out;
}

void expect(router& r, const http_request& req, unsigned status) {
    const auto resp = call(r, req);
    if (resp.status != status) fail("seed request got an unexpected status", &resp);
}

// The seeded state described at the top, built through the router as a client would have.
const memory_services& baseline() {
    static const memory_services seeded = [] {
        spdlog::set_level(spdlog::level::off);  // refused callbacks log warnings; keep runs quiet
        memory_services svc;
        router r(svc, config());
        const std::string admin = bearer("ops", "admin");
        const std::string alice = bearer("alice", "");
        const std::string bob = bearer("bob", "");
        expect(r,
               {"PUT", "/admin/v1/customers/alice", admin, "",
                R"({"cash":"1000000.0000","positions":{"AAPL":100,"MSFT":50}})"},
               201);
        expect(r, {"PUT", "/admin/v1/customers/bob", admin, "", R"({"cash":"5000.0000"})"}, 201);
        expect(r,
               {"POST", "/v1/trades", alice, "", R"({"symbol":"AAPL","side":"BUY","quantity":10})"},
               201);
        const std::string fill =
            R"({"order_id":"0000000000000001","status":"FILLED","quantity":10,)"
            R"("fill_price":"100.0000","exec_id":"seed-exec-1",)"
            R"("executed_at":"2027-01-15T08:00:00.000Z"})";
        expect(r,
               {"POST", "/v1/exchange/callbacks", "",
                exchange::sign_callback(exchange_secret, now_s, fill), fill},
               200);
        expect(r,
               {"POST", "/v1/trades", alice, "", R"({"symbol":"MSFT","side":"SELL","quantity":5})"},
               201);
        expect(r,
               {"POST", "/v1/trades", alice, "", R"({"symbol":"AAPL","side":"BUY","quantity":1})"},
               201);
        expect(r, {"POST", "/v1/trades", bob, "", R"({"symbol":"AAPL","side":"BUY","quantity":2})"},
               201);
        const auto in_progress = [&](std::uint64_t id) {
            const trade* t = svc.s.find_open_trade(trade_id{id});
            return t != nullptr && t->status == trade_status::in_progress;
        };
        if (!in_progress(2) || !in_progress(4) || svc.s.find_open_trade(trade_id{1}) != nullptr) {
            fail("seed state is not the one described");
        }
        if (auto bad = check_invariants(svc.s)) fail(*bad);
        return svc;
    }();
    return seeded;
}

std::string hmac_hex(std::string_view t_text, std::string_view body) {
    std::string message;
    message.append(t_text).append(1, '.').append(body);
    std::array<unsigned char, 32> mac{};
    unsigned int mac_len = 0;
    if (HMAC(EVP_sha256(), exchange_secret.data(), static_cast<int>(exchange_secret.size()),
             reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac.data(),
             &mac_len) == nullptr ||
        mac_len != mac.size()) {
        fail("HMAC failed");
    }
    std::string hex;
    for (const unsigned char byte : mac) hex += fmt::format("{:02x}", byte);
    return hex;
}

bool is_json(const std::string& text) {
    static simdjson::dom::parser parser;
    const simdjson::padded_string padded(text);
    return !parser.parse(padded).error();
}

struct delivery {
    http_response resp;
    std::uint64_t sequence_before = 0;
    std::uint64_t sequence_after = 0;
};

delivery deliver(memory_services& svc, std::string_view header, std::string_view body) {
    router r(svc, config());
    delivery d;
    d.sequence_before = svc.s.last_sequence;
    int calls = 0;
    r.handle_exchange_callback(header, body, [&](http_response out) {
        ++calls;
        d.resp = std::move(out);
    });
    d.sequence_after = svc.s.last_sequence;
    const http_response& resp = d.resp;
    if (calls != 1) fail(calls == 0 ? "responder never called" : "responder called twice", &resp);
    if (resp.status < 200 || resp.status > 499 || (resp.status > 299 && resp.status < 400)) {
        fail("status is neither 2xx nor 4xx", &resp);
    }
    if (!is_json(resp.body)) fail("body is not valid JSON", &resp);
    if (auto bad = check_invariants(svc.s)) fail(*bad, &resp);
    const bool applied = resp.status == 200 && resp.body == R"({"status":"applied"})";
    const bool duplicate = resp.status == 200 && resp.body == R"({"status":"duplicate"})";
    if (resp.status == 200 && !applied && !duplicate) fail("200 with an unexpected body", &resp);
    if (applied && d.sequence_after == d.sequence_before) fail("applied, but no events", &resp);
    if (!applied && d.sequence_after != d.sequence_before) fail("events without 'applied'", &resp);
    return d;
}

// The "t=...,v1=..." prefix of a header, up to the end of the MAC.
std::string_view signed_parts(std::string_view header) {
    const std::size_t v1 = header.find(",v1=");
    if (v1 == std::string_view::npos) fail("verified header without v1");
    return header.substr(0, std::min(header.size(), v1 + 4 + 64));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return -1;  // no mode byte
    const std::uint8_t mode = data[0];
    const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
    const std::size_t eol = rest.find('\n');
    const std::string_view given = rest.substr(0, eol);
    const std::string_view body =
        eol == std::string_view::npos ? std::string_view{} : rest.substr(eol + 1);

    std::string header;
    std::optional<exchange::signature_error> must_fail_with;
    const int sig_mode = mode & 3;
    switch (sig_mode) {
        case 0:
            header = given;
            break;
        case 1:
            header = exchange::sign_callback(exchange_secret, now_s, body);
            break;
        case 2: {
            constexpr std::array<std::int64_t, 4> offsets{-tolerance_s - 1, tolerance_s + 1,
                                                          -tolerance_s, tolerance_s};
            const std::int64_t offset = offsets[(mode >> 2) & 3];
            header = exchange::sign_callback(exchange_secret, now_s + offset, body);
            if (offset < -tolerance_s || offset > tolerance_s) {
                must_fail_with = exchange::signature_error::stale;
            }
            break;
        }
        default: {
            const std::size_t comma = given.find(',');
            const std::string_view t_text = given.substr(0, comma);
            header = "t=" + std::string(t_text) + ",v1=" + hmac_hex(t_text, body);
            if (comma != std::string_view::npos) header += given.substr(comma);
            break;
        }
    }

    const auto verified =
        exchange::verify_callback(exchange_secret, header, body, now_s, tolerance_s);
    if (verified) {
        // Decode -> encode: the timestamp as parsed, signed again, is the header's own prefix.
        const std::string_view head = signed_parts(header);
        const std::size_t comma = head.find(',');
        std::int64_t t = 0;
        for (const char c : head.substr(2, comma - 2)) t = t * 10 + (c - '0');
        if (exchange::sign_callback(exchange_secret, t, body) != head) {
            fail("verified header does not re-encode to its t and v1 parts");
        }
        if (must_fail_with) fail("a header signed outside the window verified");
    } else {
        const auto why = verified.error();
        if (sig_mode == 1) fail("a header signed now was refused");
        if (must_fail_with && why != *must_fail_with) fail("a stale header refused for another reason");
        if (sig_mode == 2 && !must_fail_with) fail("a header signed inside the window was refused");
        if (sig_mode == 3 && why == exchange::signature_error::mismatch) {
            fail("a header with our MAC over its own timestamp text is a mismatch");
        }
        if (header.empty() != (why == exchange::signature_error::missing)) {
            fail("`missing` is not the same as an empty header");
        }
        if (header.size() > exchange::signature_header_max &&
            why != exchange::signature_error::malformed) {
            fail("an over-long header was not refused as malformed");
        }
    }

    memory_services svc = baseline();
    const delivery first = deliver(svc, header, body);
    if ((first.resp.status == 401) != !verified) {
        fail("401 if and only if the signature does not verify", &first.resp);
    }
    if (mode & 0x10) {
        const delivery second = deliver(svc, header, body);
        const bool first_ok = first.resp.status == 200;
        if (second.resp.status != first.resp.status) {
            fail("a second delivery got another status", &second.resp);
        }
        if (first_ok && second.resp.body != R"({"status":"duplicate"})") {
            fail("a second delivery of an accepted callback is not a duplicate", &second.resp);
        }
        if (second.sequence_after != second.sequence_before) {
            fail("a second delivery changed the state", &second.resp);
        }
    }
    return 0;
}
