#include "api/server.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <cctype>
#include <chrono>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/json.h"

namespace broker::api {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

namespace {

// Beast 1.74 has its own string_view; the router takes std::string_view.
std::string_view view(beast::string_view s) { return {s.data(), s.size()}; }

// A Sec-WebSocket-Key that is the base64 of 16 bytes (RFC 6455 4.2.1): 21 characters of 6 bits,
// a 22nd that carries the last 2 bits (its other 4 are zero), and the padding "==".
bool is_websocket_key(std::string_view key) {
    const auto base64 = [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '+' || c == '/';
    };
    if (key.size() != 24 || key[22] != '=' || key[23] != '=') return false;
    if (!std::all_of(key.begin(), key.begin() + 21, base64)) return false;
    return key[21] == 'A' || key[21] == 'Q' || key[21] == 'g' || key[21] == 'w';
}

// What Beast's handshake would refuse with a plain-text answer, refused first as the API's JSON
// errors: a WebSocket version other than 13 (426, naming the version spoken) and a missing or
// malformed key (400).
std::optional<http_response> handshake_error(const http::request<http::string_body>& req) {
    if (req.count(http::field::sec_websocket_version) != 1 ||
        req[http::field::sec_websocket_version] != "13") {
        return http_response{
            426, error_json("upgrade_required", "this server speaks WebSocket version 13"), {}, 0};
    }
    if (req.count(http::field::sec_websocket_key) != 1 ||
        !is_websocket_key(view(req[http::field::sec_websocket_key]))) {
        return http_response{
            400,
            error_json("bad_request", "Sec-WebSocket-Key must be the base64 of 16 bytes"),
            {},
            0};
    }
    return std::nullopt;
}

// Headers a request may carry once: with two, which one a proxy checked and which one reached
// here could differ.
std::optional<std::string_view> repeated_header(const http::request<http::string_body>& req) {
    if (req.count(http::field::authorization) > 1) return "Authorization";
    if (req.count("X-Exchange-Signature") > 1) return "X-Exchange-Signature";
    if (req.count(http::field::content_type) > 1) return "Content-Type";
    return std::nullopt;
}

// The bytes of a Host value: reg-name, IPv4 or an IP literal in brackets, then an optional port
// (RFC 3986 3.2.2).
constexpr std::array<bool, 256> host_bytes = [] {
    std::array<bool, 256> ok{};
    for (int c = '0'; c <= '9'; ++c) ok[c] = true;
    for (int c = 'a'; c <= 'z'; ++c) ok[c] = ok[c - 'a' + 'A'] = true;
    for (const char c : std::string_view("-._~%!$&'()*+,;=:[]")) {
        ok[static_cast<unsigned char>(c)] = true;
    }
    return ok;
}();

// RFC 9112 3.2: an HTTP/1.1 request must carry one Host (empty is allowed: a target without an
// authority), and its value must be host[:port]. Why not, or nothing when it does.
std::optional<std::string_view> host_error(const http::request<http::string_body>& req) {
    // One lookup for both: a request's field lookups cost more than the rest of this check.
    const auto [host, after] = req.equal_range(http::field::host);
    if (host == after) {
        if (req.version() < 11) return std::nullopt;
        return "an HTTP/1.1 request needs a Host header";
    }
    if (std::next(host) != after) return "the Host header appears more than once";
    for (const char c : view(host->value())) {
        if (!host_bytes[static_cast<unsigned char>(c)]) return "the Host header is not host[:port]";
    }
    return std::nullopt;
}

// RFC 9112 3.2.2: a server must accept a target in absolute-form ("http://host:port/path?q"),
// which proxies send. Its path and query, as the origin-form a client would send directly
// ("/" when the path is empty); nullopt when the target is not in absolute-form, and an empty
// view when its authority is not host[:port]. `spare` holds the text when it must be made.
std::optional<std::string_view> absolute_form_path(std::string_view target, std::string& spare) {
    const auto scheme_is = [&](std::string_view scheme) {
        return target.size() > scheme.size() &&
               std::equal(scheme.begin(), scheme.end(), target.begin(), [](char a, char b) {
                   return a == std::tolower(static_cast<unsigned char>(b));
               });
    };
    std::size_t at = 0;
    if (scheme_is("http://")) {
        at = 7;
    } else if (scheme_is("https://")) {
        at = 8;
    } else {
        return std::nullopt;
    }
    const std::size_t end = std::min(target.find_first_of("/?#", at), target.size());
    const std::string_view authority = target.substr(at, end - at);
    if (authority.empty() || !std::all_of(authority.begin(), authority.end(), [](char c) {
            return host_bytes[static_cast<unsigned char>(c)];
        })) {
        return std::string_view{};
    }
    const std::string_view rest = target.substr(end);
    if (!rest.empty() && rest.front() == '/') return rest;
    spare = "/";
    spare += rest;
    return std::string_view(spare);
}

// The Date header's value for now (RFC 9110 6.6.1: an origin server with a clock sends one in
// every 2xx to 4xx answer; clients use it to spot a skewed clock before trusting a token's exp).
// Formatted once a second per thread.
beast::string_view http_date() {
    thread_local std::time_t formatted_at = -1;
    thread_local char text[32] = {};
    thread_local std::size_t length = 0;
    const std::time_t now = std::time(nullptr);
    if (now != formatted_at) {
        std::tm utc{};
        gmtime_r(&now, &utc);
        // IMF-fixdate; strftime's %a and %b are English in the "C" locale brokerd runs in.
        length = std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &utc);
        formatted_at = now;
    }
    return {text, length};
}

// The comma-separated codings of every line of a header, lowercased, without whitespace.
std::vector<std::string> codings(const http::request<http::string_body>& req, http::field name) {
    std::vector<std::string> out;
    const auto [first, last] = req.equal_range(name);
    for (auto line = first; line != last; ++line) {
        const std::string_view value = view(line->value());
        std::size_t at = 0;
        while (at <= value.size()) {
            const std::size_t comma = std::min(value.find(',', at), value.size());
            std::string token;
            for (const char c : value.substr(at, comma - at)) {
                if (c != ' ' && c != '\t')
                    token += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            }
            out.push_back(std::move(token));
            at = comma + 1;
        }
    }
    return out;
}

struct refusal {
    http_response response;
    bool close = false;  // the stream position is not to be trusted after this request
};

// Transfer and content codings brokerd does not take:
// - a last transfer coding other than chunked, chunked twice or an empty coding: the body's
//   length cannot be known (RFC 9112 6.3: 400, then close), and what Beast left unread could be
//   taken for another request;
// - another transfer coding before chunked (`gzip, chunked`): the body is read, but it would
//   have to be decoded. RFC 9112 6.1 suggests 501; a 4xx tells clients, which retry a 5xx, that
//   the request itself has to change, and keeps bad input from ever getting a 5xx;
// - a body with a Content-Encoding other than identity (RFC 7694: 415).
std::optional<refusal> coding_error(const http::request<http::string_body>& req) {
    const auto transfer = codings(req, http::field::transfer_encoding);
    if (!transfer.empty()) {
        const auto chunked = std::count(transfer.begin(), transfer.end(), "chunked");
        const bool empty = std::find(transfer.begin(), transfer.end(), "") != transfer.end();
        if (transfer.back() != "chunked" || chunked > 1 || empty) {
            return refusal{http_response{400,
                                         error_json("bad_request",
                                                    "Transfer-Encoding must end in chunked, once; "
                                                    "or send Content-Length"),
                                         {},
                                         0},
                           true};
        }
        if (transfer.size() > 1) {
            return refusal{
                http_response{400,
                              error_json("unsupported_transfer_encoding",
                                         "chunked is the only transfer coding brokerd takes"),
                              {},
                              0},
                false};
        }
    }
    if (!req.body().empty()) {
        for (const auto& coding : codings(req, http::field::content_encoding)) {
            if (coding == "identity") continue;
            return refusal{
                http_response{415,
                              error_json("unsupported_content_encoding",
                                         "send the body as plain JSON, without a content coding"),
                              {},
                              0},
                false};
        }
    }
    return std::nullopt;
}

class session : public std::enable_shared_from_this<session> {
public:
    session(tcp::socket&& socket, router& r, const server_config& config,
            std::shared_ptr<std::atomic<std::size_t>> open)
        : stream_(std::move(socket)), router_(r), config_(config), open_(std::move(open)) {}

