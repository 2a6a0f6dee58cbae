#include "exchange/sim/http_client.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <optional>

#include "engine/assert.h"

namespace broker::exchange::sim {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

struct http_client::connection {
    explicit connection(net::io_context& io) : stream(io) {}
    beast::tcp_stream stream;
    beast::flat_buffer buffer;
    http::request<http::string_body> request;
    std::optional<http::response_parser<http::string_body>> parser;
    bool connected = false;

    void close() {
        beast::error_code ignored;
        stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
        stream.socket().close(ignored);
        connected = false;
    }
};

http_client::http_client(net::io_context& io, client_limits limits) : io_(io), limits_(limits) {
    BROKER_ASSERT(limits_.connections_per_host_max > 0);
}

http_client::~http_client() {
    stop();
}

std::string http_client::key_of(const callback_target& t) {
    return t.host + "|" + std::to_string(t.port);
}

void http_client::post(const callback_target& to, std::string body, std::string signature,
                       done_fn done) {
    job j{to, std::move(body), std::move(signature), std::move(done)};
    if (stopped_) {
        net::post(io_, [d = std::move(j.done)] { d(0); });
        return;
    }
    const std::string key = key_of(to);
    host_pool& pool = pools_[key];
    if (pool.active >= limits_.connections_per_host_max) {
        pool.waiting.push_back(std::move(j));
        return;
    }
    start(key, std::move(j));
}

void http_client::start(const std::string& key, job j) {
    host_pool& pool = pools_[key];
    ++pool.active;
    std::shared_ptr<connection> c;
    bool reused = false;
    if (!pool.idle.empty()) {
        c = std::move(pool.idle.back());
        pool.idle.pop_back();
        reused = true;
    } else {
        c = std::make_shared<connection>(io_);
    }
    run(key, std::move(c), std::move(j), reused);
}

void http_client::run(const std::string& key, std::shared_ptr<connection> c, job j, bool reused) {
    auto self_job = std::make_shared<job>(std::move(j));
    const auto send = [this, key, c, self_job, reused] {
        c->request = {};
        c->request.method(http::verb::post);
        c->request.target(self_job->to.target);
        c->request.version(11);
        c->request.set(http::field::host,
                       self_job->to.host + ":" + std::to_string(self_job->to.port));
        c->request.set(http::field::user_agent, "exchange-sim");
        c->request.set(http::field::content_type, "application/json");
        c->request.set("X-Exchange-Signature", self_job->signature);
        c->request.keep_alive(true);
        c->request.body() = self_job->body;
        c->request.prepare_payload();
        c->stream.expires_after(std::chrono::milliseconds(limits_.request_timeout_ms));
        http::async_write(
            c->stream, c->request,
            [this, key, c, self_job, reused](beast::error_code ec, std::size_t) {
                const auto failed = [&] {
                    c->close();
                    // A kept-alive connection the server has closed fails at once: not the
                    // receiver's answer, so try once more on a fresh connection.
                    if (reused && !stopped_) {
                        return run(key, std::make_shared<connection>(io_), std::move(*self_job),
                                   false);
                    }
                    finish(key, c, std::move(*self_job), 0, false);
                };
                if (ec) return failed();
                c->parser.emplace();
                c->parser->body_limit(limits_.response_body_max);
                http::async_read(
                    c->stream, c->buffer, *c->parser,
                    [this, key, c, self_job, reused](beast::error_code rec, std::size_t) {
                        if (rec) {
                            c->close();
                            const bool stale = reused && (rec == http::error::end_of_stream ||
                                                          rec == net::error::connection_reset ||
                                                          rec == net::error::eof);
                            if (stale && !stopped_) {
                                return run(key, std::make_shared<connection>(io_),
                                           std::move(*self_job), false);
                            }
                            return finish(key, c, std::move(*self_job), 0, false);
                        }
                        const auto& res = c->parser->get();
                        finish(key, c, std::move(*self_job), res.result_int(), res.keep_alive());
                    });
            });
    };
    if (c->connected) return send();
    boost::system::error_code ec;
    const auto address = net::ip::make_address(self_job->to.host, ec);
    if (ec) {
        return net::post(
            io_, [this, key, c, self_job] { finish(key, c, std::move(*self_job), 0, false); });
    }
    c->stream.expires_after(std::chrono::milliseconds(limits_.connect_timeout_ms));
    c->stream.async_connect(tcp::endpoint(address, self_job->to.port),
                            [this, key, c, self_job, send](beast::error_code cec) {
                                if (cec) {
                                    c->close();
                                    return finish(key, c, std::move(*self_job), 0, false);
                                }
                                c->connected = true;
                                send();
                            });
}

void http_client::finish(const std::string& key, std::shared_ptr<connection> c, job j,
                         unsigned status, bool keep_alive) {
    const auto it = pools_.find(key);
    BROKER_ASSERT(it != pools_.end() && it->second.active > 0);
    host_pool& pool = it->second;
    --pool.active;
    if (keep_alive && !stopped_ && c->connected && pool.idle.size() < limits_.idle_per_host_max) {
        c->stream.expires_never();
        pool.idle.push_back(std::move(c));
    } else {
        c->close();
    }
    if (!pool.waiting.empty() && !stopped_) {
        job next = std::move(pool.waiting.front());
        pool.waiting.pop_front();
        start(key, std::move(next));
    } else if (pool.active == 0 && pool.idle.empty() && pool.waiting.empty()) {
        pools_.erase(it);  // hosts come and go; their pools must not accumulate
    }
    j.done(status);
}

void http_client::stop() {
    stopped_ = true;
    for (auto& [key, pool] : pools_) {
        for (auto& c : pool.idle) c->close();
        pool.idle.clear();
        pool.waiting.clear();
    }
}

}  // namespace broker::exchange::sim
