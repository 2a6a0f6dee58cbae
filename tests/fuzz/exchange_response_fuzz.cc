// libFuzzer target: the answers of a networked exchange that brokerd parses (exchange/protocol.h):
// the order status of GET /v1/orders/{id}, whose report goes straight to the engine, and the
// quote list of GET /v1/quotes, whose prices become reference prices and collars.
//
// The exchange is another process on the network, so its bodies are untrusted bytes like any
// request; and a status report reaches apply_execution without the callback's signature check or
// its strict field checks, so the engine's own rules are all that guard the state behind it.
//
// Input layout:
//
//   input := mode:u8 bytes
//
//   bit 0     0: `bytes` is an order-status body; 1: a quotes body
//   bits 1-2  order status: the order asked about, in the seeded state below:
//             0 trade 2 (alice SELL MSFT 5, IN_PROGRESS), 1 trade 4 (bob BUY AAPL 2 with limit
//             105.0000, IN_PROGRESS), 2 trade 3 (alice BUY AAPL 1, still PLACED), 3 trade 1
//             (alice BUY AAPL 10, FILLED and closed)
//   bit 3     structured: `bytes` are not a body but the values (FuzzedDataProvider) of a body
//             that exchange-sim renders (exchange/sim/protocol.h order_json / quote_json), which
//             must parse back to exactly those values: encoder and decoder agree on the protocol
//
// In seed files the mode is a printable letter: '@' 'B' 'D' 'F' status bodies for trades 2, 4, 3
// and 1; 'A' quotes; 'H' 'J' structured status for trades 2 and 4; 'I' structured quotes.
//
// Properties (a violation traps):
//   - never a crash or sanitizer report, and the same answer when asked twice (the status parser
//     reuses a thread_local simdjson parser);
//   - a status report names the order asked about, has an exec_id of at most exec_id_max bytes, a
//     fill price in [0, price_max] (zero when rejected) and, when rejected, an exchange reason;
//   - applied to the seeded engine state as the gateway does (engine_runner::report), the report
//     is decided and applied without assertion, changes nothing unless accepted, settles the trade
//     when accepted, and leaves the engine's invariants (check_invariants) intact;
//   - every quote has a valid ticker and a price in (0, price_max];
//   - structured mode: what exchange-sim renders parses back to exactly what it rendered.
#include <fuzzer/FuzzedDataProvider.h>
#include <spdlog/spdlog.h>

#include <algorithm>  // tests/api/memory_services.h uses std::sort without including it
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/limits.h"
#include "engine/market_calendar.h"
#include "engine/state.h"
#include "engine/time.h"
#include "exchange/protocol.h"
#include "exchange/sim/protocol.h"
#include "tests/api/memory_services.h"

namespace {

using namespace broker;
using broker::testing::memory_services;
using broker::testing::now_ms;

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "exchange_response_fuzz: property violated: %s\n", what);
    std::fflush(stderr);
    __builtin_trap();
}

api::outcome run(memory_services& svc, command c) {
    std::optional<api::outcome> out;
    int calls = 0;
    if (!svc.submit(std::move(c), [&](api::outcome o) {
            ++calls;
            out = std::move(o);
        })) {
        fail("the engine refused a command");
    }
    if (calls != 1) fail("completion not called exactly once");
    return *out;
}

void seed(memory_services& svc, command c) {
    if (run(svc, std::move(c)).code != errc::ok) fail("seed command failed");
}

place_trade placement(memory_services& svc, std::string customer, const char* sym, side sd,
                      std::int64_t qty) {
    place_trade p;
    p.customer_id = std::move(customer);
    p.sym = *parse_symbol(sym);
    p.trade_side = sd;
    p.qty = quantity{qty};
    p.reference_price = svc.quote(p.sym);
    return p;
}

// The state every input starts from (see the top); the orders the gateway would ask about.
struct seeded {
    memory_services svc;
    std::vector<exchange::order> orders;
};

