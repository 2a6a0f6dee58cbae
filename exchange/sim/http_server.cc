#include "exchange/sim/http_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <unordered_set>

#include "exchange/sim/protocol.h"

namespace broker::exchange::sim {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

std::string_view view(beast::string_view s) {
    return {s.data(), s.size()};
}

class session;

// What sessions share with the listener: the handler, the limits and the set of open sessions
// (so that an outage can close them all). Single-threaded; see the header.
struct shared_state {
    http_handler handler;
    server_limits limits;
    std::unordered_set<session*> open;
};

class session : public std::enable_shared_from_this<session> {
  public:
    session(tcp::socket&& socket, std::shared_ptr<shared_state> state)
        : stream_(std::move(socket)), state_(std::move(state)) {
        state_->open.insert(this);
    }
    ~session() { state_->open.erase(this); }

    void run() {
        net::post(stream_.get_executor(),
                  beast::bind_front_handler(&session::do_read, shared_from_this()));
    }

    // Closes the connection now, whatever it is doing (an outage in refuse mode).
    void abort() {
        aborted_ = true;
        idle_timer_.cancel();
        beast::error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
        stream_.socket().close(ignored);
    }

  private:
    void do_read() {
        if (aborted_) return;
        parser_.emplace();
        parser_->body_limit(state_->limits.body_limit_bytes);
        parser_->header_limit(static_cast<std::uint32_t>(state_->limits.header_limit_bytes));
        if (buffer_.size() > 0) return read_request();
        // A keep-alive connection may idle between requests; once a request starts it must
        // arrive whole within the request timeout, so trickled bytes cannot hold a session.
        idle_timer_.expires_after(std::chrono::seconds(state_->limits.idle_timeout_s));
        idle_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
            if (!ec) self->stream_.socket().cancel();
        });
        stream_.socket().async_wait(tcp::socket::wait_read,
                                    [self = shared_from_this()](beast::error_code ec) {
                                        self->idle_timer_.cancel();
                                        if (ec || self->aborted_) return self->close();
                                        self->read_request();
                                    });
    }

    void read_request() {
        stream_.expires_after(std::chrono::seconds(state_->limits.request_timeout_s));
        http::async_read(stream_, buffer_, *parser_,
                         beast::bind_front_handler(&session::on_read, shared_from_this()));
    }

    void on_read(beast::error_code ec, std::size_t) {
        if (aborted_) return;
        if (ec == http::error::end_of_stream) return close();
        if (ec == http::error::body_limit) {
            return write_error(413, "body_too_large", "request bodies are limited to 16 KiB");
        }
        if (ec == http::error::header_limit) {
            return write_error(431, "headers_too_large", "request headers are limited to 8 KiB");
        }
        if (ec == beast::error::timeout || ec == net::error::operation_aborted) return close();
        if (ec) {
            // A malformed request: answer once, then close, since the stream position is no
            // longer trustworthy.
            if (ec.category() == http::make_error_code(http::error::bad_target).category()) {
                return write_error(400, "bad_request", ec.message());
            }
            return close();
        }
        request_ = parser_->release();
        keep_alive_ = request_.keep_alive();
        stream_
            .expires_never();  // the answer may wait for an fsync; that is not the client's fault
        const http_request req{request_.method(), view(request_.target()), request_.body()};
        auto self = shared_from_this();
        state_->handler(req, [self](http_reply r) {
            net::post(self->stream_.get_executor(),
                      [self, r = std::move(r)]() mutable { self->write(std::move(r)); });
        });
    }

    void write_error(unsigned status, std::string_view code, std::string_view message) {
        keep_alive_ = false;
        write(http_reply{status, error_json(code, message), {}});
    }

    void write(http_reply r) {
        if (aborted_) return;
        response_ = {};
        response_.version(11);
        response_.result(r.status);
        response_.set(http::field::server, "exchange-sim");
        response_.set(http::field::content_type, "application/json");
        response_.set(http::field::cache_control, "no-store");
        if (!r.allow.empty()) response_.set(http::field::allow, r.allow);
        if (r.status == 503) response_.set(http::field::retry_after, "1");
        response_.keep_alive(keep_alive_);
        response_.body() = std::move(r.body);
        response_.prepare_payload();
        stream_.expires_after(std::chrono::seconds(state_->limits.idle_timeout_s));
        http::async_write(stream_, response_,
                          beast::bind_front_handler(&session::on_write, shared_from_this()));
    }

    void on_write(beast::error_code ec, std::size_t) {
        if (ec) return close();
        if (!keep_alive_) return close();
        do_read();
    }

    void close() {
        beast::error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    }

    beast::tcp_stream stream_;
    net::steady_timer idle_timer_{stream_.get_executor()};
    beast::flat_buffer buffer_;
    std::shared_ptr<shared_state> state_;
    std::optional<http::request_parser<http::string_body>> parser_;
    http::request<http::string_body> request_;
    http::response<http::string_body> response_;
    bool keep_alive_ = true;
    bool aborted_ = false;
};

}  // namespace

