#include "exchange/sim/callback_sender.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>

#include "exchange/signature.h"

namespace broker::exchange::sim {

namespace net = boost::asio;

struct callback_sender::delivery {
    delivery(net::io_context& io, std::uint64_t id, callback_target t, std::string b)
        : order_id(id), to(std::move(t)), body(std::move(b)), timer(io) {}
    std::uint64_t order_id;
    callback_target to;
    std::string body;
    std::int64_t backoff_ms = backoff_initial_ms;
    bool duplicate = false;   // deliver once more after the acknowledgement
    bool held = false;        // waiting in held_ (reorder)
    bool first_done = false;  // its first attempt has completed
    net::steady_timer timer;  // delay, reorder hold, backoff: one at a time
};

callback_sender::callback_sender(net::io_context& io, http_client& client, std::string secret,
                                 callback_faults faults, std::uint64_t seed,
                                 std::function<void(std::uint64_t)> acknowledged,
                                 std::function<std::int64_t()> now_s)
    : io_(io),
      client_(client),
      secret_(std::move(secret)),
      faults_(faults),
      rng_(seed),
      acknowledged_(std::move(acknowledged)),
      now_s_(std::move(now_s)) {}

callback_sender::~callback_sender() {
    stop();
}

bool callback_sender::draw(double rate) {
    return rate > 0 && std::bernoulli_distribution(rate)(rng_);
}

void callback_sender::owe(std::uint64_t order_id, callback_target to, std::string body) {
    if (stopped_ || owed_.contains(order_id)) return;
    auto d = std::make_shared<delivery>(io_, order_id, std::move(to), std::move(body));
    d->duplicate = draw(faults_.duplicate_rate);
    owed_.emplace(order_id, d);
    if (draw(faults_.delay_rate)) {
        d->timer.expires_after(std::chrono::milliseconds(faults_.delay_ms));
        d->timer.async_wait([this, d](const boost::system::error_code& ec) {
            if (!ec && !stopped_) first_attempt(d);
        });
        return;
    }
    first_attempt(d);
}

void callback_sender::first_attempt(const std::shared_ptr<delivery>& d) {
    if (draw(faults_.reorder_rate)) {
        d->held = true;
        held_.push_back(d);
        // Released by the next callback; if none comes, by this timer, so nothing waits forever.
        d->timer.expires_after(std::chrono::milliseconds(reorder_hold_max_ms));
        d->timer.async_wait([this, d](const boost::system::error_code& ec) {
            if (ec || stopped_ || !d->held) return;
            d->held = false;
            std::erase(held_, d);
            attempt(d);
        });
        return;
    }
    attempt(d);
}

void callback_sender::attempt(const std::shared_ptr<delivery>& d) {
    if (stopped_) return;
    if (draw(faults_.drop_rate)) {
        ++stats_.dropped;
        net::post(io_, [this, d] { on_result(d, 0); });
        return;
    }
    ++stats_.attempts;
    client_.post(d->to, d->body, sign_callback(secret_, now_s_(), d->body),
                 [this, d](unsigned status) { on_result(d, status); });
}

void callback_sender::release_held() {
    auto held = std::move(held_);
    held_.clear();
    for (auto& h : held) {
        h->held = false;
        h->timer.cancel();
        attempt(h);
    }
}

void callback_sender::on_result(const std::shared_ptr<delivery>& d, unsigned status) {
    if (stopped_) return;
    if (!d->first_done) {
        d->first_done = true;
        // This callback has been tried; whatever was held back for it may now follow.
        if (!held_.empty()) release_held();
    }
    if (status >= 200 && status < 300) {
        ++stats_.acknowledged;
        owed_.erase(d->order_id);
        acknowledged_(d->order_id);
        if (d->duplicate) {
            ++stats_.duplicates;
            client_.post(d->to, d->body, sign_callback(secret_, now_s_(), d->body),
                         [](unsigned) {});
        }
        return;
    }
    ++stats_.failures;
    spdlog::debug("callback for {:016x} failed (status {}), retrying in ~{} ms", d->order_id,
                  status, d->backoff_ms);
    // Equal jitter: at least half the backoff, so retries spread out but still back off.
    const std::int64_t wait =
        d->backoff_ms / 2 + std::uniform_int_distribution<std::int64_t>(0, d->backoff_ms / 2)(rng_);
    d->backoff_ms = std::min(backoff_max_ms, d->backoff_ms * 2);
    d->timer.expires_after(std::chrono::milliseconds(wait));
    d->timer.async_wait([this, d](const boost::system::error_code& ec) {
        if (!ec) attempt(d);
    });
}

void callback_sender::stop() {
    if (stopped_) return;
    stopped_ = true;
    for (auto& [id, d] : owed_) d->timer.cancel();
    held_.clear();
}

}  // namespace broker::exchange::sim
