// The networked exchange gateway: brokerd's client for an exchange speaking the HTTP protocol of
// DESIGN.md (served in tests and demos by `exchange-sim`).
//
// - Orders are POSTed by a fixed pool of worker connections (HTTP/1.1 keep-alive), retried with
//   exponential backoff and jitter until the exchange accepts them; a re-post is idempotent by
//   order id. An order the exchange refuses outright (4xx) is reported as REJECTED.
// - A circuit breaker stops sending after consecutive failures, waits a cool-down, then probes
//   with one request; meanwhile orders wait in a queue bounded by the trades at the exchange
//   (at most one per customer).
// - Quotes are polled from GET /v1/quotes into a table that `quote` reads without blocking.
// - `reconcile` asks GET /v1/orders/{id}: executed -> report; 404 -> send again.
//
// Thread-safety: public members may be called from any thread; the network work runs on the
// gateway's own thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "exchange/gateway.h"

namespace broker::exchange {

struct http_gateway_config {
    std::string host = "127.0.0.1";  // as named: the Host header
    std::string address;             // the IP address to connect to; empty: host is one
    std::uint16_t port = 0;
    std::string callback_url;  // where the exchange sends execution reports
    std::size_t connections = 8;
    int request_timeout_ms = 2'000;
    int backoff_min_ms = 50;
    int backoff_max_ms = 5'000;
    int breaker_failures = 5;        // consecutive failures that open the breaker
    int breaker_cooldown_ms = 1'000;
    int quote_interval_ms = 100;
    std::size_t queue_max = 1'000'000;  // orders waiting to be sent
};

struct gateway_stats {
    std::uint64_t sent = 0;
    std::uint64_t send_failures = 0;
    std::uint64_t breaker_opened = 0;
    std::uint64_t queries = 0;
    std::uint64_t resent_unknown = 0;
    std::uint64_t dropped = 0;  // orders and queries refused by a full queue (queue_max)
};

class http_gateway_handle : public gateway {
public:
    // Waits up to `timeout_ms` for the first quotes; false when none arrived.
    [[nodiscard]] virtual bool wait_for_quotes(int timeout_ms) = 0;
    [[nodiscard]] virtual gateway_stats stats() const = 0;
};

[[nodiscard]] std::unique_ptr<http_gateway_handle> make_http_gateway(
    const http_gateway_config& config, execution_sink reports);

// Parses "http://HOST:PORT" (what --exchange takes); nullopt when it is anything else.
[[nodiscard]] std::optional<std::pair<std::string, std::uint16_t>> parse_http_origin(
    std::string_view url);

}  // namespace broker::exchange
