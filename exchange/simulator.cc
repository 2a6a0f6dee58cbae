#include "exchange/simulator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <pthread.h>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "engine/time.h"
#include "exchange/market.h"

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
    simulator(const simulator_config& config, report_sink sink)
        : config_(config),
          sink_(std::move(sink)),
          rng_(config.seed),
          quote_timer_(io_),
          execute_timer_(io_) {
        schedule_quotes();
        thread_ = std::thread([this] {
            pthread_setname_np(pthread_self(), "exchange-sim");  // as top -H and perf show it
            io_.run();
        });
    }

    ~simulator() override { stop(); }

    void submit(const order& o) override { submit_all({o}); }

    // Orders wait in the inbox, stamped with the millisecond they arrived in, until this thread
    // next looks: it is woken only when its timer would look later than the millisecond after
    // the earliest these orders can be due. Under a steady flow it wakes once a millisecond,
    // not once per broker commit.
    void submit_all(const std::vector<order>& orders) override {
        if (orders.empty()) return;
        const std::int64_t arrived = tick_of(clock::now());
        bool wake = false;
        {
            std::lock_guard lock(inbox_mutex_);
            for (const auto& o : orders) inbox_.push_back(arrival{o, arrived});
            if (!next_look_ || *next_look_ > arrived + config_.latency_ms / 2 + 1) {
                wake = true;
                next_look_ = arrived;  // now: whoever submits before it looks need not wake it
            }
        }
        if (wake) net::post(io_, [this] { take_inbox(); });
    }

    // Orders the simulator still owes a report for are in `accepted_`, and their report will
    // come; orders whose report was settled lately are in `settled_`, and the broker has it;
    // anything else it never saw (it lives in memory: a restart forgets), so it executes it now.
    // Re-sending is idempotent either way.
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
        apply_execution x;
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

    using clock = std::chrono::steady_clock;

    static std::int64_t tick_of(clock::time_point t) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
    }

    struct arrival {
        order o;
        std::int64_t tick;  // the millisecond the order arrived in
    };

    // Accepts what arrived, executes what is due (an order executes on the first look at or
    // after its due millisecond), and sets the timer for the next due millisecond; with nothing
    // owed it stops looking until a submission wakes it.
    void take_inbox() {
        std::vector<arrival> arrived;
        {
            std::lock_guard lock(inbox_mutex_);
            arrived.swap(inbox_);
        }
        for (const auto& a : arrived) accept(a);
        const std::int64_t now = tick_of(clock::now());
        std::vector<handover> reports;
        while (!due_.empty() && due_.begin()->first <= now) {
            const std::vector<order> orders = std::move(due_.begin()->second);
            due_.erase(due_.begin());
            for (const auto& o : orders) reports.push_back(execute(o));
        }
        if (!reports.empty()) sink_(std::move(reports));
        std::optional<std::int64_t> next;
        if (!due_.empty()) next = std::max(now + 1, due_.begin()->first);
        {
            std::lock_guard lock(inbox_mutex_);
            if (!inbox_.empty()) {
                // Arrived meanwhile: look again at once (next_look_ still says "now").
                net::post(io_, [this] { take_inbox(); });
                return;
            }
            next_look_ = next;
        }
        if (next) arm(*next);
    }

    void accept(const arrival& a) {
        const order& o = a.o;
        // Idempotent by order id: a re-sent order is already owed its execution, or was
        // executed and settled (a reconcile that waited in the inbox while its report settled).
        {
            std::lock_guard lock(accepted_mutex_);
            if (settled_[o.id.value % settled_slots] == o.id.value) return;
            if (!accepted_.insert(o.id.value).second) return;
        }
        std::uniform_int_distribution<std::int64_t> jitter(0, config_.latency_ms);
        // Executions happen on whole-millisecond ticks: every order due in the same millisecond
        // executes in one wake-up of this thread, and its reports reach the broker together.
        const std::int64_t due = a.tick + config_.latency_ms / 2 + jitter(rng_);
        due_[due].push_back(o);
    }

    void arm(std::int64_t tick) {
        execute_timer_.expires_at(clock::time_point(std::chrono::milliseconds(tick)));
        execute_timer_.async_wait([this](const boost::system::error_code& ec) {
            if (ec) return;  // set again since, or stopping
            take_inbox();
        });
    }

    handover execute(const order& o) {
        const auto price = quote(o.sym);
        std::bernoulli_distribution rejected(config_.reject_rate);
        auto r = std::make_shared<report>();
        apply_execution& x = r->x;
        x.id = o.id;
        x.qty = o.qty;
        x.filled = false;
        if (!price) {
            x.reason = errc::exchange_rejected;  // the venue does not list it
        } else if (rejected(rng_)) {
            x.reason = errc::exchange_rejected;
        } else if (o.order_side == side::buy && *price > o.limit_price) {
            x.reason = errc::limit_not_marketable;
        } else {
            x.filled = true;
            x.fill_price = *price;
        }
        x.exec_id = "SIM-";
        x.exec_id += format_trade_id(o.id);
        x.exec_id += '-';
        x.exec_id += std::to_string(++exec_counter_);
        x.executed_at = unix_ms_now();
        return handover_of(r, std::bernoulli_distribution(config_.duplicate_rate)(rng_));
    }

    // Delivers until the broker takes it (at least once), then maybe once more (a duplicate).
    void deliver(std::shared_ptr<report> r, bool duplicate) {
        std::vector<handover> one;
        one.push_back(handover_of(std::move(r), duplicate));
        sink_(std::move(one));
    }

    handover handover_of(std::shared_ptr<report> r, bool duplicate) {
        ++r->attempts;
        apply_execution x = r->x;
        return handover{std::move(x), [this, r, duplicate](report_taken taken) {
            if (taken == report_taken::settled && !duplicate) {
                // The usual case, answered on the broker's thread without waking this one.
                std::lock_guard lock(accepted_mutex_);
                accepted_.erase(r->x.id.value);  // settled: owed nothing more
                settled_[r->x.id.value % settled_slots] = r->x.id.value;
                return;
            }
            net::post(io_, [this, r, duplicate, taken] { delivered(r, duplicate, taken); });
        }};
    }

    void delivered(std::shared_ptr<report> r, bool duplicate, report_taken taken) {
        if (stopped_) return;
        if (taken == report_taken::settled) {
            deliver(r, false);  // the duplicate (the settled, single case never comes here)
            return;
        }
        if (taken == report_taken::unknown) {
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
    report_sink sink_;
    std::mt19937_64 rng_;  // used on the simulator thread only
    net::io_context io_;
    net::executor_work_guard<net::io_context::executor_type> work_ = net::make_work_guard(io_);
    net::steady_timer quote_timer_;
    net::steady_timer execute_timer_;
    std::map<std::int64_t, std::vector<order>> due_;  // orders by execution tick (ms)
    std::mutex inbox_mutex_;
    std::vector<arrival> inbox_;  // submitted, not yet taken by this thread
    // The millisecond this thread next looks at the inbox by itself; none: it will not.
    std::optional<std::int64_t> next_look_;
    market market_;
    std::mutex accepted_mutex_;
    std::unordered_set<std::uint64_t> accepted_;  // orders owed a report
    // Orders settled lately, each in the slot of its id modulo the table's size (trade ids are
    // never 0). The broker asks about a trade only while it is in flight, so a request that
    // reaches this thread after the trade's report settled trails it by a look of this thread
    // and a round of the engine: far fewer than the 131,072 ids the table keeps (1 MiB).
    static constexpr std::uint64_t settled_slots = std::uint64_t{1} << 17;
    std::vector<std::uint64_t> settled_ = std::vector<std::uint64_t>(settled_slots, 0);
    std::uint64_t exec_counter_ = 0;
    std::atomic<bool> stopped_{false};
    std::thread thread_;
};

}  // namespace

std::unique_ptr<gateway> make_simulated_exchange(const simulator_config& config,
                                                 report_sink sink) {
    return std::make_unique<simulator>(config, std::move(sink));
}

std::vector<std::string> simulated_symbols() {
    std::vector<std::string> out;
    for (const auto& l : market_universe()) out.emplace_back(l.ticker);
    return out;
}

}  // namespace broker::exchange
