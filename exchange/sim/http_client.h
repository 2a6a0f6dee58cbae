// A small HTTP/1.1 client for exchange-sim's callbacks: POSTs a JSON body with its signature
// header and reports the status, keeping connections alive per host:port.
//
// Each host has a pool: at most connections_per_host_max requests in flight (more wait in a FIFO)
// and up to idle_per_host_max idle keep-alive connections. A request on a reused connection that
// the server closed meanwhile (the usual keep-alive race) is retried once on a fresh connection
// before it counts as failed. Connect and whole-request timeouts bound every attempt, and
// response bodies are bounded (a callback receiver has nothing long to say).
//
// Thread-safety: single-threaded; call from the io thread that runs the io_context.
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "exchange/sim/protocol.h"

namespace broker::exchange::sim {

struct client_limits {
    std::size_t connections_per_host_max = 8;
    std::size_t idle_per_host_max = 8;
    int connect_timeout_ms = 2000;
    int request_timeout_ms = 5000;
    std::size_t response_body_max = 64 * 1024;
};

class http_client {
  public:
    // `status` is the HTTP status, or 0 when no response arrived (refused, reset, timed out).
    using done_fn = std::function<void(unsigned status)>;

    http_client(boost::asio::io_context& io, client_limits limits);
    ~http_client();
    http_client(const http_client&) = delete;
    http_client& operator=(const http_client&) = delete;

    void post(const callback_target& to, std::string body, std::string signature, done_fn done);

    // Closes idle connections and fails nothing: requests in flight finish or time out.
    void stop();

    struct connection;
    struct job {
        callback_target to;
        std::string body;
        std::string signature;
        done_fn done;
    };

  private:
    struct host_pool {
        std::vector<std::shared_ptr<connection>> idle;
        std::size_t active = 0;
        std::deque<job> waiting;
    };

    static std::string key_of(const callback_target& t);
    void start(const std::string& key, job j);
    void run(const std::string& key, std::shared_ptr<connection> c, job j, bool reused);
    void finish(const std::string& key, std::shared_ptr<connection> c, job j, unsigned status,
                bool keep_alive);

    boost::asio::io_context& io_;
    client_limits limits_;
    std::map<std::string, host_pool> pools_;
    bool stopped_ = false;
};

}  // namespace broker::exchange::sim
