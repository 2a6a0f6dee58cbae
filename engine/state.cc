#include "engine/state.h"

#include <algorithm>
#include <unordered_set>

#include <fmt/format.h>

#include "engine/assert.h"

namespace broker {

const position* customer::find_position(symbol s) const {
    auto it = std::lower_bound(positions.begin(), positions.end(), s,
                               [](const position& p, symbol v) { return p.sym < v; });
    return it != positions.end() && it->sym == s ? &*it : nullptr;
}

position& customer::position_for(symbol s) {
    auto it = std::lower_bound(positions.begin(), positions.end(), s,
                               [](const position& p, symbol v) { return p.sym < v; });
    if (it == positions.end() || it->sym != s) it = positions.insert(it, position{s, 0, 0});
    return *it;
}

const client_order* customer::find_client_order(std::string_view client_order_id) const {
    for (const auto& c : client_orders) {
        if (c.client_order_id == client_order_id) return &c;
    }
    return nullptr;
}

const customer* state::find_customer(std::string_view id) const {
    auto it = customers.find(std::string(id));
    return it == customers.end() ? nullptr : &it->second;
}

const trade* state::find_open_trade(trade_id id) const {
    auto it = open_trades.find(id.value);
    return it == open_trades.end() ? nullptr : &it->second;
}

namespace {

customer& customer_of(state& s, const std::string& id) {
    auto it = s.customers.find(id);
    BROKER_ASSERT(it != s.customers.end());
    return it->second;
}

// The invariants that one event can break, checked on the customer it touched. Cheap enough to
// run on every apply, so a violation stops the process before anything else sees it.
void assert_customer_sound(const customer& c) {
    BROKER_ASSERT(c.cash.ticks >= 0);
    BROKER_ASSERT(c.reserved_cash.ticks >= 0);
    BROKER_ASSERT(c.reserved_cash <= c.cash);
    for (const auto& p : c.positions) {
        BROKER_ASSERT(p.shares >= 0);
        BROKER_ASSERT(p.reserved >= 0);
        BROKER_ASSERT(p.reserved <= p.shares);
    }
}

trade_change changed(const trade& t, customer& c) {
    ++c.update_sequence;
    return trade_change{t, c.update_sequence};
}

// Remembers a new trade's client order id, and forgets those closed longer ago than the memory
// window (by event time, so replay forgets exactly what the live node forgot).
void remember_client_order(customer& c, const std::string& client_order_id, trade_id id,
                           timestamp_ms at, bool closed) {
    std::erase_if(c.client_orders, [at](const client_order& o) {
        return o.closed_at != 0 && o.closed_at + limits::client_order_memory_ms < at;
    });
    if (client_order_id.empty()) return;
    BROKER_ASSERT(c.find_client_order(client_order_id) == nullptr);
    c.client_orders.push_back(client_order{client_order_id, id, closed ? at : 0});
}

// Removes a trade that reached a terminal status from the open set and its customer's FIFO.
trade_change close_trade(state& s, customer& c, trade&& t) {
    if (!t.client_order_id.empty()) {
        for (auto& o : c.client_orders) {
            if (o.id == t.id) o.closed_at = t.updated_at;
        }
    }
    auto pos = std::find(c.fifo.begin(), c.fifo.end(), t.id);
    BROKER_ASSERT(pos != c.fifo.end());
    c.fifo.erase(pos);
    trade_change out = changed(t, c);
    out.snapshot = std::move(t);
    s.open_trades.erase(out.snapshot.id.value);
    return out;
}

void release_reservation(customer& c, const trade& t) {
    if (t.trade_side == side::buy) {
        c.reserved_cash.ticks -= t.reserved_cash.ticks;
    } else {
        c.position_for(t.sym).reserved -= t.qty.shares;
    }
}

trade& open_trade(state& s, trade_id id) {
    auto it = s.open_trades.find(id.value);
    BROKER_ASSERT(it != s.open_trades.end());
    return it->second;
}

struct applier {
    state& s;
    timestamp_ms at;

    std::optional<trade_change> operator()(const customer_opened& e) {
        BROKER_ASSERT(!s.customers.contains(e.customer_id));
        customer c;
        c.id = e.customer_id;
        c.cash = e.cash;
        c.opening_cash = e.cash;
        c.opening_positions = e.positions;
        for (const auto& p : e.positions) c.position_for(p.sym).shares = p.qty.shares;
        assert_customer_sound(c);
        s.customers.emplace(e.customer_id, std::move(c));
        return std::nullopt;
    }

