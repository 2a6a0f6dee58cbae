#include "exchange/sim/venue.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "engine/assert.h"

namespace broker::exchange::sim {

std::string exec_id_for(std::uint64_t order_id) {
    return fmt::format("XS-{:016x}", order_id);
}

venue::venue(venue_config config) : config_(std::move(config)) {
    BROKER_ASSERT(config_.reject_rate >= 0 && config_.reject_rate <= 1);
    BROKER_ASSERT(!config_.reject_reasons.empty());
    BROKER_ASSERT(config_.latency_ms >= 0 && config_.latency_ms <= latency_ms_max);
}

const order_entry* venue::find(std::uint64_t order_id) const {
    const auto it = orders_.find(order_id);
    return it == orders_.end() ? nullptr : &it->second;
}

bool venue::same_order(const new_order& o, const order_accepted& existing) {
    return o.symbol == existing.symbol && o.order_side == existing.order_side &&
           o.quantity == existing.quantity;
}

std::int64_t venue::draw_latency_ms(std::mt19937_64& rng) const {
    const std::int64_t n = config_.latency_ms;
    if (n == 0) return 0;
    switch (config_.latency) {
        case latency_dist::fixed:
            return n;
        case latency_dist::uniform:
            return std::uniform_int_distribution<std::int64_t>(0, 2 * n)(rng);
        case latency_dist::exponential: {
            const double x =
                std::exponential_distribution<double>(1.0 / static_cast<double>(n))(rng);
            return std::min(latency_cap_factor * n, static_cast<std::int64_t>(std::llround(x)));
        }
    }
    return n;
}

order_accepted venue::accept(const new_order& o, timestamp_ms now, std::mt19937_64& rng) const {
    order_accepted a;
    a.order_id = o.order_id;
    a.symbol = o.symbol;
    a.order_side = o.order_side;
    a.quantity = o.quantity;
    a.limit_price_ticks = o.limit_price_ticks;
    a.callback_url = o.callback_url;
    a.accepted_at = now;
    a.execute_at = now + draw_latency_ms(rng);
    return a;
}

order_executed venue::execute(const order_accepted& a, std::optional<money> quote, timestamp_ms now,
                              std::mt19937_64& rng) const {
    order_executed e;
    e.order_id = a.order_id;
    e.exec_id = exec_id_for(a.order_id);
    e.executed_at = now;
    const auto reject = [&e](std::string reason) {
        e.outcome = order_outcome::rejected;
        e.reason = std::move(reason);
        return e;
    };
    if (!quote) return reject("unknown_symbol");
    // Drawn for every listed order, so that the knob's share does not depend on the others.
    if (std::bernoulli_distribution(config_.reject_rate)(rng)) {
        std::uniform_int_distribution<std::size_t> pick(0, config_.reject_reasons.size() - 1);
        return reject(config_.reject_reasons[pick(rng)]);
    }
    if (a.limit_price_ticks > 0) {
        const bool marketable = a.order_side == side::buy ? quote->ticks <= a.limit_price_ticks
                                                          : quote->ticks >= a.limit_price_ticks;
        if (!marketable) return reject("limit_not_marketable");
    }
    e.outcome = order_outcome::filled;
    e.fill_price_ticks = quote->ticks;
    return e;
}

result<ok_t, std::string> venue::apply(const log_record& r) {
    if (const auto* a = std::get_if<order_accepted>(&r)) {
        if (orders_.size() >= orders_max)
            return unexpected{std::string("more orders than orders_max")};
        if (!parse_callback_url(a->callback_url)) {
            return unexpected{fmt::format("order {:016x}: bad callback_url", a->order_id)};
        }
        if (!orders_.emplace(a->order_id, order_entry{*a, std::nullopt, false}).second) {
            return unexpected{fmt::format("order {:016x} accepted twice", a->order_id)};
        }
        return ok_v;
    }
    if (const auto* e = std::get_if<order_executed>(&r)) {
        const auto it = orders_.find(e->order_id);
        if (it == orders_.end()) {
            return unexpected{fmt::format("execution of unknown order {:016x}", e->order_id)};
        }
        if (it->second.execution) {
            return unexpected{fmt::format("order {:016x} executed twice", e->order_id)};
        }
        it->second.execution = *e;
        return ok_v;
    }
    const auto& ack = std::get<callback_acked>(r);
    const auto it = orders_.find(ack.order_id);
    if (it == orders_.end() || !it->second.execution) {
        return unexpected{fmt::format("acknowledgement of unexecuted order {:016x}", ack.order_id)};
    }
    // A second acknowledgement is harmless: a delivery owed again after a restart may be acked
    // again before the first record was known to be durable.
    it->second.acknowledged = true;
    return ok_v;
}

std::vector<const order_entry*> venue::unexecuted() const {
    std::vector<const order_entry*> out;
    for (const auto& [id, entry] : orders_) {
        if (!entry.execution) out.push_back(&entry);
    }
    return out;
}

std::vector<const order_entry*> venue::unacknowledged() const {
    std::vector<const order_entry*> out;
    for (const auto& [id, entry] : orders_) {
        if (entry.execution && !entry.acknowledged) out.push_back(&entry);
    }
    // Oldest execution first, so that a restart re-delivers in roughly the original order.
    std::sort(out.begin(), out.end(), [](const order_entry* x, const order_entry* y) {
        return x->execution->executed_at < y->execution->executed_at;
    });
    return out;
}

}  // namespace broker::exchange::sim