    ~session() { open_->fetch_sub(1); }

    void run() {
        // User-level non-blocking mode: the synchronous reads and writes below return
        // would_block instead of waiting (Asio's asynchronous operations are unaffected).
        beast::error_code ignored;
        stream_.socket().non_blocking(true, ignored);
        net::dispatch(stream_.get_executor(),
                      beast::bind_front_handler(&session::do_read, shared_from_this()));
    }

private:
    void do_read() {
        head_ = false;
        parser_.emplace();
        parser_->body_limit(config_.body_limit_bytes);
        parser_->header_limit(static_cast<std::uint32_t>(config_.header_limit_bytes));
        if (buffer_.size() > 0) return read_request();
        // Between requests a keep-alive connection may idle; once a request starts it must
        // arrive whole within the request timeout, so trickling bytes (slowloris) cannot hold a
        // session for long. The first bytes are read into buffer_, which the parser takes before
        // the socket, so it sees every byte. (A read rather than a readiness wait: Asio re-arms a
        // wait with an epoll_ctl, once per request.)
        stream_.expires_after(std::chrono::seconds(config_.idle_timeout_s));
        stream_.async_read_some(
            buffer_.prepare(first_read_bytes),
            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                if (ec) return self->close();  // idle timeout (the stream is closed), EOF, reset
                self->buffer_.commit(n);
                self->read_request();
            });
    }

