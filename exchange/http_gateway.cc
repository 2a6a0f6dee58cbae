#include "exchange/http_gateway.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>  // std::exchange, which Boost 1.74's awaitable.hpp uses without including

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "exchange/protocol.h"

namespace broker::exchange {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using net::use_awaitable;
using clock_type = std::chrono::steady_clock;

std::optional<std::pair<std::string, std::uint16_t>> parse_http_origin(std::string_view url) {
    constexpr std::string_view scheme = "http://";
    if (!url.starts_with(scheme)) return std::nullopt;
    url.remove_prefix(scheme.size());
    if (!url.empty() && url.back() == '/') url.remove_suffix(1);
    const auto colon = url.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    const std::string_view port_text = url.substr(colon + 1);
    unsigned port = 0;
    for (const char c : port_text) {
        if (c < '0' || c > '9' || port > 65535) return std::nullopt;
        port = port * 10 + static_cast<unsigned>(c - '0');
    }
    if (port_text.empty() || port == 0 || port > 65535) return std::nullopt;
    std::string host(url.substr(0, colon));
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    return std::pair{host == "localhost" ? std::string("127.0.0.1") : host,
                     static_cast<std::uint16_t>(port)};
}

namespace {

struct job {
    enum class kind : std::uint8_t { submit, reconcile } what = kind::submit;
    order o;
    int attempt = 0;
};

struct http_result {
    unsigned status = 0;  // 0: no answer (connection failed, timed out)
    std::string body;
};

std::string order_json(const order& o, const std::string& callback_url) {
    const std::string limit =
        o.limit_price.ticks > 0 ? fmt::format(R"(,"limit_price":"{}")", format_money(o.limit_price)) : "";
    return fmt::format(
        R"({{"order_id":"{}","symbol":"{}","side":"{}","quantity":{}{},"callback_url":"{}"}})",
        format_trade_id(o.id), to_string(o.sym), to_string(o.order_side), o.qty.shares, limit,
        callback_url);
}

class http_gateway final : public http_gateway_handle {
public:
  http_gateway(const http_gateway_config& config, execution_sink reports)
      : config_(config),
        reports_(std::move(reports)),
        endpoint_(net::ip::make_address(config.address.empty() ? config.host : config.address),
                  config.port) {
      for (std::size_t i = 0; i < config_.connections; ++i) {
          net::co_spawn(io_, worker(), net::detached);
      }
      net::co_spawn(io_, poll_quotes(), net::detached);
      thread_ = std::thread([this] { io_.run(); });
  }

    ~http_gateway() override { stop(); }

    void submit(const order& o) override { enqueue(job{job::kind::submit, o, 0}); }
    void reconcile(const order& o) override { enqueue(job{job::kind::reconcile, o, 0}); }

    bool has_quotes() const override {
        std::lock_guard lock(quotes_mutex_);
        return quotes_ != nullptr;
    }

    std::optional<money> quote(symbol s) const override {
        std::shared_ptr<const quote_table> table;
        {
            std::lock_guard lock(quotes_mutex_);
            table = quotes_;
        }
        if (!table) return std::nullopt;
        const auto it = table->find(s.packed);
        if (it == table->end()) return std::nullopt;
        return money{it->second};
    }

    bool market_open(timestamp_ms) const override { return true; }  // the node's calendar decides

    void stop() override {
        if (stopped_.exchange(true)) return;
        work_.reset();
        io_.stop();
        if (thread_.joinable()) thread_.join();
    }

    bool wait_for_quotes(int timeout_ms) override {
        std::unique_lock lock(quotes_mutex_);
        return quotes_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                   [&] { return quotes_ != nullptr; });
    }

    gateway_stats stats() const override {
        std::lock_guard lock(stats_mutex_);
        return stats_;
    }

private:
    using quote_table = std::unordered_map<std::uint64_t, std::int64_t>;

    void enqueue(job j) {
        net::post(io_, [this, j = std::move(j)]() mutable {
            if (queue_.size() >= config_.queue_max) {
                // Needs more trades at the exchange than the bound (one per customer), as a
                // restart with that many in flight reconciles them all at once. Dropping is safe:
                // the watchdog asks about the trade again, and this trade is not marked as being
                // reconciled, so that ask is taken.
                spdlog::error("exchange queue full; order {} waits for the watchdog",
                              format_trade_id(j.o.id));
                bump(&gateway_stats::dropped);
                return;
            }
            // One status query per trade at a time: the watchdog asks every round while a
            // trade is stuck, and during an outage those asks would otherwise pile up.
            if (j.what == job::kind::reconcile && !reconciling_.insert(j.o.id.value).second) return;
            queue_.push_back(std::move(j));
            wake_one();
        });
    }

