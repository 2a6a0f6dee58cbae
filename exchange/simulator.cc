#include "exchange/simulator.h"

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "engine/time.h"
#include "exchange/market.h"
#include "exchange/signature.h"

namespace broker::exchange {

namespace net = boost::asio;

namespace {

std::int64_t unix_ms_now() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

class simulator final : public gateway {
public:
    simulator(const simulator_config& config, callback_sink sink)
        : config_(config), sink_(std::move(sink)), rng_(config.seed), quote_timer_(io_) {
        schedule_quotes();
        thread_ = std::thread([this] { io_.run(); });
    }

    ~simulator() override { stop(); }

    void submit(const order& o) override {
        net::post(io_, [this, o] { accept(o); });
    }

    // Orders the simulator still owes a report for are in `accepted_`, and their report will
    // come; anything else it never saw (it lives in memory: a restart forgets), so it executes
    // it now. Re-sending is idempotent either way.
    void reconcile(const order& o) override { submit(o); }

    std::optional<money> quote(symbol s) const override { return market_.quote(s); }

    bool market_open(timestamp_ms) const override { return true; }  // the simulator never closes

    void stop() override {
        if (stopped_.exchange(true)) return;
        work_.reset();
        io_.stop();
        if (thread_.joinable()) thread_.join();
    }

private:
    struct report {
        std::uint64_t order_id = 0;
        std::string body;
        int attempts = 0;
    };

    void schedule_quotes() {
        quote_timer_.expires_after(std::chrono::milliseconds(config_.quote_interval_ms));
        quote_timer_.async_wait([this](const boost::system::error_code& ec) {
            if (ec) return;
            market_.step(rng_);
            schedule_quotes();
        });
    }

    void accept(const order& o) {
        // Idempotent by order id: a re-sent order is already owed its execution.
        if (!accepted_.insert(o.id.value).second) return;
        std::uniform_int_distribution<std::int64_t> jitter(0, config_.latency_ms);
        const auto delay = std::chrono::milliseconds(config_.latency_ms / 2 + jitter(rng_));
        auto timer = std::make_shared<net::steady_timer>(io_, delay);
        timer->async_wait([this, o, timer](const boost::system::error_code& ec) {
            if (!ec) execute(o);
        });
    }

    void execute(const order& o) {
        const auto price = quote(o.sym);
        std::bernoulli_distribution rejected(config_.reject_rate);
        std::string status = "FILLED";
        std::string reason = "null";
        std::string fill = "null";
        if (!price) {
            status = "REJECTED";
            reason = "\"unknown_symbol\"";
        } else if (rejected(rng_)) {
            status = "REJECTED";
            reason = "\"exchange_rejected\"";
        } else if (o.order_side == side::buy && *price > o.limit_price) {
            status = "REJECTED";
            reason = "\"limit_not_marketable\"";
        } else {
            fill = fmt::format("\"{}\"", format_money(*price));
        }
        const std::string id = format_trade_id(o.id);
        auto r = std::make_shared<report>();
        r->order_id = o.id.value;
        r->body = fmt::format(
            R"({{"order_id":"{}","exec_id":"SIM-{}-{}","status":"{}","quantity":{},)"
            R"("fill_price":{},"reason":{},"executed_at":"{}"}})",
            id, id, ++exec_counter_, status, o.qty.shares, fill, reason,
            format_rfc3339_ms(unix_ms_now()));
        deliver(r, std::bernoulli_distribution(config_.duplicate_rate)(rng_));
    }

    // Delivers until the broker answers 2xx (at least once), then maybe once more (a duplicate).
    void deliver(std::shared_ptr<report> r, bool duplicate) {
        const std::int64_t now_s = unix_ms_now() / 1000;
        ++r->attempts;
        sink_(r->body, sign_callback(config_.secret, now_s, r->body),
              [this, r, duplicate](int status) {
                  net::post(io_, [this, r, duplicate, status] { delivered(r, duplicate, status); });
              });
    }

    void delivered(std::shared_ptr<report> r, bool duplicate, int status) {
        if (stopped_) return;
        if (status >= 200 && status < 300) {
            if (duplicate) {
                deliver(r, false);
            } else {
                accepted_.erase(r->order_id);  // settled: the order no longer needs remembering
            }
            return;
        }
        if (status == 404) {
            // The broker does not know the order (it lost it before it was durable): a real venue
            // would keep retrying, but nothing can ever accept it, so it is dropped here.
            return;
        }
        // Back off exponentially up to 2 s; at-least-once means never giving up.
        const auto backoff =
            std::chrono::milliseconds(std::min<std::int64_t>(2000, 20LL << std::min(r->attempts, 7)));
        auto timer = std::make_shared<net::steady_timer>(io_, backoff);
        timer->async_wait([this, r, duplicate, timer](const boost::system::error_code& ec) {
            if (!ec) deliver(r, duplicate);
        });
    }

    simulator_config config_;
    callback_sink sink_;
    std::mt19937_64 rng_;  // used on the simulator thread only
    net::io_context io_;
    net::executor_work_guard<net::io_context::executor_type> work_ = net::make_work_guard(io_);
    net::steady_timer quote_timer_;
    market market_;
    std::unordered_set<std::uint64_t> accepted_;  // orders owed a report; simulator thread only
    std::uint64_t exec_counter_ = 0;
    std::atomic<bool> stopped_{false};
    std::thread thread_;
};

}  // namespace

std::unique_ptr<gateway> make_simulated_exchange(const simulator_config& config,
                                                 callback_sink sink) {
    return std::make_unique<simulator>(config, std::move(sink));
}

std::vector<std::string> simulated_symbols() {
    std::vector<std::string> out;
    for (const auto& l : market_universe()) out.emplace_back(l.ticker);
    return out;
}

}  // namespace broker::exchange
