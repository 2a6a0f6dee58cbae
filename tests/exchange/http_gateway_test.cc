// The networked exchange gateway (exchange/http_gateway.h) against a stand-in exchange on
// loopback whose answers the test holds back and then lets go: what a full queue does to orders
// and status queries. Real sockets and time; only "eventually" (within seconds) is asserted.
#include "exchange/http_gateway.h"

#include <doctest/doctest.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/money.h"
#include "engine/types.h"

using namespace broker;
using namespace broker::exchange;

namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;

// Listens on 127.0.0.1 from construction, but answers nothing until serve(): connections wait in
// the kernel's backlog and their requests in the socket buffers. Then every connection gets a
// thread that answers POST /v1/orders with 202, GET /v1/orders/{id} with 404 (an order it never
// saw) and anything else with 503, and records each request line.
class held_exchange {
  public:
    held_exchange() : acceptor_(io_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {}

    ~held_exchange() {
        // A listening socket shut down wakes the accept blocked on it (Linux: EINVAL).
        ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
        if (acceptor_thread_.joinable()) acceptor_thread_.join();
        std::vector<std::thread> threads;
        {
            std::lock_guard lock(mutex_);
            threads.swap(threads_);
        }
        for (auto& t : threads) t.join();
    }

    [[nodiscard]] std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

    void serve() {
        acceptor_thread_ = std::thread([this] {
            for (;;) {
                auto socket = std::make_shared<tcp::socket>(io_);
                boost::system::error_code ec;
                acceptor_.accept(*socket, ec);
                if (ec) return;
                std::lock_guard lock(mutex_);
                threads_.emplace_back([this, socket] { answer(*socket); });
            }
        });
    }

    [[nodiscard]] bool asked(const std::string& line) {
        std::lock_guard lock(mutex_);
        for (const auto& l : lines_) {
            if (l == line) return true;
        }
        return false;
    }

  private:
    void answer(tcp::socket& socket) {
        boost::beast::flat_buffer buffer;
        for (;;) {
            http::request<http::string_body> req;
            boost::system::error_code ec;
            http::read(socket, buffer, req, ec);
            if (ec) return;  // the gateway closed the connection
            const std::string target(req.target());
            {
                std::lock_guard lock(mutex_);
                lines_.push_back(std::string(req.method_string()) + " " + target);
            }
            auto status = http::status::service_unavailable;
            if (req.method() == http::verb::post && target == "/v1/orders") {
                status = http::status::accepted;
            } else if (req.method() == http::verb::get && target.rfind("/v1/orders/", 0) == 0) {
                status = http::status::not_found;
            }
            http::response<http::string_body> res{status, 11};
            res.keep_alive(true);
            res.prepare_payload();
            http::write(socket, res, ec);
            if (ec) return;
        }
    }

    net::io_context io_;
    tcp::acceptor acceptor_;
    std::thread acceptor_thread_;
    std::mutex mutex_;
    std::vector<std::thread> threads_;
    std::vector<std::string> lines_;
};

order sell(std::uint64_t id) {
    return order{trade_id{id}, *parse_symbol("AAPL"), side::sell, quantity{1}, money{}};
}

bool eventually(const std::function<bool()>& done) {
    const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!done()) {
        if (std::chrono::steady_clock::now() > limit) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

}  // namespace

TEST_CASE("a status query dropped by a full queue does not block the next one for that trade") {
    held_exchange exchange;
    http_gateway_config config;
    config.port = exchange.port();
    config.callback_url = "http://127.0.0.1:1/v1/exchange/callbacks";
    config.connections = 1;
    config.queue_max = 1;
    config.request_timeout_ms = 60'000;  // the held requests wait for serve(), not a timeout
    auto gateway = make_http_gateway(config, [](apply_execution) {});

    // The one connection's request waits for an answer and the queue holds one order: the next
    // job is dropped. Submitted one at a time, as the first may still be queued when the second
    // comes.
    std::uint64_t id = 0;
    REQUIRE(eventually([&] {
        gateway->submit(sell(++id));
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        return gateway->stats().dropped > 0 || id > 200;
    }));
    REQUIRE(gateway->stats().dropped > 0);
    const auto dropped = gateway->stats().dropped;
    constexpr std::uint64_t stuck = 1000;  // a trade the watchdog asks about
    gateway->reconcile(sell(stuck));
    REQUIRE(eventually([&] { return gateway->stats().dropped == dropped + 1; }));

    exchange.serve();
    REQUIRE(eventually([&] { return gateway->stats().sent >= 2; }));  // the queue drained
    // The watchdog asks again: this time the question reaches the exchange, which has never seen
    // the order, so the gateway sends it.
    gateway->reconcile(sell(stuck));
    CHECK(eventually([&] { return exchange.asked("GET /v1/orders/00000000000003e8"); }));
    CHECK(eventually([&] { return gateway->stats().resent_unknown == 1; }));
    CHECK(gateway->stats().queries == 1);
    gateway->stop();
    gateway.reset();  // closes its connections, so the stand-in's threads end
}
