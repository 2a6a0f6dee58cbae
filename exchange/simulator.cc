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
#include "exchange/signature.h"

namespace broker::exchange {

namespace net = boost::asio;

namespace {

struct listing {
    const char* ticker;
    std::int64_t start_price_ticks;
};

// Real US tickers with round starting prices of the right order of magnitude; the walk takes
// them from there. Prices are illustrative, not market data.
constexpr listing universe[] = {
    {"AAPL", 190'0000},  {"MSFT", 410'0000}, {"AMZN", 180'0000}, {"GOOGL", 170'0000},
    {"META", 500'0000},  {"NVDA", 120'0000}, {"TSLA", 240'0000}, {"JPM", 200'0000},
    {"V", 280'0000},     {"KO", 62'0000},    {"PEP", 170'0000},  {"WMT", 68'0000},
    {"DIS", 100'0000},   {"NFLX", 650'0000}, {"INTC", 31'0000},  {"AMD", 160'0000},
    {"BAC", 39'0000},    {"XOM", 115'0000},  {"CVX", 155'0000},  {"PFE", 28'0000},
    {"T", 17'0000},      {"F", 12'0000},     {"GE", 160'0000},   {"IBM", 185'0000},
    {"ORCL", 140'0000},  {"CSCO", 48'0000},  {"NKE", 95'0000},   {"MCD", 270'0000},
    {"BRK.B", 410'0000}, {"SPY", 540'0000},
};

std::int64_t unix_ms_now() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

class simulator final : public gateway {
public:
    simulator(const simulator_config& config, callback_sink sink)
        : config_(config), sink_(std::move(sink)), rng_(config.seed), quote_timer_(io_) {
        quotes_ = std::vector<std::atomic<std::int64_t>>(std::size(universe));
        for (std::size_t i = 0; i < std::size(universe); ++i) {
            quotes_[i].store(universe[i].start_price_ticks);
            index_.emplace(parse_symbol(universe[i].ticker)->packed, i);
        }
        schedule_quotes();
        thread_ = std::thread([this] { io_.run(); });
    }

    ~simulator() override { stop(); }

    void submit(const order& o) override {
        net::post(io_, [this, o] { accept(o); });
    }

    std::optional<money> quote(symbol s) const override {
        const auto it = index_.find(s.packed);
        if (it == index_.end()) return std::nullopt;
        return money{quotes_[it->second].load(std::memory_order_relaxed)};
    }

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
            // A step of up to +/-0.1% per interval, in integer ticks; never below one cent.
            std::uniform_int_distribution<std::int64_t> step(-10, 10);
            for (auto& q : quotes_) {
                const std::int64_t p = q.load(std::memory_order_relaxed);
                q.store(std::max<std::int64_t>(100, p + p * step(rng_) / 10'000),
                        std::memory_order_relaxed);
            }
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
    std::vector<std::atomic<std::int64_t>> quotes_;
    std::unordered_map<std::uint64_t, std::size_t> index_;  // const after construction
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
    for (const auto& l : universe) out.emplace_back(l.ticker);
    return out;
}

}  // namespace broker::exchange
