// GET /v1/stream: the WebSocket stream of a customer's trade updates.
//
// The HTTP session hands over its socket and the upgrade request once the router has
// authenticated the customer. The stream session then sends, as text frames,
//   {"type":"trade_update","sequence":N,"trade":{...trade JSON...}}
// for every status change of the customer's trades, in sequence order, with no gaps and no
// repeats: first the durable backlog after `?since=N` (read from the store, so it survives
// restarts), then live updates. Its outbound queue is bounded; a client that falls behind by more
// than `queue_max` messages is closed with code 1008 and reason "slow_consumer".
//
// Threading: each stream runs on its connection's executor, which must serialize its handlers (a
// single-threaded io_context or a strand); live updates arrive from the engine thread through an
// update_sink and are posted to that executor.
#pragma once

#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "api/services.h"

namespace broker::api {

struct stream_config {
    std::size_t queue_max = 1024;
    std::size_t backlog_batch = 256;  // updates read from the store per step while catching up
    int ping_interval_s = 20;         // idle streams are pinged; a dead peer is dropped
};

// Accepts the upgrade and runs the stream until either side closes. `since`: nullopt streams
// live updates only; N sends the durable updates after N first. `expires_ms`: when the token
// that opened it expires (Unix ms; 0: never); the stream is then closed with 1008 (policy)
// "token_expired", as a request with that token would get 401 from then on, and the client
// reconnects with a fresh token and ?since=. `slot` is held for as long as the stream is open
// (the server's count of connections under --max-connections).
void start_stream_session(boost::beast::tcp_stream&& stream,
                          boost::beast::http::request<boost::beast::http::string_body>&& upgrade,
                          services& svc, std::string customer_id,
                          std::optional<std::uint64_t> since, const stream_config& config,
                          std::int64_t expires_ms = 0, std::shared_ptr<void> slot = {});

// Sends every open stream a close frame, code 1001 (going away) with reason "shutting_down", on
// the stream's own executor, so that a client can tell a planned stop from a broken connection and
// reconnect with ?since= (a node stopping on SIGTERM calls it). Callable from any thread.
void close_all_streams();

}  // namespace broker::api