    std::optional<trade_change> operator()(const trade_placed& e) {
        BROKER_ASSERT(e.id.value == s.next_trade_id);
        customer& c = customer_of(s, e.customer_id);
        trade t;
        t.id = e.id;
        t.customer_id = e.customer_id;
        t.client_order_id = e.client_order_id;
        t.sym = e.sym;
        t.trade_side = e.trade_side;
        t.qty = e.qty;
        t.placed_qty = e.qty;
        t.status = trade_status::placed;
        t.created_at = at;
        t.updated_at = at;
        t.reference_price = e.reference_price;
        t.limit_price = e.limit_price;
        t.reserved_cash = e.reserved_cash;
        if (e.trade_side == side::buy) {
            c.reserved_cash.ticks += e.reserved_cash.ticks;
        } else {
            c.position_for(e.sym).reserved += e.qty.shares;
        }
        assert_customer_sound(c);
        c.fifo.push_back(e.id);
        remember_client_order(c, e.client_order_id, e.id, at, false);
        ++s.next_trade_id;
        ++s.trades_total;
        auto [it, inserted] = s.open_trades.emplace(e.id.value, std::move(t));
        BROKER_ASSERT(inserted);
        return changed(it->second, c);
    }

    std::optional<trade_change> operator()(const trade_refused& e) {
        BROKER_ASSERT(e.id.value == s.next_trade_id);
        customer& c = customer_of(s, e.customer_id);
        trade t;
        t.id = e.id;
        t.customer_id = e.customer_id;
        t.client_order_id = e.client_order_id;
        t.sym = e.sym;
        t.trade_side = e.trade_side;
        t.qty = e.qty;
        t.placed_qty = e.qty;
        t.status = trade_status::rejected;
        t.reason = e.reason;
        t.created_at = at;
        t.updated_at = at;
        t.reference_price = e.reference_price;
        remember_client_order(c, e.client_order_id, e.id, at, true);
        ++s.next_trade_id;
        ++s.trades_total;
        trade_change out = changed(t, c);
        out.snapshot = std::move(t);
        return out;
    }

    std::optional<trade_change> operator()(const trade_submitted& e) {
        trade& t = open_trade(s, e.id);
        customer& c = customer_of(s, t.customer_id);
        // Invariant 2: only the oldest open trade of a customer goes to the exchange.
        BROKER_ASSERT(t.status == trade_status::placed);
        BROKER_ASSERT(!c.fifo.empty() && c.fifo.front() == e.id);
        t.status = trade_status::in_progress;
        t.updated_at = at;
        return changed(t, c);
    }

    std::optional<trade_change> operator()(const trade_filled& e) {
        trade& t = open_trade(s, e.id);
        customer& c = customer_of(s, t.customer_id);
        BROKER_ASSERT(t.status == trade_status::in_progress);
        const auto notional = checked_mul(e.fill_price, t.qty);
        BROKER_ASSERT(notional.has_value());
        release_reservation(c, t);
        position& p = c.position_for(t.sym);
        if (t.trade_side == side::buy) {
            // The limit price bounds the fill, so the debit never exceeds the reservation.
            BROKER_ASSERT(*notional <= t.reserved_cash);
            c.cash.ticks -= notional->ticks;
            p.shares += t.qty.shares;
        } else {
            const auto cash = checked_add(c.cash, *notional);
            BROKER_ASSERT(cash.has_value());
            c.cash = *cash;
            p.shares -= t.qty.shares;
        }
        if (p.shares == 0 && p.reserved == 0) {
            c.positions.erase(std::find_if(c.positions.begin(), c.positions.end(),
                                           [&](const position& q) { return q.sym == t.sym; }));
        }
        assert_customer_sound(c);
        t.status = trade_status::filled;
        t.fill_price = e.fill_price;
        t.filled_at = e.executed_at;
        t.exec_id = e.exec_id;
        t.updated_at = at;
        return close_trade(s, c, std::move(t));
    }

    std::optional<trade_change> operator()(const trade_rejected& e) {
        trade& t = open_trade(s, e.id);
        customer& c = customer_of(s, t.customer_id);
        BROKER_ASSERT(t.status == trade_status::in_progress || t.status == trade_status::placed);
        release_reservation(c, t);
        drop_empty_position(c, t.sym);
        assert_customer_sound(c);
        t.status = trade_status::rejected;
        t.reason = e.reason;
        t.exec_id = e.exec_id;
        t.updated_at = at;
        return close_trade(s, c, std::move(t));
    }

