// exchange-sim's wire format: the JSON of the exchange protocol (DESIGN.md "Exchange protocol",
// extended by the networked-exchange contract), parsed with simdjson and rendered with fmt.
//
//   POST /v1/orders body  {"order_id":"<16 hex>","symbol","side":"BUY"|"SELL","quantity":N,
//                          "limit_price":"190.5000"|null?,"callback_url":"http://IP:PORT/path"}
//   order state           {"order_id","status":"ACCEPTED|FILLED|REJECTED","quantity",
//                          "fill_price","reason","exec_id","executed_at"}   (nulls until known)
//   callback body         {"order_id","exec_id","status","quantity","fill_price","reason",
//                          "executed_at"}
//   quote                 {"symbol","price","timestamp"}
//   error                 {"code","message"}
//
// Pure functions, safe on any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "engine/money.h"
#include "engine/result.h"
#include "engine/types.h"
#include "exchange/sim/order_log.h"

namespace broker::exchange::sim {

// An order as posted, every field checked.
struct new_order {
    std::uint64_t order_id = 0;
    std::string symbol;
    side order_side = side::buy;
    std::int64_t quantity = 0;
    std::int64_t limit_price_ticks = 0;  // 0: none
    std::string callback_url;
};

struct protocol_error {
    unsigned status = 400;  // 400 unparsable, 422 well-formed but invalid
    std::string code;       // snake_case
    std::string message;
};

[[nodiscard]] result<new_order, protocol_error> parse_new_order(std::string_view body);

// Where a callback goes. Only plain http to an IP literal (or "localhost", read as 127.0.0.1):
// the simulator resolves no names, so a callback can never wait on DNS.
struct callback_target {
    std::string host;  // IP literal, without brackets
    std::uint16_t port = 80;
    std::string target;  // path and query, starting with '/'
    friend bool operator==(const callback_target&, const callback_target&) = default;
};
[[nodiscard]] std::optional<callback_target> parse_callback_url(std::string_view url);

[[nodiscard]] std::string json_escape(std::string_view text);
[[nodiscard]] std::string error_json(std::string_view code, std::string_view message);
// `exec` is null while the order is ACCEPTED.
[[nodiscard]] std::string order_json(const order_accepted& a, const order_executed* exec);
[[nodiscard]] std::string callback_json(const order_accepted& a, const order_executed& e);
[[nodiscard]] std::string quote_json(std::string_view symbol, money price, timestamp_ms at);

}  // namespace broker::exchange::sim
