#include "engine/decide.h"

#include <algorithm>

#include "engine/assert.h"

namespace broker {

namespace {

decision fail(errc code) { return decision{code, {}, std::nullopt, false}; }

// After `closing` leaves the customer's FIFO, the next trade (if any, and still PLACED) becomes
// the one at the exchange. Invariant 2 is kept here: one trade at a time, in placement order.
void submit_next(const state& s, const customer& c, trade_id closing, decision& d) {
    for (const trade_id next : c.fifo) {
        if (next == closing) continue;
        const trade* t = s.find_open_trade(next);
        BROKER_ASSERT(t != nullptr);
        if (t->status == trade_status::placed) d.events.push_back(trade_submitted{next});
        return;
    }
}

// Whether a BUY of `sym` keeps the customer within limits::positions_per_customer_max symbols
// once every open BUY has filled: a fill opens a position for a symbol not yet held.
bool can_hold_another(const state& s, const customer& c, symbol sym) {
    if (c.find_position(sym) != nullptr) return true;
    std::vector<symbol> opening{sym};
    for (const trade_id id : c.fifo) {
        const trade* t = s.find_open_trade(id);
        BROKER_ASSERT(t != nullptr);
        if (t->trade_side == side::buy && c.find_position(t->sym) == nullptr &&
            std::find(opening.begin(), opening.end(), t->sym) == opening.end()) {
            opening.push_back(t->sym);
        }
    }
    return c.positions.size() + opening.size() <= limits::positions_per_customer_max;
}

struct decider {
    const state& s;
    timestamp_ms now;

    decision operator()(const open_customer& c) const {
        if (!valid_customer_id(c.customer_id)) return fail(errc::invalid_customer_id);
        if (c.cash.ticks < 0 || c.cash.ticks > limits::opening_cash_max_ticks) {
            return fail(errc::invalid_amount);
        }
        if (c.positions.size() > limits::positions_per_customer_max) {
            return fail(errc::invalid_quantity);
        }
        auto positions = c.positions;
        std::sort(positions.begin(), positions.end(),
                  [](const position_amount& a, const position_amount& b) { return a.sym < b.sym; });
        for (std::size_t i = 0; i < positions.size(); ++i) {
            if (positions[i].qty.shares < 0 ||
                positions[i].qty.shares > limits::opening_position_max) {
                return fail(errc::invalid_quantity);
            }
            if (i > 0 && positions[i - 1].sym == positions[i].sym) return fail(errc::invalid_symbol);
        }
        // Zero positions carry no information; dropping them makes "same again" compare equal.
        std::erase_if(positions, [](const position_amount& p) { return p.qty.shares == 0; });
        if (const customer* existing = s.find_customer(c.customer_id)) {
            if (existing->opening_cash == c.cash && existing->opening_positions == positions) {
                return decision{errc::ok, {}, std::nullopt, true};
            }
            return fail(errc::customer_exists_different);
        }
        decision d;
        d.events.push_back(customer_opened{c.customer_id, c.cash, std::move(positions)});
        return d;
    }

    decision operator()(const place_trade& p) const {
        const customer* c = s.find_customer(p.customer_id);
        if (c == nullptr) return fail(errc::customer_not_found);
        if (p.qty.shares <= 0 || p.qty.shares > limits::quantity_max) {
            return fail(errc::invalid_quantity);
        }
        if (!p.client_order_id.empty()) {
            if (!valid_client_order_id(p.client_order_id)) return fail(errc::invalid_client_order_id);
            // Idempotency: a client_order_id already used names the trade it created; the caller
            // compares the request with that trade.
            if (const client_order* o = c->find_client_order(p.client_order_id)) {
                return decision{errc::ok, {}, o->id, true};
            }
            if (p.known_client_order) return decision{errc::ok, {}, *p.known_client_order, true};
            if (now - p.client_order_checked_at > limits::client_order_memory_ms / 2) {
                return fail(errc::stale_request);
            }
        }
        if (p.sym.packed == 0) return fail(errc::invalid_symbol);
        if (!p.reference_price) return fail(errc::unknown_symbol);
        const money price = *p.reference_price;
        if (price.ticks <= 0 || price.ticks > limits::price_max_ticks) {
            return fail(errc::invalid_price);
        }
        if (p.collar_bps < 0 || p.collar_bps > limits::collar_bps_max) {
            return fail(errc::invalid_price);
        }

        const trade_id id{s.next_trade_id};
        decision d;
        d.trade = id;
        auto refuse = [&](errc reason) {
            d.events.push_back(trade_refused{id, p.customer_id, p.client_order_id, p.sym,
                                             p.trade_side, p.qty, price, reason});
            return d;
        };

        money limit;
        money reserve;
        if (p.trade_side == side::buy) {
            const auto collared = apply_collar(price, p.collar_bps);
            const auto notional = collared ? checked_mul(*collared, p.qty) : std::nullopt;
            if (!notional || notional->ticks > limits::notional_max_ticks) {
                return fail(errc::notional_too_large);
            }
            limit = *collared;
            reserve = *notional;
        } else {
            const auto notional = checked_mul(price, p.qty);
            if (!notional || notional->ticks > limits::notional_max_ticks) {
                return fail(errc::notional_too_large);
            }
        }

        if (!p.market_open) return refuse(errc::market_closed);
        if (c->fifo.size() >= limits::open_trades_per_customer_max) {
            return refuse(errc::too_many_open_trades);
        }
        if (p.trade_side == side::buy) {
            if (reserve > c->buying_power()) return refuse(errc::insufficient_funds);
            if (!can_hold_another(s, *c, p.sym)) return refuse(errc::too_many_positions);
        } else {
            const position* held = c->find_position(p.sym);
            const std::int64_t available = held ? held->shares - held->reserved : 0;
            if (p.qty.shares > available) return refuse(errc::insufficient_shares);
        }

        d.events.push_back(trade_placed{id, p.customer_id, p.client_order_id, p.sym, p.trade_side,
                                        p.qty, price, limit, reserve});
        // Nothing ahead of it: this trade is the customer's one trade at the exchange.
        if (c->fifo.empty()) d.events.push_back(trade_submitted{id});
        return d;
    }

