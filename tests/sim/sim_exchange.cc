#include "tests/sim/sim_exchange.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "tests/sim/sim_random.h"

namespace broker::sim {

sim_exchange::sim_exchange(std::vector<std::pair<symbol, money>> prices, exchange_knobs knobs,
                           log_fn log, counter_fn count)
    : knobs_(knobs), log_(std::move(log)), count_(std::move(count)) {
    for (const auto& [s, p] : prices) prices_[s.packed] = p;
}

std::optional<money> sim_exchange::quote(symbol s) const {
    const auto it = prices_.find(s.packed);
    if (it == prices_.end()) return std::nullopt;
    return it->second;
}

void sim_exchange::move_prices(std::mt19937_64& rng) {
    for (auto& [packed, price] : prices_) {
        std::int64_t bps = 0;
        if (chance(rng, 0.03)) {
            // A jump past the 5% collar now and then, so that some BUYs become unmarketable.
            bps = between(rng, 500, 1'200) * (chance(rng, 0.5) ? 1 : -1);
        } else if (chance(rng, 0.5)) {
            bps = between(rng, -100, 100);
        }
        const std::int64_t moved = price.ticks + price.ticks * bps / 10'000;
        price.ticks = std::clamp<std::int64_t>(moved, 100, limits::price_max_ticks);
    }
}

void sim_exchange::submit(const sim_order& o, timestamp_ms now, std::mt19937_64& rng) {
    if (in_outage(now)) {
        count_("fault.order_lost_in_outage");
        log_(fmt::format("exchange: outage, order {} lost", o.id.value));
        return;
    }
    if (const auto it = orders_.find(o.id.value); it != orders_.end()) {
        const sim_order& had = it->second.order;
        if (had.customer_id != o.customer_id || had.sym != o.sym ||
            had.order_side != o.order_side || had.qty != o.qty ||
            had.limit_price != o.limit_price) {
            violations_.push_back(fmt::format(
                "order id {} sent again with another body (customer {} qty {} -> customer {} "
                "qty {})",
                o.id.value, had.customer_id, had.qty.shares, o.customer_id, o.qty.shares));
        }
        count_("exchange.order_resent");
        log_(fmt::format("exchange: order {} again (idempotent)", o.id.value));
        return;
    }
    accept(o, now, rng);
}

void sim_exchange::reconcile(const sim_order& o, timestamp_ms now, std::mt19937_64& rng,
                             const report_sink& status_answer) {
    if (in_outage(now)) {
        count_("fault.status_query_lost_in_outage");
        log_(fmt::format("exchange: outage, status query for {} lost", o.id.value));
        return;
    }
    const auto it = orders_.find(o.id.value);
    if (it == orders_.end()) {
        count_("exchange.status_query_unknown_resent");
        log_(fmt::format("exchange: status query for unknown {}: taken as new", o.id.value));
        accept(o, now, rng);
        return;
    }
    if (it->second.status == venue_status::working) {
        count_("exchange.status_query_working");
        return;
    }
    count_("exchange.status_query_report");
    log_(fmt::format("exchange: status query for {} answers {}", o.id.value, it->second.exec_id));
    status_answer(report_of(it->second), [](errc) {});
}

void sim_exchange::accept(const sim_order& o, timestamp_ms now, std::mt19937_64& rng) {
    // Invariant 2 as the venue sees it: a customer's next order arrives only after the previous
    // one ended, and in placement order (trade ids grow with placement).
    auto& last = last_order_of_[o.customer_id];
    if (o.id.value <= last) {
        violations_.push_back(fmt::format("customer {}: order {} arrived after order {}",
                                          o.customer_id, o.id.value, last));
    }
    for (const auto& [id, v] : orders_) {
        if (v.order.customer_id == o.customer_id && v.status == venue_status::working) {
            violations_.push_back(fmt::format("customer {}: order {} arrived while {} is working",
                                              o.customer_id, o.id.value, id));
        }
    }
    last = std::max(last, o.id.value);
    venue_order v;
    v.order = o;
    const bool slow = chance(rng, knobs_.slow_rate);
    v.execute_at =
        now + (slow ? between(rng, 8'000, 30'000) : between(rng, 0, knobs_.exec_delay_max_ms));
    if (slow) count_("fault.slow_execution");
    count_("exchange.order_accepted");
    log_(fmt::format("exchange: accepted {} {} {} {} {} limit {}{}", o.id.value, o.customer_id,
                     to_string(o.order_side), o.qty.shares, to_string(o.sym),
                     format_money(o.limit_price), slow ? " (slow)" : ""));
    orders_.emplace(o.id.value, std::move(v));
}

void sim_exchange::execute(venue_order& v, timestamp_ms now, std::mt19937_64& rng) {
    const money price = prices_.at(v.order.sym.packed);
    v.executed_at = now;
    v.exec_id = fmt::format("E{}", next_exec_++);
    if (v.order.order_side == side::buy && price > v.order.limit_price) {
        v.status = venue_status::rejected;
        v.reason = errc::limit_not_marketable;
    } else if (chance(rng, knobs_.reject_rate)) {
        v.status = venue_status::rejected;
        v.reason = errc::exchange_rejected;
    } else {
        v.status = venue_status::filled;
        v.fill_price = price;
        const std::int64_t notional = price.ticks * v.order.qty.shares;  // both bounded by limits
        const std::int64_t sign = v.order.order_side == side::buy ? 1 : -1;
        net_shares_[v.order.sym.packed] -= sign * v.order.qty.shares;
        net_cash_ticks_ += sign * notional;
    }
    count_(v.status == venue_status::filled ? "exchange.filled" : "exchange.rejected");
    log_(fmt::format("exchange: {} {} {} at {}", v.order.id.value,
                     v.status == venue_status::filled ? "FILLED" : "REJECTED", v.exec_id,
                     v.status == venue_status::filled ? format_money(v.fill_price)
                                                      : std::string(to_string(v.reason))));
    const apply_execution r = report_of(v);
    queue_callback(r, now + between(rng, 0, knobs_.callback_delay_max_ms));
    if (chance(rng, knobs_.late_duplicate_rate)) {
        count_("fault.late_duplicate_report");
        queue_callback(r, now + between(rng, 5'000, 30'000));
    }
}

void sim_exchange::execute_due(timestamp_ms now, std::mt19937_64& rng) {
    for (auto& [id, v] : orders_) {
        if (v.status == venue_status::working && v.execute_at <= now) execute(v, now, rng);
    }
}

void sim_exchange::deliver_due(timestamp_ms now, std::mt19937_64& rng, const report_sink& send) {
    std::erase_if(outbox_, [](const callback& c) { return c.answered; });
    std::vector<std::uint64_t> due;
    for (const auto& c : outbox_) {
        if (c.due <= now) due.push_back(c.serial);
    }
    if (due.empty()) return;
    if (in_outage(now)) {
        count_("fault.callbacks_held_in_outage");
        return;
    }
    // Reports of different orders overtake each other.
    if (due.size() > 1) count_("fault.callbacks_reordered");
    shuffle(due, rng);
    for (const std::uint64_t serial : due) {
        auto it = std::find_if(outbox_.begin(), outbox_.end(),
                               [&](const callback& c) { return c.serial == serial; });
        it->due = now + knobs_.retry_ms;  // sent again unless answered by then
        const apply_execution report = it->report;
        auto answered = [this, serial](errc code) {
            if (code != errc::ok) return;  // not 2xx: deliver it again later
            for (auto& c : outbox_) {
                if (c.serial == serial) c.answered = true;
            }
        };
        log_(fmt::format("exchange: callback #{} for {} ({})", serial, report.id.value,
                         report.exec_id));
        send(report, answered);
        count_("exchange.callback_sent");
        if (chance(rng, knobs_.duplicate_rate)) {
            count_("fault.duplicate_report");
            log_(fmt::format("exchange: callback #{} for {} again", serial, report.id.value));
            send(report, answered);
        }
    }
}

bool sim_exchange::idle() const {
    return working() == 0 && unanswered_callbacks() == 0;
}

std::size_t sim_exchange::working() const {
    return static_cast<std::size_t>(
        std::count_if(orders_.begin(), orders_.end(),
                      [](const auto& kv) { return kv.second.status == venue_status::working; }));
}

std::size_t sim_exchange::unanswered_callbacks() const {
    return static_cast<std::size_t>(std::count_if(outbox_.begin(), outbox_.end(),
                                                  [](const callback& c) { return !c.answered; }));
}

const venue_order* sim_exchange::find(trade_id id) const {
    const auto it = orders_.find(id.value);
    return it == orders_.end() ? nullptr : &it->second;
}

apply_execution sim_exchange::report_of(const venue_order& v) const {
    apply_execution r;
    r.id = v.order.id;
    r.filled = v.status == venue_status::filled;
    r.qty = v.order.qty;
    r.fill_price = v.fill_price;
    r.reason = v.status == venue_status::rejected ? v.reason : errc::exchange_rejected;
    r.exec_id = v.exec_id;
    r.executed_at = v.executed_at;
    return r;
}

void sim_exchange::queue_callback(const apply_execution& r, timestamp_ms due) {
    outbox_.push_back(callback{next_serial_++, r, due, false});
}

}  // namespace broker::sim
