// libFuzzer target: exchange-sim's POST /v1/orders body parser (exchange/sim/protocol.h
// parse_new_order) and what exchange-sim does with an order it accepts.
//
// exchange-sim listens on the network; any client, not only brokerd, can post to it. An order it
// accepts is written to its order log (whose encoder asserts its limits), replayed on every
// restart, called back at its callback_url and reported as JSON, so whatever the parser lets
// through must be fit for all of them.
//
// Input layout: the whole input is the request body (no mode byte).
//
// Properties (a violation traps):
//   - refusals are 400 (unparsable) or 422 (invalid), with a snake_case code; error_json of them
//     is valid JSON;
//   - an accepted order is within the protocol's limits: a 16-hex-digit order id, a valid ticker,
//     quantity 1..quantity_max, a limit price 0..price_max, a callback_url of at most
//     callback_url_max bytes that parse_callback_url accepts;
//   - decode -> encode -> decode: the order rendered back as a canonical POST body parses to
//     exactly the same order;
//   - as exchange-sim stores it (venue::accept, encode_record), the order log decodes it to the
//     same record, and venue::apply takes it (as a restart would);
//   - the order state exchange-sim then serves (order_json) is valid JSON that brokerd's status
//     parser (exchange/protocol.h) reads as "still working", and once executed, as an execution
//     with the order's quantity.
#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "engine/limits.h"
#include "engine/money.h"
#include "exchange/protocol.h"
#include "exchange/sim/order_log.h"
#include "exchange/sim/protocol.h"
#include "exchange/sim/venue.h"

namespace {

using namespace broker;
using namespace broker::exchange::sim;

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "sim_order_fuzz: property violated: %s\n", what);
    std::fflush(stderr);
    __builtin_trap();
}

bool is_json(const std::string& text) {
    static simdjson::dom::parser parser;
    const simdjson::padded_string padded(text);
    return !parser.parse(padded).error();
}

bool is_snake_case(std::string_view s) {
    if (s.empty()) return false;
    for (const char c : s) {
        if (!((c >= 'a' && c <= 'z') || c == '_')) return false;
    }
    return true;
}

bool same(const new_order& a, const new_order& b) {
    return a.order_id == b.order_id && a.symbol == b.symbol && a.order_side == b.order_side &&
           a.quantity == b.quantity && a.limit_price_ticks == b.limit_price_ticks &&
           a.callback_url == b.callback_url;
}

// The canonical POST /v1/orders body for `o`, as brokerd's gateway writes it.
std::string render(const new_order& o) {
    std::string body = R"({"order_id":")" + format_trade_id(trade_id{o.order_id}) +
                       R"(","symbol":")" + json_escape(o.symbol) + R"(","side":")" +
                       std::string(o.order_side == side::buy ? "BUY" : "SELL") +
                       R"(","quantity":)" + std::to_string(o.quantity);
    if (o.limit_price_ticks > 0) {
        body += R"(,"limit_price":")" + format_money(money{o.limit_price_ticks}) + '"';
    }
    body += R"(,"callback_url":")" + json_escape(o.callback_url) + R"("})";
    return body;
}

void check_accepted(const new_order& o) {
    // Any 16-hex-digit id, 0 included: exchange-sim treats order ids as opaque (brokerd's start
    // at 1, but other clients may post).
    const auto id = parse_trade_id(format_trade_id(trade_id{o.order_id}));
    if (!id || id->value != o.order_id) fail("accepted order id does not round-trip");
    if (!parse_symbol(o.symbol)) fail("accepted an invalid symbol");
    if (o.quantity < 1 || o.quantity > limits::quantity_max) fail("accepted quantity out of range");
    if (o.limit_price_ticks < 0 || o.limit_price_ticks > limits::price_max_ticks) {
        fail("accepted limit price out of range");
    }
    if (o.callback_url.size() > callback_url_max || !parse_callback_url(o.callback_url)) {
        fail("accepted a callback_url the sender cannot use");
    }

    const auto again = parse_new_order(render(o));
    if (!again) fail("the order rendered back is refused");
    if (!same(o, *again)) fail("the order rendered back parses to another order");

    // Stored and recovered as exchange-sim does.
    venue v{venue_config{}};
    std::mt19937_64 rng(o.order_id);
    const order_accepted a = v.accept(o, 1'700'000'000'000, rng);
    std::string image(order_log_magic);
    encode_record(a, image);
    const auto scanned = scan_log(image);
    if (!scanned || scanned->torn_tail || scanned->records.size() != 1 ||
        !(std::get<order_accepted>(scanned->records[0]) == a)) {
        fail("the accepted order does not survive the order log");
    }
    if (!v.apply(scanned->records[0])) fail("the venue refuses to replay an accepted order");

    // Served back to brokerd.
    const exchange::order asked{trade_id{o.order_id}, *parse_symbol(o.symbol), o.order_side,
                                quantity{o.quantity}, money{o.limit_price_ticks}};
    const std::string working = order_json(a, nullptr);
    if (!is_json(working)) fail("order_json of an accepted order is not JSON");
    if (exchange::parse_order_status(asked, working)) fail("an ACCEPTED order read as executed");
    const order_executed e = v.execute(a, money{o.limit_price_ticks > 0 ? o.limit_price_ticks : 1},
                                       1'700'000'000'050, rng);
    const std::string done = order_json(a, &e);
    if (!is_json(done)) fail("order_json of an executed order is not JSON");
    const auto report = exchange::parse_order_status(asked, done);
    if (!report || report->qty != quantity{o.quantity} || report->exec_id != e.exec_id ||
        report->filled != (e.outcome == order_outcome::filled)) {
        fail("brokerd reads the executed order as something else");
    }
    const std::string cb = callback_json(a, e);
    if (!is_json(cb)) fail("callback_json is not JSON");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // An exactly sized copy, so that ASan catches a read one byte past the end.
    const std::vector<char> bytes(data, data + size);
    const std::string_view body(bytes.data(), bytes.size());
    const auto parsed = parse_new_order(body);
    if (!parsed) {
        const protocol_error& e = parsed.error();
        if (e.status != 400 && e.status != 422) fail("refusal status is neither 400 nor 422");
        if (!is_snake_case(e.code)) fail("refusal code is not snake_case");
        if (!is_json(error_json(e.code, e.message))) fail("error_json is not JSON");
        return 0;
    }
    check_accepted(*parsed);
    return 0;
}