    void wake_one() {
        if (idle_.empty()) return;
        net::steady_timer* t = idle_.back();
        idle_.pop_back();
        t->cancel();
    }

    // The breaker: closed (send), open (wait out the cool-down), half-open (one probe).
    std::optional<clock_type::duration> breaker_wait() {
        if (failures_ < config_.breaker_failures) return std::nullopt;
        const auto now = clock_type::now();
        if (now < open_until_) return open_until_ - now;
        if (probing_) return std::chrono::milliseconds(config_.breaker_cooldown_ms);
        probing_ = true;
        return std::nullopt;
    }

    void record(bool ok) {
        probing_ = false;
        if (ok) {
            failures_ = 0;
            return;
        }
        if (++failures_ == config_.breaker_failures ||
            (failures_ > config_.breaker_failures && clock_type::now() >= open_until_)) {
            open_until_ = clock_type::now() + std::chrono::milliseconds(config_.breaker_cooldown_ms);
            if (failures_ == config_.breaker_failures) {
                spdlog::warn("exchange unreachable: circuit breaker open for {} ms",
                             config_.breaker_cooldown_ms);
                bump(&gateway_stats::breaker_opened);
            }
        }
    }

    void bump(std::uint64_t gateway_stats::*field) {
        std::lock_guard lock(stats_mutex_);
        ++(stats_.*field);
    }

    net::awaitable<void> worker() {
        std::optional<beast::tcp_stream> conn;
        net::steady_timer timer(io_);
        while (!stopped_) {
            boost::system::error_code ec;
            if (queue_.empty()) {
                // Idle until a job comes (wake_one cancels the wait) or a second passes.
                timer.expires_after(std::chrono::seconds(1));
                idle_.push_back(&timer);
                co_await timer.async_wait(net::redirect_error(use_awaitable, ec));
                std::erase(idle_, &timer);
                continue;
            }
            // The breaker is asked only with a job in hand: when half-open, its yes is the one
            // probe, which this worker must then send (record() ends the probe). Taken by an
            // idle worker, the probe would never end, and the breaker never close again.
            if (const auto blocked = breaker_wait()) {
                timer.expires_after(*blocked);
                co_await timer.async_wait(net::redirect_error(use_awaitable, ec));
                continue;
            }
            job j = std::move(queue_.front());
            queue_.pop_front();
            if (j.what == job::kind::submit) {
                co_await send(j, conn);
            } else {
                co_await ask(j, conn);
            }
        }
    }

    net::awaitable<http_result> request(std::optional<beast::tcp_stream>& conn, http::verb verb,
                                        std::string target, std::string body) {
        http_result out;
        try {
            if (!conn) {
                conn.emplace(io_);
                conn->expires_after(std::chrono::milliseconds(config_.request_timeout_ms));
                co_await conn->async_connect(endpoint_, use_awaitable);
            }
            http::request<http::string_body> req{verb, target, 11};
            req.set(http::field::host, config_.host);
            req.set(http::field::user_agent, "brokerd");
            if (!body.empty()) {
                req.set(http::field::content_type, "application/json");
                req.body() = std::move(body);
            }
            req.prepare_payload();
            req.keep_alive(true);
            conn->expires_after(std::chrono::milliseconds(config_.request_timeout_ms));
            co_await http::async_write(*conn, req, use_awaitable);
            beast::flat_buffer buffer;
            http::response_parser<http::string_body> parser;
            parser.body_limit(1 << 20);
            co_await http::async_read(*conn, buffer, parser, use_awaitable);
            auto res = parser.release();
            out.status = res.result_int();
            out.body = std::move(res.body());
            if (!res.keep_alive()) conn.reset();
        } catch (const boost::system::system_error&) {
            conn.reset();
            out.status = 0;
        }
        co_return out;
    }

