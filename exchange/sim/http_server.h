// exchange-sim's HTTP/1.1 server: a Beast listener and one keep-alive session per connection,
// in the shape of api/server.cc (do_accept/on_accept, do_read -> on_read -> handler -> write ->
// on_write -> do_read). The handler may answer later, from a completion (after an fsync).
//
// Bounds: bodies (16 KiB), headers (8 KiB), connections (refused past the limit), idle time
// between requests and the time a started request may take to arrive whole; one request at a
// time per connection (no pipelining), so each connection has at most one answer pending.
//
// Outages: `pause` closes the listener and every open connection (clients see refused and reset
// connections); `resume` listens again on the same address.
//
// Thread-safety: everything runs on one single-threaded io_context (exchange-sim's io thread);
// call the members from that thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/verb.hpp>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace broker::exchange::sim {

struct server_limits {
    std::size_t body_limit_bytes = 16 * 1024;
    std::size_t header_limit_bytes = 8 * 1024;
    std::size_t connections_max = 1024;
    int idle_timeout_s = 60;     // a keep-alive connection may sit idle this long
    int request_timeout_s = 10;  // a request must be complete this long after its first byte
};

struct http_request {
    boost::beast::http::verb method;
    std::string_view target;
    std::string_view body;
};

struct http_reply {
    unsigned status = 200;
    std::string body;   // JSON
    std::string allow;  // for 405
};

// Call exactly once, on the io thread. Dropping it uncalled closes the connection.
using http_responder = std::function<void(http_reply)>;
using http_handler = std::function<void(const http_request&, http_responder)>;

class http_server {
  public:
    http_server(boost::asio::io_context& io, http_handler handler, server_limits limits);
    ~http_server();

    // Binds and starts accepting; an error message on failure (e.g. address in use).
    [[nodiscard]] std::optional<std::string> listen(const boost::asio::ip::tcp::endpoint& at);
    void pause();
    [[nodiscard]] std::optional<std::string> resume();
    void stop();
    [[nodiscard]] boost::asio::ip::tcp::endpoint local_endpoint() const;

  private:
    struct impl;
    std::shared_ptr<impl> impl_;
};

}  // namespace broker::exchange::sim
