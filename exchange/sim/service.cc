#include "exchange/sim/service.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <queue>
#include <random>
#include <unordered_map>
#include <utility>

#include "engine/assert.h"
#include "exchange/market.h"
#include "exchange/sim/log_writer.h"

namespace broker::exchange::sim {

namespace net = boost::asio;
namespace http = boost::beast::http;
using steady = std::chrono::steady_clock;

namespace {

// Executions handled per timer tick, so that a backlog (after a long restart) cannot starve the
// HTTP sessions sharing the io thread.
constexpr std::size_t execute_batch_max = 1024;

timestamp_ms wall_now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

http_reply json_reply(unsigned status, std::string body) {
    return {status, std::move(body), {}};
}

http_reply error_reply(unsigned status, std::string_view code, std::string_view message) {
    return {status, error_json(code, message), {}};
}

// Different streams for different purposes, so that e.g. adding a callback fault does not change
// which orders the reject knob hits.
constexpr std::uint64_t venue_stream = 0x9e3779b97f4a7c15ULL;
constexpr std::uint64_t callback_stream = 0xbf58476d1ce4e5b9ULL;

}  // namespace

struct service::impl {
    struct waiter {
        unsigned status;  // 202 for a POST, 200 for a GET
        http_responder respond;
    };
    struct pending_accept {
        order_accepted record;
        std::vector<waiter> waiters;
    };
    using due = std::pair<timestamp_ms, std::uint64_t>;

    impl(net::io_context& io, sim_config c, std::unique_ptr<order_log> log)
        : io_(io),
          config_(std::move(c)),
          walk_rng_(config_.seed),
          venue_rng_(config_.seed ^ venue_stream),
          venue_(config_.venue),
          writer_(std::move(log), io),
          client_(io, config_.client),
          sender_(
              io, client_, config_.secret, config_.faults, config_.seed ^ callback_stream,
              [this](std::uint64_t id) { on_acknowledged(id); },
              [] { return wall_now_ms() / 1000; }),
          server_(
              io,
              [this](const http_request& r, http_responder respond) {
                  handle(r, std::move(respond));
              },
              config_.server) {}

    // --- start and stop ---------------------------------------------------------------------

    void resume_work() {
        for (const order_entry* e : venue_.unexecuted()) {
            schedule_execution(e->accepted.order_id, e->accepted.execute_at);
        }
        for (const order_entry* e : venue_.unacknowledged()) owe_callback(*e);
        schedule_quotes();
        update_outage();
    }

    void stop() {
        if (stopped_) return;
        stopped_ = true;
        server_.stop();
        sender_.stop();
        client_.stop();
        quote_timer_.cancel();
        exec_timer_.cancel();
        outage_timer_.cancel();
        writer_.stop();
    }

    // --- routes -----------------------------------------------------------------------------

    void handle(const http_request& r, http_responder respond) {
        if (stopped_) return;  // dropping the responder closes the connection
        if (down_ && config_.mode == outage_mode::unavailable) {
            return respond(
                error_reply(503, "unavailable", "the exchange is down (simulated outage)"));
        }
        std::string_view path = r.target.substr(0, r.target.find('?'));
        const auto only = [&](http::verb v, std::string_view allow) {
            if (r.method == v) return true;
            respond(http_reply{405, error_json("method_not_allowed", "method not allowed"),
                               std::string(allow)});
            return false;
        };
        if (path == "/healthz") {
            if (only(http::verb::get, "GET")) respond(json_reply(200, R"({"status":"ok"})"));
            return;
        }
        if (path == "/v1/orders") {
            if (only(http::verb::post, "POST")) post_order(r.body, std::move(respond));
            return;
        }
        if (path.starts_with("/v1/orders/")) {
            if (only(http::verb::get, "GET")) get_order(path.substr(11), std::move(respond));
            return;
        }
        if (path == "/v1/quotes") {
            if (only(http::verb::get, "GET")) respond(json_reply(200, all_quotes_json()));
            return;
        }
        if (path.starts_with("/v1/quotes/")) {
            if (only(http::verb::get, "GET")) get_quote(path.substr(11), std::move(respond));
            return;
        }
        respond(error_reply(404, "not_found", "no such route"));
    }