    std::optional<trade_change> operator()(const trade_canceled& e) {
        trade& t = open_trade(s, e.id);
        customer& c = customer_of(s, t.customer_id);
        BROKER_ASSERT(t.status == trade_status::placed);
        release_reservation(c, t);
        drop_empty_position(c, t.sym);
        assert_customer_sound(c);
        t.status = trade_status::canceled;
        t.updated_at = at;
        return close_trade(s, c, std::move(t));
    }

    std::optional<trade_change> operator()(const trade_modified& e) {
        trade& t = open_trade(s, e.id);
        customer& c = customer_of(s, t.customer_id);
        BROKER_ASSERT(t.status == trade_status::placed);
        if (t.trade_side == side::buy) {
            c.reserved_cash.ticks += e.reserved_cash.ticks - t.reserved_cash.ticks;
        } else {
            c.position_for(t.sym).reserved += e.qty.shares - t.qty.shares;
        }
        assert_customer_sound(c);
        t.qty = e.qty;
        t.reference_price = e.reference_price;
        t.limit_price = e.limit_price;
        t.reserved_cash = e.reserved_cash;
        t.updated_at = at;
        return changed(t, c);
    }

    // A SELL reservation may have created an entry only to hold `reserved`; keep the vector to
    // positions that hold something.
    static void drop_empty_position(customer& c, symbol sym) {
        auto it = std::find_if(c.positions.begin(), c.positions.end(),
                               [&](const position& q) { return q.sym == sym; });
        if (it != c.positions.end() && it->shares == 0 && it->reserved == 0) c.positions.erase(it);
    }
};

}  // namespace

std::optional<trade_change> apply(state& s, const event& e) {
    BROKER_ASSERT(e.sequence == s.last_sequence + 1);
    auto out = std::visit(applier{s, e.at}, e.body);
    s.last_sequence = e.sequence;
    return out;
}

std::optional<std::string> check_invariants(const state& s) {
    std::size_t open_in_fifos = 0;
    for (const auto& [id, c] : s.customers) {
        if (id != c.id) return fmt::format("customer {} stored under key {}", c.id, id);
        if (c.cash.ticks < 0) return fmt::format("customer {} has negative cash", id);
        if (c.reserved_cash.ticks < 0 || c.reserved_cash > c.cash) {
            return fmt::format("customer {} reserves {} of {} cash", id,
                               format_money(c.reserved_cash), format_money(c.cash));
        }
        money reserved_by_trades;
        std::unordered_map<std::uint64_t, std::int64_t> shares_by_trades;
        std::size_t at_exchange = 0;
        for (std::size_t i = 0; i < c.fifo.size(); ++i) {
            const trade* t = s.find_open_trade(c.fifo[i]);
            if (t == nullptr) return fmt::format("customer {} queues a missing trade", id);
            if (t->customer_id != id) return fmt::format("trade in the wrong customer's FIFO");
            if (i > 0 && !(c.fifo[i - 1] < c.fifo[i])) {
                return fmt::format("customer {} FIFO is out of placement order", id);
            }
            if (t->status == trade_status::in_progress) {
                ++at_exchange;
                if (i != 0) return fmt::format("customer {}: a trade behind the head is sent", id);
            }
            if (!t->client_order_id.empty()) {
                const client_order* o = c.find_client_order(t->client_order_id);
                if (o == nullptr || o->id != t->id || o->closed_at != 0) {
                    return fmt::format("customer {} forgot the client order id of open trade {}",
                                       id, t->id.value);
                }
            }
            if (t->trade_side == side::buy) {
                reserved_by_trades.ticks += t->reserved_cash.ticks;
            } else {
                shares_by_trades[t->sym.packed] += t->qty.shares;
            }
        }
        open_in_fifos += c.fifo.size();
        if (at_exchange > 1) return fmt::format("customer {} has {} trades at the exchange", id, at_exchange);
        if (reserved_by_trades != c.reserved_cash) {
            return fmt::format("customer {} reserved cash {} but open trades hold {}", id,
                               format_money(c.reserved_cash), format_money(reserved_by_trades));
        }
        for (std::size_t i = 0; i < c.positions.size(); ++i) {
            const position& p = c.positions[i];
            if (i > 0 && !(c.positions[i - 1].sym < p.sym)) {
                return fmt::format("customer {} positions are not sorted", id);
            }
            if (p.shares < 0 || p.reserved < 0 || p.reserved > p.shares) {
                return fmt::format("customer {} position {} is {} with {} reserved", id,
                                   to_string(p.sym), p.shares, p.reserved);
            }
            const auto held = shares_by_trades.find(p.sym.packed);
            const std::int64_t expect = held == shares_by_trades.end() ? 0 : held->second;
            if (p.reserved != expect) {
                return fmt::format("customer {} reserves {} {} but open sells hold {}", id,
                                   p.reserved, to_string(p.sym), expect);
            }
            shares_by_trades.erase(p.sym.packed);
        }
        if (!shares_by_trades.empty()) return fmt::format("customer {} sells shares it lacks", id);
    }
    if (open_in_fifos != s.open_trades.size()) {
        return fmt::format("{} open trades but {} queued", s.open_trades.size(), open_in_fifos);
    }
    for (const auto& [id, t] : s.open_trades) {
        if (is_terminal(t.status)) return fmt::format("terminal trade {} kept open", id);
        if (id >= s.next_trade_id) return fmt::format("trade {} beyond the id counter", id);
    }
    return std::nullopt;
}

namespace {

void put_u64(std::string& out, std::uint64_t v) {
    for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
}
void put_i64(std::string& out, std::int64_t v) { put_u64(out, static_cast<std::uint64_t>(v)); }
void put_str(std::string& out, std::string_view v) {
    put_u64(out, v.size());
    out.append(v);
}

}  // namespace

void write_canonical(const state& s, std::string& out) {
    put_u64(out, s.last_sequence);
    put_u64(out, s.next_trade_id);
    put_u64(out, s.trades_total);
    std::vector<const customer*> customers;
    customers.reserve(s.customers.size());
    for (const auto& [id, c] : s.customers) customers.push_back(&c);
    std::sort(customers.begin(), customers.end(),
              [](const customer* a, const customer* b) { return a->id < b->id; });
    put_u64(out, customers.size());
    for (const customer* c : customers) {
        put_str(out, c->id);
        put_i64(out, c->cash.ticks);
        put_i64(out, c->reserved_cash.ticks);
        put_i64(out, c->opening_cash.ticks);
        put_u64(out, c->update_sequence);
        put_u64(out, c->positions.size());
        for (const auto& p : c->positions) {
            put_u64(out, p.sym.packed);
            put_i64(out, p.shares);
            put_i64(out, p.reserved);
        }
        put_u64(out, c->opening_positions.size());
        for (const auto& p : c->opening_positions) {
            put_u64(out, p.sym.packed);
            put_i64(out, p.qty.shares);
        }
        put_u64(out, c->fifo.size());
        for (const auto id : c->fifo) put_u64(out, id.value);
        std::vector<const client_order*> orders;
        for (const auto& o : c->client_orders) orders.push_back(&o);
        std::sort(orders.begin(), orders.end(), [](const client_order* a, const client_order* b) {
            return a->client_order_id < b->client_order_id;
        });
        put_u64(out, orders.size());
        for (const client_order* o : orders) {
            put_str(out, o->client_order_id);
            put_u64(out, o->id.value);
            put_i64(out, o->closed_at);
        }
    }
    std::vector<const trade*> trades;
    trades.reserve(s.open_trades.size());
    for (const auto& [id, t] : s.open_trades) trades.push_back(&t);
    std::sort(trades.begin(), trades.end(),
              [](const trade* a, const trade* b) { return a->id < b->id; });
    put_u64(out, trades.size());
    for (const trade* t : trades) {
        put_u64(out, t->id.value);
        put_str(out, t->customer_id);
        put_str(out, t->client_order_id);
        put_u64(out, t->sym.packed);
        out.push_back(static_cast<char>(t->trade_side));
        put_i64(out, t->qty.shares);
        put_i64(out, t->placed_qty.shares);
        out.push_back(static_cast<char>(t->status));
        put_u64(out, static_cast<std::uint16_t>(t->reason));
        put_i64(out, t->created_at);
        put_i64(out, t->updated_at);
        put_i64(out, t->reference_price.ticks);
        put_i64(out, t->limit_price.ticks);
        put_i64(out, t->reserved_cash.ticks);
    }
}

}  // namespace broker