    void read_request() {
        // Empty lines before a request line are ignored (RFC 9112 2.2): some clients send a
        // CRLF after a POST body, and Beast's parser would take it for a malformed request line.
        if (!parser_->got_some()) {
            const auto* at = static_cast<const char*>(buffer_.data().data());
            std::size_t blank = 0;
            while (blank < buffer_.size() && (at[blank] == '\r' || at[blank] == '\n')) ++blank;
            buffer_.consume(blank);
            if (buffer_.size() == 0) return do_read();  // the request is yet to come: idle
        }
        // A request that is already whole in the buffer (the usual case: one read brings it) is
        // parsed here with Beast's parser, without a round through the io_context; the rest of
        // one that is not arrives by the asynchronous read, under the request timeout.
        parser_->eager(true);
        beast::error_code ec;
        while (buffer_.size() > 0 && !parser_->is_done()) {
            const std::size_t used = parser_->put(buffer_.data(), ec);
            buffer_.consume(used);
            if (ec || used == 0) break;
        }
        if (parser_->is_done() || (ec && ec != http::error::need_more)) return on_read(ec, 0);
        stream_.expires_after(std::chrono::seconds(config_.request_timeout_s));
        if (!parser_->is_header_done()) {
            http::async_read_header(stream_, buffer_, *parser_,
                                    [self = shared_from_this()](beast::error_code e, std::size_t) {
                                        if (e) return self->on_read(e, 0);
                                        self->read_body();
                                    });
            return;
        }
        read_body();
    }

    // The header is in; the body may not be. Runs once per request.
    void read_body() {
        if (parser_->is_done()) return on_read({}, 0);
        send_continue_if_expected();
        http::async_read(stream_, buffer_, *parser_,
                         beast::bind_front_handler(&session::on_read, shared_from_this()));
    }