    void post_order(std::string_view body, http_responder respond) {
        auto parsed = parse_new_order(body);
        if (!parsed) {
            return respond(
                error_reply(parsed.error().status, parsed.error().code, parsed.error().message));
        }
        const new_order& o = *parsed;
        const auto conflict = [&] {
            respond(
                error_reply(422, "order_id_conflict",
                            "this order_id names an order with another symbol, side or quantity"));
        };
        if (const order_entry* e = venue_.find(o.order_id)) {
            if (!venue::same_order(o, e->accepted)) return conflict();
            return respond(json_reply(202, state_json(*e)));  // idempotent re-post
        }
        if (const auto it = pending_.find(o.order_id); it != pending_.end()) {
            if (!venue::same_order(o, it->second.record)) return conflict();
            it->second.waiters.push_back({202, std::move(respond)});
            return;
        }
        if (venue_.size() + pending_.size() >= orders_max) {
            return respond(
                error_reply(503, "capacity_exhausted", "the simulator holds too many orders"));
        }
        order_accepted rec = venue_.accept(o, wall_now_ms(), venue_rng_);
        const std::uint64_t id = o.order_id;
        writer_.append(rec, [this, id] { on_accept_durable(id); });
        pending_.emplace(id, pending_accept{std::move(rec), {{202, std::move(respond)}}});
    }

    void on_accept_durable(std::uint64_t id) {
        if (stopped_) return;
        auto node = pending_.extract(id);
        BROKER_ASSERT(!node.empty());
        const auto applied = venue_.apply(node.mapped().record);
        BROKER_ASSERT(applied.has_value());
        const order_entry* e = venue_.find(id);
        const std::string json = state_json(*e);
        for (auto& w : node.mapped().waiters) w.respond(json_reply(w.status, json));
        schedule_execution(id, e->accepted.execute_at);
    }

    void get_order(std::string_view id_text, http_responder respond) {
        const auto id = parse_trade_id(id_text);
        if (!id)
            return respond(
                error_reply(400, "invalid_order_id", "order ids are 16 lowercase hex digits"));
        if (const order_entry* e = venue_.find(id->value)) {
            return respond(json_reply(200, state_json(*e)));
        }
        // Accepted but not yet durable: answer once it is, as the POST will be.
        if (const auto it = pending_.find(id->value); it != pending_.end()) {
            it->second.waiters.push_back({200, std::move(respond)});
            return;
        }
        respond(error_reply(404, "order_not_found", "no order with this id"));
    }

    void get_quote(std::string_view text, http_responder respond) {
        const auto sym = parse_symbol(text);
        const auto price = sym ? market_.quote(*sym) : std::nullopt;
        if (!price) return respond(error_reply(404, "unknown_symbol", "the symbol is not listed"));
        respond(json_reply(200, quote_json(text, *price, last_quote_ms_)));
    }

    std::string all_quotes_json() const {
        std::string out = R"({"quotes":[)";
        for (std::size_t i = 0; i < market_.size(); ++i) {
            if (i > 0) out += ',';
            out += quote_json(market_.ticker_at(i), market_.price_at(i), last_quote_ms_);
        }
        out += "]}";
        return out;
    }

    static std::string state_json(const order_entry& e) {
        return order_json(e.accepted, e.execution ? &*e.execution : nullptr);
    }

    // --- execution --------------------------------------------------------------------------

    void schedule_execution(std::uint64_t id, timestamp_ms at) {
        exec_queue_.push({at, id});
        arm_exec_timer();
    }

    void arm_exec_timer() {
        if (stopped_ || exec_queue_.empty() || executing_ >= execute_inflight_max) return;
        const timestamp_ms first = exec_queue_.top().first;
        if (exec_armed_ && exec_armed_for_ <= first) return;  // already due no later
        exec_armed_ = true;
        exec_armed_for_ = first;
        exec_timer_.expires_after(
            std::chrono::milliseconds(std::max<timestamp_ms>(0, first - wall_now_ms())));
        exec_timer_.async_wait([this](const boost::system::error_code& ec) {
            if (ec) return;  // re-armed for an earlier order, or stopped
            exec_armed_ = false;
            run_due_executions();
        });
    }

    void run_due_executions() {
        if (stopped_) return;
        const timestamp_ms now = wall_now_ms();
        std::size_t batch = 0;
        while (!exec_queue_.empty() && exec_queue_.top().first <= now &&
               executing_ < execute_inflight_max && batch < execute_batch_max) {
            const std::uint64_t id = exec_queue_.top().second;
            exec_queue_.pop();
            const order_entry* e = venue_.find(id);
            if (e == nullptr || e->execution) continue;
            const auto sym = parse_symbol(e->accepted.symbol);
            const auto quote = sym ? market_.quote(*sym) : std::nullopt;
            order_executed rec = venue_.execute(e->accepted, quote, now, venue_rng_);
            ++executing_;
            ++batch;
            writer_.append(rec, [this, rec] { on_execution_durable(rec); });
        }
        if (batch == execute_batch_max) {
            // Yield to the sessions, then carry on with the backlog.
            net::post(io_, [this] { run_due_executions(); });
            return;
        }
        arm_exec_timer();
    }

    void on_execution_durable(const order_executed& rec) {
        if (stopped_) return;
        --executing_;
        const auto applied = venue_.apply(rec);
        BROKER_ASSERT(applied.has_value());
        owe_callback(*venue_.find(rec.order_id));
        arm_exec_timer();
    }