    net::awaitable<void> send(job j, std::optional<beast::tcp_stream>& conn) {
        const auto r = co_await request(conn, http::verb::post, "/v1/orders",
                                        order_json(j.o, config_.callback_url));
        if (r.status == 200 || r.status == 202) {
            record(true);
            bump(&gateway_stats::sent);
            co_return;
        }
        if (r.status >= 400 && r.status < 500 && r.status != 408 && r.status != 429) {
            // The exchange refuses this order for good: it is rejected, not retried forever.
            record(true);
            spdlog::warn("exchange refused order {} with {}: {}", format_trade_id(j.o.id), r.status,
                         r.body.substr(0, 200));
            apply_execution x;
            x.id = j.o.id;
            x.filled = false;
            x.qty = j.o.qty;
            x.reason = errc::exchange_rejected;
            x.exec_id = fmt::format("refused-{}", r.status);
            reports_(std::move(x));
            co_return;
        }
        record(false);
        bump(&gateway_stats::send_failures);
        retry_later(std::move(j));
    }

    net::awaitable<void> ask(job j, std::optional<beast::tcp_stream>& conn) {
        bump(&gateway_stats::queries);
        const auto r = co_await request(conn, http::verb::get,
                                        "/v1/orders/" + format_trade_id(j.o.id), "");
        reconciling_.erase(j.o.id.value);
        if (r.status == 404) {
            record(true);
            bump(&gateway_stats::resent_unknown);
            co_await send(job{job::kind::submit, j.o, 0}, conn);
        } else if (r.status == 200) {
            record(true);
            if (auto report = parse_order_status(j.o, r.body)) reports_(std::move(*report));
        } else {
            // No answer: not retried here; the watchdog asks again on its next round while the
            // trade is still stuck, so nothing accumulates during an outage.
            record(false);
        }
    }

    // Exponential backoff with jitter, so that a recovering exchange is not hit by every order
    // at the same instant.
    void retry_later(job j) {
        const int shift = std::min(j.attempt, 10);
        const int cap = std::min(config_.backoff_max_ms, config_.backoff_min_ms << shift);
        std::uniform_int_distribution<int> jitter(cap / 2, std::max(cap / 2, cap));
        const auto delay = std::chrono::milliseconds(jitter(rng_));
        ++j.attempt;
        auto timer = std::make_shared<net::steady_timer>(io_, delay);
        timer->async_wait([this, timer, j = std::move(j)](boost::system::error_code ec) mutable {
            if (ec || stopped_) return;
            queue_.push_back(std::move(j));
            wake_one();
        });
    }

    net::awaitable<void> poll_quotes() {
        std::optional<beast::tcp_stream> conn;
        net::steady_timer timer(io_);
        while (!stopped_) {
            const auto r = co_await request(conn, http::verb::get, "/v1/quotes", "");
            if (r.status == 200) update_quotes(r.body);
            timer.expires_after(std::chrono::milliseconds(config_.quote_interval_ms));
            boost::system::error_code ec;
            co_await timer.async_wait(net::redirect_error(use_awaitable, ec));
        }
    }

    void update_quotes(const std::string& body) {
        const auto quotes = parse_quotes(body);
        if (!quotes) return;
        auto table = std::make_shared<quote_table>();
        for (const auto& [sym, price] : *quotes) table->emplace(sym.packed, price.ticks);
        {
            std::lock_guard lock(quotes_mutex_);
            quotes_ = std::move(table);
        }
        quotes_cv_.notify_all();
    }

    http_gateway_config config_;
    execution_sink reports_;
    net::io_context io_;
    net::executor_work_guard<net::io_context::executor_type> work_ = net::make_work_guard(io_);
    tcp::endpoint endpoint_;
    // Gateway thread only:
    std::deque<job> queue_;
    std::unordered_set<std::uint64_t> reconciling_;  // trades with a status query queued or out
    std::vector<net::steady_timer*> idle_;
    int failures_ = 0;
    bool probing_ = false;
    clock_type::time_point open_until_{};
    std::mt19937 rng_{std::random_device{}()};

    mutable std::mutex quotes_mutex_;
    std::condition_variable quotes_cv_;
    std::shared_ptr<const quote_table> quotes_;
    mutable std::mutex stats_mutex_;
    gateway_stats stats_;
    std::atomic<bool> stopped_{false};
    std::thread thread_;
};

}  // namespace

std::unique_ptr<http_gateway_handle> make_http_gateway(const http_gateway_config& config,
                                                       execution_sink reports) {
    return std::make_unique<http_gateway>(config, std::move(reports));
}

}  // namespace broker::exchange