    // A client that sent `Expect: 100-continue` waits for an interim 100 (or a final answer)
    // before it sends the body: without one it waits out a timeout of its own, a second for
    // many HTTP libraries (RFC 9110 10.1.1). Not to HTTP/1.0 clients, and not once body bytes
    // are already here.
    void send_continue_if_expected() {
        const auto& head = parser_->get();
        if (head.version() < 11 || buffer_.size() > 0) return;
        if (!beast::iequals(head[http::field::expect], "100-continue")) return;
        static constexpr std::string_view interim = "HTTP/1.1 100 Continue\r\n\r\n";
        // Asio tries the send at once: with the client waiting (nothing of ours unread), the 25
        // bytes leave before this returns, so ahead of the final answer, which needs the body.
        net::async_write(stream_, net::buffer(interim.data(), interim.size()),
                         [self = shared_from_this()](beast::error_code e, std::size_t) {
                             // The body's read is still pending; it fails in turn and closes.
                             if (e) self->shut_down_send();
                         });
    }

    void on_read(beast::error_code ec, std::size_t) {
        if (ec == http::error::end_of_stream) return close();
        if (ec == http::error::body_limit) {
            return write_error(413, "body_too_large", "request bodies are limited to 16 KiB");
        }
        if (ec == http::error::header_limit) {
            return write_error(431, "headers_too_large", "request headers are limited to 8 KiB");
        }
        if (ec == beast::error::timeout || ec == net::error::operation_aborted) return close();
        if (ec) {
            // A malformed request line or header: answer once, then close, since the stream
            // position is no longer trustworthy.
            if (ec.category() == http::make_error_code(http::error::bad_target).category()) {
                return write_error(400, "bad_request", ec.message());
            }
            return close();
        }
        request_ = parser_->release();
        keep_alive_ = request_.keep_alive();
        // Transfer-Encoding is not HTTP/1.0's: such a message's framing is not to be trusted,
        // so the connection closes after its answer (RFC 9112 6.1).
        if (request_.version() < 11 && request_.count(http::field::transfer_encoding) > 0) {
            keep_alive_ = false;
        }
        head_ = request_.method() == http::verb::head;
        stream_.expires_never();  // the engine answers; a slow engine is not the client's fault
        if (const auto name = repeated_header(request_)) {
            return write(http_response{
                400,
                error_json("bad_request",
                           fmt::format("the {} header appears more than once", *name)),
                {},
                0});
        }
        if (const auto why = host_error(request_)) {
            return write(http_response{400, error_json("bad_request", *why), {}, 0});
        }
        if (auto refused = coding_error(request_)) {
            if (refused->close) keep_alive_ = false;
            return write(std::move(refused->response));
        }
        target_ = view(request_.target());
        if (const auto path = absolute_form_path(target_, absolute_target_)) {
            if (path->empty()) {
                return write(http_response{
                    400,
                    error_json("bad_request", "the target's authority is not host[:port]"),
                    {},
                    0});
            }
            target_ = *path;
        }
        if (websocket::is_upgrade(request_) && request_.method() == http::verb::get &&
            router::is_stream_target(target_)) {
            return upgrade();
        }
        http_request req{view(request_.method_string()),
                         target_,
                         view(request_[http::field::authorization]),
                         view(request_["X-Exchange-Signature"]),
                         request_.body(),
                         view(request_[http::field::content_type])};
        auto self = shared_from_this();
        router_.handle(req, [self](http_response r) {
            // Inline on the connection's own thread (its context has one thread), else queued.
            net::dispatch(self->stream_.get_executor(),
                          [self, r = std::move(r)]() mutable { self->write(std::move(r)); });
        });
    }

    void upgrade() {
        if (auto refused = handshake_error(request_)) return write(std::move(*refused));
        const http_request req{view(request_.method_string()),
                               target_,
                               view(request_[http::field::authorization]),
                               {},
                               {}};
        router_.authorize_stream(
            req, [self = shared_from_this()](result<stream_request, http_response> allowed) {
                net::dispatch(self->stream_.get_executor(),
                              [self, allowed = std::move(allowed)]() mutable {
                                  self->on_stream_authorized(std::move(allowed));
                              });
            });
    }

