// The HTTP server: a Beast listener and one session per connection.
//
// Shape of the Beast examples: `listener` accepts (do_accept/on_accept), `session` reads a
// request, hands it to the router, and writes the answer when the router responds (possibly from
// another thread, after the command is durable), then reads the next one (HTTP/1.1 keep-alive).
// Connections are dealt round robin to the given io_contexts, each of which must be run by a
// single thread: a connection's handlers then never run concurrently, without a strand. The
// router's answer is written at once when it comes on the connection's own thread (the engine
// hands answers back to the thread that asked), and queued to that thread otherwise. Bodies,
// headers and idle time are bounded.
//
// Thread-safety: construct and start on the main thread; it then runs on the contexts' threads.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "api/router.h"
#include "api/stream_session.h"

namespace broker::api {

struct server_config {
    std::size_t body_limit_bytes = 16 * 1024;
    std::size_t header_limit_bytes = 8 * 1024;
    std::size_t connections_max = 10'000;
    int idle_timeout_s = 60;     // a keep-alive connection may sit idle this long
    int request_timeout_s = 10;  // a request must be complete this long after its first byte
};

class server {
public:
    // Accepts on the first context. `contexts` must not be empty and must outlive the server.
    server(std::vector<boost::asio::io_context*> contexts, router& r, server_config config);
    ~server();

    // Binds and starts accepting. Returns an error message on failure (e.g. address in use).
    [[nodiscard]] std::optional<std::string> listen(const boost::asio::ip::tcp::endpoint& at);
    // Stops accepting new connections; open sessions finish their current request.
    void stop();
    [[nodiscard]] boost::asio::ip::tcp::endpoint local_endpoint() const;

private:
    struct impl;
    std::shared_ptr<impl> impl_;
};

}  // namespace broker::api