    decision operator()(const cancel_trade& c) const {
        const trade* t = s.find_open_trade(c.id);
        // Another customer's trade does not exist for this one.
        if (t != nullptr && t->customer_id != c.customer_id) return fail(errc::trade_not_found);
        if (t == nullptr) {
            // A closed trade cannot be canceled; the caller tells "closed" from "unknown" (and
            // checks ownership) by looking in the trade store.
            return fail(c.id.value > 0 && c.id.value < s.next_trade_id ? errc::trade_not_cancelable
                                                                        : errc::trade_not_found);
        }
        if (t->status != trade_status::placed) return decision{errc::trade_not_cancelable, {}, c.id, false};
        decision d;
        d.trade = c.id;
        d.events.push_back(trade_canceled{c.id});
        const customer* owner = s.find_customer(t->customer_id);
        BROKER_ASSERT(owner != nullptr);
        if (!owner->fifo.empty() && owner->fifo.front() == c.id) submit_next(s, *owner, c.id, d);
        return d;
    }

    decision operator()(const modify_trade& m) const {
        const trade* t = s.find_open_trade(m.id);
        if (t == nullptr || t->customer_id != m.customer_id) {
            return fail(t == nullptr && m.id.value > 0 && m.id.value < s.next_trade_id
                            ? errc::trade_not_modifiable
                            : errc::trade_not_found);
        }
        if (t->status != trade_status::placed) return decision{errc::trade_not_modifiable, {}, m.id, false};
        if (m.qty.shares <= 0 || m.qty.shares > limits::quantity_max) {
            return fail(errc::invalid_quantity);
        }
        // The quantity it already has: nothing to change, so no event, no update on the stream,
        // and the reservation stays as placed (a re-check at today's price is not a change the
        // customer asked for).
        if (m.qty.shares == t->qty.shares) return decision{errc::ok, {}, m.id, true};
        if (!m.reference_price) return fail(errc::unknown_symbol);
        const money price = *m.reference_price;
        if (price.ticks <= 0 || price.ticks > limits::price_max_ticks ||
            m.collar_bps < 0 || m.collar_bps > limits::collar_bps_max) {
            return fail(errc::invalid_price);
        }
        const customer* c = s.find_customer(m.customer_id);
        BROKER_ASSERT(c != nullptr);
        money limit;
        money reserve;
        if (t->trade_side == side::buy) {
            const auto collared = apply_collar(price, m.collar_bps);
            const auto notional = collared ? checked_mul(*collared, m.qty) : std::nullopt;
            if (!notional || notional->ticks > limits::notional_max_ticks) {
                return fail(errc::notional_too_large);
            }
            limit = *collared;
            reserve = *notional;
            // The trade's own reservation is released by the change, so it counts as available.
            if (reserve.ticks > c->buying_power().ticks + t->reserved_cash.ticks) {
                return fail(errc::insufficient_funds);
            }
        } else {
            const auto notional = checked_mul(price, m.qty);
            if (!notional || notional->ticks > limits::notional_max_ticks) {
                return fail(errc::notional_too_large);
            }
            const position* held = c->find_position(t->sym);
            BROKER_ASSERT(held != nullptr);
            if (m.qty.shares > held->shares - held->reserved + t->qty.shares) {
                return fail(errc::insufficient_shares);
            }
        }
        decision d;
        d.trade = m.id;
        d.events.push_back(trade_modified{m.id, m.qty, price, limit, reserve});
        return d;
    }