    void on_stream_authorized(result<stream_request, http_response> allowed) {
        if (!allowed) {
            keep_alive_ = false;
            return write(std::move(allowed.error()));
        }
        // The stream session's own writes are all asynchronous; its socket goes back to the
        // blocking mode Beast's WebSocket stream expects of anything synchronous.
        beast::error_code ignored;
        stream_.socket().non_blocking(false, ignored);
        router_.count_response(101);
        // The stream keeps this connection's place under the bound for as long as it is open.
        open_->fetch_add(1);
        std::shared_ptr<void> slot(nullptr, [open = open_](void*) { open->fetch_sub(1); });
        start_stream_session(std::move(stream_), std::move(request_), router_.backend(),
                             std::move(allowed->customer_id), allowed->since, stream_config{},
                             allowed->expires_ms, std::move(slot));
    }

    void write_error(unsigned status, std::string_view code, std::string_view message) {
        keep_alive_ = false;
        write(http_response{status, error_json(code, message), {}});
    }

    void write(http_response r) {
        router_.count_response(r.status);
        serializer_.reset();
        response_ = {};
        response_.version(11);
        response_.result(r.status);
        response_.set(http::field::server, "brokerd");
        response_.set(http::field::date, http_date());
        response_.set(http::field::content_type,
                      beast::string_view(r.content_type.data(), r.content_type.size()));
        response_.set(http::field::cache_control, "no-store");
        if (!r.allow.empty()) response_.set(http::field::allow, r.allow);
        if (r.status == 401) {
            response_.set(http::field::www_authenticate,
                          beast::string_view(r.challenge.data(), r.challenge.size()));
        }
        if (r.status == 426) {
            // The protocol to upgrade to, and the WebSocket version spoken (RFC 9110 15.5.22,
            // RFC 6455 4.4).
            response_.set(http::field::upgrade, "websocket");
            response_.set(http::field::sec_websocket_version, "13");
        }
        if (r.retry_after_s > 0) {
            response_.set(http::field::retry_after, std::to_string(r.retry_after_s));
        } else if (r.status == 503) {
            response_.set(http::field::retry_after, "1");
        }
        response_.keep_alive(keep_alive_);
        response_.body() = std::move(r.body);
        response_.prepare_payload();
        if (head_) {
            // The length the GET's body would have, and no body.
            const auto length = response_.body().size();
            response_.body().clear();
            response_.content_length(length);
        }
        // An answer almost always fits the socket's send buffer: Beast's serializer writes it
        // here at once. What the socket does not take now (a client that does not read) goes
        // asynchronously, bounded by the idle timeout.
        serializer_.emplace(response_);
        beast::error_code ec;
        http::write(stream_.socket(), *serializer_, ec);
        if (ec == net::error::would_block || ec == net::error::try_again) {
            stream_.expires_after(std::chrono::seconds(config_.idle_timeout_s));
            return http::async_write(
                stream_, *serializer_,
                beast::bind_front_handler(&session::on_write, shared_from_this()));
        }
        on_write(ec, 0);
    }

    void on_write(beast::error_code ec, std::size_t) {
        if (ec) return close();
        if (!keep_alive_) return close();
        // The next request is read on a later turn of the io_context, after the other answers
        // of this round are written: by then the client has often sent it, and the read takes
        // it at once instead of waiting for readiness. (It also keeps a long pipeline of
        // requests answered at once from recursing.)
        net::post(stream_.get_executor(),
                  beast::bind_front_handler(&session::do_read, shared_from_this()));
    }

    // Ends the connection: our side first, then whatever the client still sends is read and
    // dropped until it closes its side too, for at most linger_s. Closing a socket with unread
    // bytes makes the kernel reset the connection, and a reset can destroy the answer before
    // the client has read it: a client still writing a body too large to take would see a
    // broken pipe instead of the 413 (RFC 9112 9.6). Called with no read in progress.
    void close() {
        shut_down_send();
        if (!stream_.socket().is_open()) return;  // timed out: the stream closed it
        stream_.expires_after(std::chrono::seconds(linger_s));
        linger();
    }

    void linger() {
        buffer_.clear();
        stream_.async_read_some(buffer_.prepare(linger_read_bytes),
                                [self = shared_from_this()](beast::error_code ec, std::size_t) {
                                    // The client's close, a reset, or linger_s passed (the
                                    // stream then closes the socket): the session ends.
                                    if (!ec) self->linger();
                                });
    }