const seeded& baseline() {
    static const seeded s = [] {
        spdlog::set_level(spdlog::level::off);
        seeded out;
        memory_services& svc = out.svc;
        seed(svc, open_customer{"alice",
                                money{1'000'000 * limits::ticks_per_usd},
                                {{*parse_symbol("AAPL"), quantity{100}},
                                 {*parse_symbol("MSFT"), quantity{50}}}});
        seed(svc, open_customer{"bob", money{5'000 * limits::ticks_per_usd}, {}});
        seed(svc, placement(svc, "alice", "AAPL", side::buy, 10));
        apply_execution fill;
        fill.id = trade_id{1};
        fill.filled = true;
        fill.qty = quantity{10};
        fill.fill_price = money{100 * limits::ticks_per_usd};
        fill.exec_id = "seed-exec-1";
        fill.executed_at = now_ms;
        seed(svc, fill);
        seed(svc, placement(svc, "alice", "MSFT", side::sell, 5));
        seed(svc, placement(svc, "alice", "AAPL", side::buy, 1));
        seed(svc, placement(svc, "bob", "AAPL", side::buy, 2));
        const auto order_of = [&](std::uint64_t id) {
            const trade* t = svc.s.find_open_trade(trade_id{id});
            if (t == nullptr) return exchange::order{trade_id{id}, *parse_symbol("AAPL"), side::buy,
                                                     quantity{10}, money{}};
            return exchange::order{t->id, t->sym, t->trade_side, t->qty, t->limit_price};
        };
        out.orders = {order_of(2), order_of(4), order_of(3), order_of(1)};
        const auto status_of = [&](std::uint64_t id) {
            const trade* t = svc.s.find_open_trade(trade_id{id});
            return t == nullptr ? trade_status::placed : t->status;
        };
        if (status_of(2) != trade_status::in_progress || status_of(4) != trade_status::in_progress ||
            status_of(3) != trade_status::placed || svc.s.find_open_trade(trade_id{1}) != nullptr) {
            fail("seed state is not the one described");
        }
        if (auto bad = check_invariants(svc.s)) fail(bad->c_str());
        return out;
    }();
    return s;
}

bool same(const apply_execution& a, const apply_execution& b) {
    return a.id == b.id && a.filled == b.filled && a.qty == b.qty && a.fill_price == b.fill_price &&
           a.reason == b.reason && a.exec_id == b.exec_id && a.executed_at == b.executed_at;
}

void check_report(const exchange::order& o, const apply_execution& x) {
    if (x.id != o.id) fail("the report names another trade");
    if (x.exec_id.size() > limits::exec_id_max) fail("exec_id longer than exec_id_max");
    if (x.fill_price.ticks < 0 || x.fill_price.ticks > limits::price_max_ticks) {
        fail("fill price out of range");
    }
    if (!x.filled) {
        if (x.fill_price.ticks != 0) fail("a rejection with a fill price");
        if (static_cast<int>(x.reason) < 5000 || !parse_errc(to_string(x.reason))) {
            fail("a rejection reason that is not an exchange reason");
        }
    }
}

// What the node does with a report: an apply_execution command (engine_runner::report).
void apply_report(const apply_execution& x) {
    memory_services svc = baseline().svc;
    const std::uint64_t before = svc.s.last_sequence;
    const trade* t = svc.s.find_open_trade(x.id);
    const bool was_in_progress = t != nullptr && t->status == trade_status::in_progress;
    const api::outcome o = run(svc, x);
    if (auto bad = check_invariants(svc.s)) fail(bad->c_str());
    const bool changed = svc.s.last_sequence != before;
    if (o.code != errc::ok && changed) fail("a refused report changed the state");
    if (o.code == errc::ok && !o.repeated) {
        if (!was_in_progress || !changed) fail("an accepted report settled nothing");
        if (svc.s.find_open_trade(x.id) != nullptr) fail("an accepted report left the trade open");
    }
    if (o.repeated && changed) fail("a repeated report changed the state");
}

void fuzz_status(const exchange::order& o, std::string_view body) {
    const auto x = exchange::parse_order_status(o, body);
    const auto again = exchange::parse_order_status(o, body);
    if (x.has_value() != again.has_value() || (x && !same(*x, *again))) {
        fail("order status parsed twice gave two answers");
    }
    if (!x) return;
    check_report(o, *x);
    apply_report(*x);
}

void fuzz_quotes(std::string_view body) {
    const auto q = exchange::parse_quotes(body);
    const auto again = exchange::parse_quotes(body);
    if (q.has_value() != again.has_value() || (q && *q != *again)) {
        fail("quotes parsed twice gave two answers");
    }
    if (!q) return;
    for (const auto& [sym, price] : *q) {
        if (price.ticks <= 0 || price.ticks > limits::price_max_ticks) fail("quote out of range");
        const auto back = parse_symbol(to_string(sym));
        if (!back || *back != sym) fail("quote symbol does not round-trip");
    }
}

std::string ascii(FuzzedDataProvider& in, std::size_t max) {
    std::string s = in.ConsumeRandomLengthString(max);
    for (char& c : s) c = static_cast<char>(' ' + static_cast<unsigned char>(c) % 95);
    return s;
}

timestamp_ms any_time(FuzzedDataProvider& in) {
    return in.ConsumeIntegralInRange<timestamp_ms>(0, calendar_end_ms - 1);
}

// exchange-sim's order_json of an execution of `o`, parsed back.
void fuzz_sim_status(const exchange::order& o, FuzzedDataProvider& in) {
    exchange::sim::order_accepted a;
    a.order_id = o.id.value;
    a.symbol = to_string(o.sym);
    a.order_side = o.order_side;
    a.quantity = in.ConsumeBool() ? o.qty.shares
                                  : in.ConsumeIntegralInRange<std::int64_t>(1, limits::quantity_max);
    a.callback_url = "http://127.0.0.1:9/v1/exchange/callbacks";
    exchange::sim::order_executed e;
    e.order_id = a.order_id;
    e.exec_id = ascii(in, exchange::sim::log_text_max);
    if (e.exec_id.empty()) e.exec_id = "XS-1";
    e.executed_at = any_time(in);
    const bool filled = in.ConsumeBool();
    if (filled) {
        e.outcome = exchange::sim::order_outcome::filled;
        e.fill_price_ticks = in.ConsumeIntegralInRange<std::int64_t>(1, limits::price_max_ticks);
    } else {
        e.outcome = exchange::sim::order_outcome::rejected;
        static constexpr const char* known[] = {"exchange_rejected", "limit_not_marketable",
                                                "expired",           "unknown_symbol",
                                                "insufficient_funds", "halted"};
        e.reason = in.ConsumeBool() ? std::string(known[in.ConsumeIntegralInRange<std::size_t>(0, 5)])
                                    : ascii(in, exchange::sim::log_text_max);
    }
    const bool working = in.ConsumeBool() && in.ConsumeBool();  // ACCEPTED, not executed yet
    const std::string body = exchange::sim::order_json(a, working ? nullptr : &e);
    const auto x = exchange::parse_order_status(o, body);
    if (working) {
        if (x) fail("an ACCEPTED order parsed as an execution");
        return;
    }
    if (!x) fail("an execution rendered by exchange-sim does not parse");
    apply_execution want;
    want.id = o.id;
    want.filled = filled;
    want.qty = quantity{a.quantity};
    want.fill_price = money{e.fill_price_ticks};
    want.exec_id = e.exec_id;
    want.executed_at = e.executed_at;
    if (!filled) {
        const auto code = parse_errc(e.reason);
        want.reason = code && static_cast<int>(*code) >= 5000 ? *code : errc::exchange_rejected;
    }
    if (!same(*x, want)) fail("an execution rendered by exchange-sim parses to other values");
    check_report(o, *x);
    apply_report(*x);
}

// exchange-sim's GET /v1/quotes body, parsed back.
void fuzz_sim_quotes(FuzzedDataProvider& in) {
    static constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.";
    std::vector<std::pair<symbol, money>> want;
    std::string body = R"({"quotes":[)";
    const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 40);
    for (std::size_t i = 0; i < n && in.remaining_bytes() > 0; ++i) {
        std::string ticker;
        const std::size_t len = in.ConsumeIntegralInRange<std::size_t>(1, limits::symbol_max);
        for (std::size_t k = 0; k < len; ++k) {
            ticker += alphabet[in.ConsumeIntegralInRange<std::size_t>(0, alphabet.size() - 1)];
        }
        const auto sym = parse_symbol(ticker);
        if (!sym) continue;  // e.g. a leading '.', if the ticker syntax refuses it
        const money price{in.ConsumeIntegralInRange<std::int64_t>(1, limits::price_max_ticks)};
        if (!want.empty()) body += ',';
        body += exchange::sim::quote_json(ticker, price, any_time(in));
        want.emplace_back(*sym, price);
    }
    body += "]}";
    const auto q = exchange::parse_quotes(body);
    if (!q) fail("quotes rendered by exchange-sim do not parse");
    if (*q != want) fail("quotes rendered by exchange-sim parse to other values");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return -1;  // no mode byte
    const std::uint8_t mode = data[0];
    // An exactly sized copy, so that ASan catches a read one byte past the end.
    const std::vector<char> bytes(data + 1, data + size);
    const std::string_view body(bytes.data(), bytes.size());
    const exchange::order& o = baseline().orders[(mode >> 1) & 3];
    const bool quotes = (mode & 1) != 0;
    if (mode & 8) {
        FuzzedDataProvider in(data + 1, size - 1);
        if (quotes) {
            fuzz_sim_quotes(in);
        } else {
            fuzz_sim_status(o, in);
        }
    } else if (quotes) {
        fuzz_quotes(body);
    } else {
        fuzz_status(o, body);
    }
    return 0;
}
