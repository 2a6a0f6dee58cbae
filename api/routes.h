// The client API's routes: one table that the router dispatches from and that the OpenAPI
// coverage test compares with docs/openapi.yaml, so code and documentation cannot drift apart.
#pragma once

#include <cstdint>
#include <string_view>

namespace broker::api {

enum class route_id : std::uint8_t {
    healthz,
    readyz,
    metrics,
    place_trade,
    list_trades,
    get_trade,
    cancel_trade,
    modify_trade,
    trade_by_client_order_id,
    account,
    positions,
    stream,
    exchange_callback,
    open_customer,
    digest,
};

enum class access : std::uint8_t { open, exchange, customer, admin };

struct route_spec {
    route_id id;
    std::string_view method;
    std::string_view path;  // "{name}" matches one path segment
    access who;
};

inline constexpr route_spec routes[] = {
    {route_id::healthz, "GET", "/healthz", access::open},
    {route_id::readyz, "GET", "/readyz", access::open},
    {route_id::metrics, "GET", "/metrics", access::open},
    {route_id::place_trade, "POST", "/v1/trades", access::customer},
    {route_id::list_trades, "GET", "/v1/trades", access::customer},
    {route_id::trade_by_client_order_id, "GET", "/v1/trades:by_client_order_id", access::customer},
    {route_id::get_trade, "GET", "/v1/trades/{trade_id}", access::customer},
    {route_id::cancel_trade, "DELETE", "/v1/trades/{trade_id}", access::customer},
    {route_id::modify_trade, "PATCH", "/v1/trades/{trade_id}", access::customer},
    {route_id::account, "GET", "/v1/account", access::customer},
    {route_id::positions, "GET", "/v1/positions", access::customer},
    {route_id::stream, "GET", "/v1/stream", access::customer},
    {route_id::exchange_callback, "POST", "/v1/exchange/callbacks", access::exchange},
    {route_id::open_customer, "PUT", "/admin/v1/customers/{customer_id}", access::admin},
    {route_id::digest, "GET", "/admin/v1/digest", access::admin},
};

}  // namespace broker::api