    decision operator()(const apply_execution& x) const {
        const trade* t = s.find_open_trade(x.id);
        if (t == nullptr) {
            // Invariant 4: a report for a trade that is already settled changes nothing, however
            // often the exchange repeats it.
            if (x.id.value > 0 && x.id.value < s.next_trade_id) {
                return decision{errc::ok, {}, x.id, true};
            }
            return fail(errc::trade_not_found);
        }
        if (t->status != trade_status::in_progress) return fail(errc::trade_not_in_progress);
        if (x.exec_id.size() > limits::exec_id_max) return fail(errc::fill_mismatch);
        decision d;
        d.trade = x.id;
        if (x.filled && !fill_keeps_terms(*t, x)) {
            // The exchange reports a fill the order did not allow. Applying it could take a
            // balance negative (invariant 1); refusing it would leave the trade IN_PROGRESS for
            // good (invariant 3), since the exchange repeats a report until it is acknowledged.
            // The trade ends REJECTED with reason fill_mismatch and its reservation released, and
            // the report is acknowledged: the broker's books and the exchange's now disagree on
            // this order, a break for operations to settle with the exchange (the node logs and
            // counts it), not one for the customer to carry.
            d.events.push_back(trade_rejected{x.id, errc::fill_mismatch, x.exec_id});
        } else if (x.filled) {
            d.events.push_back(trade_filled{x.id, x.fill_price, x.exec_id, x.executed_at});
        } else {
            d.events.push_back(trade_rejected{x.id, x.reason, x.exec_id});
        }
        const customer* c = s.find_customer(t->customer_id);
        BROKER_ASSERT(c != nullptr);
        submit_next(s, *c, x.id, d);
        return d;
    }

    // Whether a fill is one the order allowed: its whole quantity (there are no partial fills),
    // a valid price, for a BUY no more than its limit (what was reserved), and for a SELL
    // proceeds that fit in the customer's cash.
    bool fill_keeps_terms(const trade& t, const apply_execution& x) const {
        if (x.qty != t.qty) return false;
        if (x.fill_price.ticks <= 0 || x.fill_price.ticks > limits::price_max_ticks) return false;
        if (t.trade_side == side::buy) return !(x.fill_price > t.limit_price);
        const customer* c = s.find_customer(t.customer_id);
        const auto notional = checked_mul(x.fill_price, t.qty);
        return notional && checked_add(c->cash, *notional);
    }

    decision operator()(const get_trade& g) const {
        const trade* t = s.find_open_trade(g.id);
        if (t == nullptr || t->customer_id != g.customer_id) return fail(errc::trade_not_found);
        return decision{errc::ok, {}, g.id, false};
    }

    decision operator()(const expire_placed& x) const {
        decision d;
        for (const trade_id id : matching(trade_status::placed, x.max, [&](const trade& t) {
                 return t.created_at < x.created_before;
             })) {
            const trade* t = s.find_open_trade(id);
            const customer* c = s.find_customer(t->customer_id);
            // The head of a FIFO is sent as soon as it is placed, so an unsent trade always waits
            // behind another one and expiring it changes nothing at the exchange.
            if (c->fifo.front() == id) continue;
            d.events.push_back(trade_rejected{id, errc::expired, ""});
        }
        return d;
    }

    decision operator()(const find_stuck_trades& f) const {
        decision d;
        d.trades = matching(trade_status::in_progress, f.max, [&](const trade& t) {
            return t.updated_at < f.updated_before;
        });
        return d;
    }

    // Open trades in `status` that satisfy `pred`, oldest first, at most `max`. Sorting keeps
    // the result independent of hash-map order, so replays decide the same.
    template <class Pred>
    std::vector<trade_id> matching(trade_status status, std::size_t max, Pred pred) const {
        std::vector<trade_id> out;
        for (const auto& [id, t] : s.open_trades) {
            if (t.status == status && pred(t)) out.push_back(t.id);
        }
        std::sort(out.begin(), out.end());
        if (out.size() > max) out.resize(max);
        return out;
    }

    decision operator()(const list_open_trades& l) const {
        if (s.find_customer(l.customer_id) == nullptr) return fail(errc::customer_not_found);
        return decision{};
    }

    decision operator()(const find_client_order& f) const {
        const customer* c = s.find_customer(f.customer_id);
        const client_order* o = c != nullptr ? c->find_client_order(f.client_order_id) : nullptr;
        if (o == nullptr) return fail(errc::trade_not_found);
        return decision{errc::ok, {}, o->id, false};
    }

    decision operator()(const get_account& g) const {
        if (s.find_customer(g.customer_id) == nullptr) return fail(errc::customer_not_found);
        return decision{};
    }
};

}  // namespace

decision decide(const state& s, const command& c, timestamp_ms now) {
    return std::visit(decider{s, now}, c);
}

}  // namespace broker
