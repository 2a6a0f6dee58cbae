// The exchange's answers that brokerd parses when it talks to a networked exchange (the HTTP
// protocol of DESIGN.md, served in tests and demos by exchange-sim): an order's status from
// GET /v1/orders/{id} and the quote list from GET /v1/quotes.
//
// Both bodies come from the network, so both parsers take arbitrary bytes: they never throw or
// assert, and anything unusable is dropped rather than trusted. They are separate from the
// gateway's socket code (http_gateway.cc) so that unit tests and the fuzzer
// (tests/fuzz/exchange_response_fuzz.cc) reach them directly.
//
// Thread-safety: pure functions, safe to call from any number of threads at once.
#pragma once

#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/commands.h"
#include "engine/money.h"
#include "engine/types.h"
#include "exchange/gateway.h"

namespace broker::exchange {

// The execution report in an order status ({"status":"FILLED"|"REJECTED","quantity",
// "fill_price","reason","exec_id","executed_at"}) for order `o`, the order that was asked about;
// nullopt while the order is still working (any other status) or when the body is unusable
// (not JSON, or a fill without a valid fill_price). Lenient where the engine decides anyway:
// `quantity` defaults to o.qty, `exec_id` is cut by bounded_exec_id, a missing or malformed
// `executed_at` is 0, and a rejection reason the broker does not know (or that is not an
// exchange reason) is errc::exchange_rejected.
[[nodiscard]] std::optional<apply_execution> parse_order_status(const order& o,
                                                                std::string_view body);

// The quotes in {"quotes":[{"symbol","price"},...]}, in body order; entries without a valid
// ticker or a positive price up to limits::price_max_ticks are skipped (so a symbol may appear
// twice; the gateway keeps the first). nullopt when the body is not JSON or has no "quotes"
// array: the gateway then keeps the quotes it had.
[[nodiscard]] std::optional<std::vector<std::pair<symbol, money>>> parse_quotes(
    std::string_view body);

}  // namespace broker::exchange