    void owe_callback(const order_entry& e) {
        BROKER_ASSERT(e.execution.has_value());
        auto target = parse_callback_url(e.accepted.callback_url);
        BROKER_ASSERT(target.has_value());  // checked before it was logged, and on recovery
        sender_.owe(e.accepted.order_id, std::move(*target),
                    callback_json(e.accepted, *e.execution));
    }

    void on_acknowledged(std::uint64_t id) {
        if (stopped_) return;
        writer_.append(callback_acked{id}, [this, id] {
            if (stopped_) return;
            const auto applied = venue_.apply(callback_acked{id});
            BROKER_ASSERT(applied.has_value());
        });
    }

    // --- quotes and outages -----------------------------------------------------------------

    void schedule_quotes() {
        quote_timer_.expires_after(std::chrono::milliseconds(config_.quote_interval_ms));
        quote_timer_.async_wait([this](const boost::system::error_code& ec) {
            if (ec || stopped_) return;
            market_.step(walk_rng_);
            last_quote_ms_ = wall_now_ms();
            schedule_quotes();
        });
    }

    void update_outage() {
        if (stopped_) return;
        const std::int64_t elapsed =
            std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started_).count();
        const bool down = down_at(config_.outages, elapsed);
        if (down != down_) {
            down_ = down;
            spdlog::warn("simulated outage {} ({} mode)", down ? "begins" : "ends",
                         config_.mode == outage_mode::refuse ? "refuse" : "503");
            if (config_.mode == outage_mode::refuse && down) server_.pause();
        }
        if (config_.mode == outage_mode::refuse && !down_) {
            if (const auto err = server_.resume()) {
                // The port may linger briefly; try again soon rather than stay down.
                spdlog::warn("cannot listen again after the outage: {}; retrying", *err);
                outage_timer_.expires_after(std::chrono::milliseconds(100));
                outage_timer_.async_wait([this](const boost::system::error_code& ec) {
                    if (!ec) update_outage();
                });
                return;
            }
        }
        const auto next = next_change(config_.outages, elapsed);
        if (!next) return;
        outage_timer_.expires_at(started_ + std::chrono::milliseconds(*next));
        outage_timer_.async_wait([this](const boost::system::error_code& ec) {
            if (!ec) update_outage();
        });
    }

    net::io_context& io_;
    sim_config config_;
    steady::time_point started_ = steady::now();
    std::mt19937_64 walk_rng_;
    std::mt19937_64 venue_rng_;
    market market_;
    timestamp_ms last_quote_ms_ = wall_now_ms();
    venue venue_;
    log_writer writer_;
    http_client client_;
    callback_sender sender_;
    http_server server_;
    std::unordered_map<std::uint64_t, pending_accept> pending_;
    std::priority_queue<due, std::vector<due>, std::greater<>> exec_queue_;
    net::steady_timer exec_timer_{io_};
    bool exec_armed_ = false;
    timestamp_ms exec_armed_for_ = 0;
    std::size_t executing_ = 0;
    net::steady_timer quote_timer_{io_};
    net::steady_timer outage_timer_{io_};
    bool down_ = false;
    bool stopped_ = false;
    recovery_summary recovered_;
};

result<std::unique_ptr<service>, std::string> service::start(net::io_context& io,
                                                             sim_config config) {
    auto opened = order_log::open(config.data_dir);
    if (!opened) return unexpected{fmt::format("order log: {}", opened.error().what)};
    auto p = std::make_unique<impl>(io, std::move(config), std::move(opened->log));
    for (std::size_t i = 0; i < opened->records.size(); ++i) {
        if (auto ok = p->venue_.apply(opened->records[i]); !ok) {
            p->stop();
            return unexpected{
                fmt::format("order log is inconsistent at record {}: {}", i, ok.error())};
        }
    }
    p->recovered_ = {p->venue_.size(), p->venue_.unexecuted().size(),
                     p->venue_.unacknowledged().size(), opened->truncated_bytes};
    if (const auto err = p->server_.listen(p->config_.listen)) {
        p->stop();
        return unexpected{fmt::format("cannot listen on {}:{}: {}",
                                      p->config_.listen.address().to_string(),
                                      p->config_.listen.port(), *err)};
    }
    p->resume_work();
    return std::unique_ptr<service>(new service(std::move(p)));
}

service::service(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

service::~service() {
    if (impl_) impl_->stop();
}

boost::asio::ip::tcp::endpoint service::local_endpoint() const {
    return impl_->server_.local_endpoint();
}

const recovery_summary& service::recovered() const {
    return impl_->recovered_;
}

void service::stop() {
    impl_->stop();
}

}  // namespace broker::exchange::sim