    void shut_down_send() {
        beast::error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    }

    // The idle read's size. Beast 1.74's parser counts its header limit from the first header
    // line it has not yet taken, and it takes the complete lines of what it is first given: the
    // first read stretches the limit by up to its own size. 1 KiB holds a typical request whole
    // and keeps the bound within 1 KiB of header_limit_bytes (Beast's own first read is 512).
    static constexpr std::size_t first_read_bytes = 1024;
    // How long a closing connection waits for the client to close too, and the reads meanwhile.
    static constexpr int linger_s = 2;
    static constexpr std::size_t linger_read_bytes = 16 * 1024;

    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    router& router_;
    const server_config& config_;
    std::shared_ptr<std::atomic<std::size_t>> open_;
    std::optional<http::request_parser<http::string_body>> parser_;
    http::request<http::string_body> request_;
    http::response<http::string_body> response_;
    bool head_ = false;  // the request being answered is a HEAD: the answer has no body
    std::string_view target_;      // the request's target in origin-form
    std::string absolute_target_;  // target_'s text when the request had none to point into
    std::optional<http::response_serializer<http::string_body>> serializer_;
    bool keep_alive_ = true;
};

// A connection over `connections_max` is told so: a bare close reads as a network fault, and a
// client retries at once. It gets a 503 with Retry-After, written without reading its request;
// then what it sent is read and dropped until it closes or a second has passed, because closing
// a socket with unread bytes resets the connection, and a reset can discard the answer before
// the client reads it (RFC 9112 9.6). Refusals in progress are bounded too (`refusals_max`);
// past that a connection is closed at once.
class overflow_refusal : public std::enable_shared_from_this<overflow_refusal> {
  public:
    static constexpr std::size_t refusals_max = 64;

    overflow_refusal(tcp::socket socket, std::shared_ptr<std::atomic<std::size_t>> refusing,
                     router& r)
        : socket_(std::move(socket)),
          timer_(socket_.get_executor()),
          refusing_(std::move(refusing)),
          router_(r) {}
    overflow_refusal(const overflow_refusal&) = delete;
    overflow_refusal& operator=(const overflow_refusal&) = delete;
    ~overflow_refusal() { refusing_->fetch_sub(1); }

    net::any_io_executor executor() { return socket_.get_executor(); }

    // Runs on the socket's own context.
    void start() {
        router_.count_response(503);
        response_.version(11);
        response_.result(http::status::service_unavailable);
        response_.set(http::field::server, "brokerd");
        response_.set(http::field::date, http_date());
        response_.set(http::field::content_type, "application/json");
        response_.set(http::field::cache_control, "no-store");
        response_.set(http::field::retry_after, "1");
        response_.keep_alive(false);
        response_.body() = error_json("too_many_connections",
                                      "the server is at its connection limit; retry later");
        response_.prepare_payload();
        timer_.expires_after(std::chrono::seconds(1));
        timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
            if (!ec) self->close();
        });
        http::async_write(socket_, response_,
                          [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec) return self->close();
                              beast::error_code ignored;
                              self->socket_.shutdown(tcp::socket::shutdown_send, ignored);
                              self->drain();
                          });
    }

  private:
    void drain() {
        socket_.async_read_some(net::buffer(sink_),
                                [self = shared_from_this()](beast::error_code ec, std::size_t) {
                                    if (ec) return self->close();
                                    self->drain();
                                });
    }

    void close() {
        timer_.cancel();
        beast::error_code ignored;
        socket_.close(ignored);
    }

    tcp::socket socket_;
    net::steady_timer timer_;
    std::shared_ptr<std::atomic<std::size_t>> refusing_;
    router& router_;
    http::response<http::string_body> response_;
    std::array<char, 4096> sink_{};
};

}  // namespace

struct server::impl : std::enable_shared_from_this<server::impl> {
    impl(std::vector<net::io_context*> contexts, router& r, server_config c)
        : contexts_(std::move(contexts)), acceptor_(*contexts_.front()), router_(r), config_(c) {}