struct http_server::impl : std::enable_shared_from_this<http_server::impl> {
    impl(net::io_context& io, http_handler handler, server_limits limits)
        : io_(io), acceptor_(io), state_(std::make_shared<shared_state>()) {
        state_->handler = std::move(handler);
        state_->limits = limits;
    }

    std::optional<std::string> open(const tcp::endpoint& at) {
        beast::error_code ec;
        if (acceptor_.open(at.protocol(), ec); ec) return "open: " + ec.message();
        if (acceptor_.set_option(net::socket_base::reuse_address(true), ec); ec) {
            return "reuse: " + ec.message();
        }
        if (acceptor_.bind(at, ec); ec) {
            beast::error_code ignored;
            acceptor_.close(ignored);
            return "bind " + at.address().to_string() + ":" + std::to_string(at.port()) + ": " +
                   ec.message();
        }
        if (acceptor_.listen(net::socket_base::max_listen_connections, ec); ec) {
            return "listen: " + ec.message();
        }
        bound_ = acceptor_.local_endpoint(ec);
        do_accept();
        return std::nullopt;
    }

    void do_accept() {
        acceptor_.async_accept(io_,
                               beast::bind_front_handler(&impl::on_accept, shared_from_this()));
    }

    void on_accept(beast::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
        if (ec) {
            spdlog::warn("accept failed: {}", ec.message());
        } else if (state_->open.size() >= state_->limits.connections_max) {
            // Over the connection bound: refuse at once rather than queue without limit.
            beast::error_code ignored;
            socket.close(ignored);
        } else {
            std::make_shared<session>(std::move(socket), state_)->run();
        }
        do_accept();
    }

    void close_listener() {
        beast::error_code ignored;
        acceptor_.close(ignored);
    }

    net::io_context& io_;
    tcp::acceptor acceptor_;
    tcp::endpoint bound_;
    std::shared_ptr<shared_state> state_;
};

http_server::http_server(net::io_context& io, http_handler handler, server_limits limits)
    : impl_(std::make_shared<impl>(io, std::move(handler), limits)) {}

http_server::~http_server() = default;

std::optional<std::string> http_server::listen(const tcp::endpoint& at) {
    return impl_->open(at);
}

void http_server::pause() {
    impl_->close_listener();
    // abort() does not destroy the session (pending handlers hold it), so iterating a copy is
    // only needed because the set may shrink as handlers complete later.
    const auto open = impl_->state_->open;
    for (session* s : open) s->abort();
}

std::optional<std::string> http_server::resume() {
    if (impl_->acceptor_.is_open()) return std::nullopt;
    return impl_->open(impl_->bound_);
}

void http_server::stop() {
    pause();
}

tcp::endpoint http_server::local_endpoint() const {
    return impl_->bound_;
}

}  // namespace broker::exchange::sim