    void do_accept() {
        // The next connection's socket is made on the next context: it lives there for good.
        net::io_context& to = *contexts_[next_++ % contexts_.size()];
        acceptor_.async_accept(net::any_io_executor(to.get_executor()),
                               beast::bind_front_handler(&impl::on_accept, shared_from_this()));
    }

    void on_accept(beast::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
        if (ec) {
            // Out of file descriptors (EMFILE, ENFILE) or memory: an accept at once would fail
            // at once again, a loop that takes a core and floods the log. Pause; the clients
            // wait in the listen backlog meanwhile.
            if (accept_failures_++ == 0) {
                spdlog::warn("accept failed: {}; trying again every {} ms", ec.message(),
                             accept_pause_ms);
            }
            accept_pause_.expires_after(std::chrono::milliseconds(accept_pause_ms));
            accept_pause_.async_wait([self = shared_from_this()](beast::error_code waited) {
                if (!waited) self->do_accept();
            });
            return;
        }
        if (accept_failures_ > 0) {
            spdlog::info("accepting again after {} failed accepts", accept_failures_);
            accept_failures_ = 0;
        }
        // Every answer and stream update is written whole, the moment it is ready: Nagle's
        // algorithm would hold a small write while an earlier one is unacknowledged, and a
        // client that delays its ACKs (macOS, Windows, or Linux once it has sent data on the
        // connection) would then see a stream update arrive up to a delayed-ACK timeout late
        // (40 ms on Linux, up to 200 ms elsewhere).
        beast::error_code nodelay_failed;
        socket.set_option(tcp::no_delay(true), nodelay_failed);
        if (open_->load() >= config_.connections_max) {
            // Over the connection bound: refuse at once rather than queue without limit.
            if (refusing_->fetch_add(1) < overflow_refusal::refusals_max) {
                auto r = std::make_shared<overflow_refusal>(std::move(socket), refusing_, router_);
                net::post(r->executor(), [r] { r->start(); });
            } else {
                refusing_->fetch_sub(1);
                beast::error_code ignored;
                socket.close(ignored);
            }
        } else {
            open_->fetch_add(1);
            std::make_shared<session>(std::move(socket), router_, config_, open_)->run();
        }
        do_accept();
    }

    std::vector<net::io_context*> contexts_;
    std::size_t next_ = 0;  // accept handlers only
    tcp::acceptor acceptor_;
    static constexpr int accept_pause_ms = 100;
    net::steady_timer accept_pause_{acceptor_.get_executor()};
    std::uint64_t accept_failures_ = 0;  // in a row; accept handlers only
    router& router_;
    server_config config_;
    std::shared_ptr<std::atomic<std::size_t>> open_ = std::make_shared<std::atomic<std::size_t>>(0);
    std::shared_ptr<std::atomic<std::size_t>> refusing_ =
        std::make_shared<std::atomic<std::size_t>>(0);
};

server::server(std::vector<net::io_context*> contexts, router& r, server_config config)
    : impl_(std::make_shared<impl>(std::move(contexts), r, config)) {}

server::~server() = default;

std::optional<std::string> server::listen(const tcp::endpoint& at) {
    beast::error_code ec;
    auto& a = impl_->acceptor_;
    if (a.open(at.protocol(), ec); ec) return "open: " + ec.message();
    if (a.set_option(net::socket_base::reuse_address(true), ec); ec) return "reuse: " + ec.message();
    if (a.bind(at, ec); ec) return "bind " + at.address().to_string() + ": " + ec.message();
    if (a.listen(net::socket_base::max_listen_connections, ec); ec) return "listen: " + ec.message();
    impl_->do_accept();
    return std::nullopt;
}

void server::stop() {
    net::post(impl_->acceptor_.get_executor(), [self = impl_] {
        beast::error_code ignored;
        self->acceptor_.close(ignored);
    });
}

tcp::endpoint server::local_endpoint() const {
    beast::error_code ec;
    return impl_->acceptor_.local_endpoint(ec);
}

}  // namespace broker::api
