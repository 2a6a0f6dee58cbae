#include "tests/sim/auditor.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

namespace broker::sim {

void fail(const char* kind, std::string message) {
    throw check_failed{kind, std::move(message)};
}

auditor::auditor(const sim_exchange& exchange, counter_fn count)
    : exchange_(exchange), count_(std::move(count)) {}

void auditor::tail(const journal::store& store) {
    if (audited_ >= store.last_sequence()) return;
    auto read = store.read(audited_ + 1, 0, [&](const event& e) { audit(e); });
    if (!read) fail("durability", "reading the journal back: " + read.error().what);
    if (*read != audited_) fail("durability", "the journal read back ends early");
}

void auditor::check_settled() const {
    for (const auto& [id, v] : exchange_.orders()) {
        const trade_status s = trades_.at(id).status;
        if (s !=
            (v.status == venue_status::filled ? trade_status::filled : trade_status::rejected)) {
            fail("ledger", fmt::format("the exchange's verdict on {} was never settled ({})", id,
                                       to_string(s)));
        }
    }
}

auditor::model_trade& auditor::trade_of(std::uint64_t id, const char* event_name) {
    const auto it = trades_.find(id);
    if (it == trades_.end()) {
        fail("ledger",
             fmt::format("journal: {} for trade {} that was never placed", event_name, id));
    }
    return it->second;
}

void auditor::close(model_trade& t, std::uint64_t id, trade_status status) {
    t.status = status;
    auto& open = customers_[t.customer_id].open;
    open.erase(std::find(open.begin(), open.end(), id));
}

void auditor::new_trade(std::uint64_t id, const std::string& customer_id, const std::string& coid) {
    if (trades_.contains(id)) fail("ledger", fmt::format("journal: trade {} created twice", id));
    const auto it = customers_.find(customer_id);
    if (it == customers_.end())
        fail("ledger", "journal: a trade of unknown customer " + customer_id);
    if (!coid.empty() && !it->second.coids.insert(coid).second) {
        fail("idempotency",
             fmt::format("journal: {}'s client_order_id {} created a second trade {}", customer_id,
                         coid, id));
    }
}

void auditor::audit(const event& e) {
    if (e.sequence != audited_ + 1) fail("durability", "journal read out of order");
    audited_ = e.sequence;
    std::visit([&](const auto& body) { on(body); }, e.body);
}

void auditor::on(const customer_opened& e) {
    if (customers_.contains(e.customer_id))
        fail("ledger", "journal: " + e.customer_id + " opened twice");
    model_customer& m = customers_[e.customer_id];
    m.cash = e.cash.ticks;
    opening_cash_ += e.cash.ticks;
    for (const auto& p : e.positions) {
        m.shares[p.sym.packed] += p.qty.shares;
        opening_shares_[p.sym.packed] += p.qty.shares;
    }
}

void auditor::on(const trade_placed& e) {
    new_trade(e.id.value, e.customer_id, e.client_order_id);
    trades_[e.id.value] =
        model_trade{e.customer_id, e.sym, e.trade_side, e.qty.shares, trade_status::placed};
    customers_[e.customer_id].open.push_back(e.id.value);
    count_("trade.placed");
}

void auditor::on(const trade_refused& e) {
    new_trade(e.id.value, e.customer_id, e.client_order_id);
    trades_[e.id.value] =
        model_trade{e.customer_id, e.sym, e.trade_side, e.qty.shares, trade_status::rejected};
    count_("trade.refused." + std::string(to_string(e.reason)));
}

void auditor::on(const trade_submitted& e) {
    model_trade& t = trade_of(e.id.value, "trade_submitted");
    if (t.status != trade_status::placed)
        fail("ledger", fmt::format("journal: trade {} submitted twice", e.id.value));
    const auto& open = customers_[t.customer_id].open;
    if (open.front() != e.id.value) {
        fail("order", fmt::format("journal: {}'s trade {} sent while older trade {} is open",
                                  t.customer_id, e.id.value, open.front()));
    }
    t.status = trade_status::in_progress;
}

void auditor::on(const trade_modified& e) {
    model_trade& t = trade_of(e.id.value, "trade_modified");
    if (t.status != trade_status::placed)
        fail("ledger", fmt::format("journal: trade {} modified after it was sent", e.id.value));
    t.qty = e.qty.shares;
    count_("trade.modified");
}

void auditor::on(const trade_filled& e) {
    model_trade& t = trade_of(e.id.value, "trade_filled");
    if (t.status != trade_status::in_progress) {
        fail("ledger", fmt::format("journal: trade {} filled while {} (a fill applied twice?)",
                                   e.id.value, to_string(t.status)));
    }
    const venue_order* v = exchange_.find(e.id);
    if (v == nullptr || v->status != venue_status::filled) {
        fail("ledger", fmt::format("journal: trade {} settled as filled, but the exchange {}",
                                   e.id.value, v == nullptr ? "never saw it" : "rejected it"));
    }
    if (v->fill_price != e.fill_price || v->order.qty.shares != t.qty || v->exec_id != e.exec_id) {
        fail("ledger",
             fmt::format("journal: trade {} settled {} at {} ({}), the exchange filled {} at "
                         "{} ({})",
                         e.id.value, t.qty, format_money(e.fill_price), e.exec_id,
                         v->order.qty.shares, format_money(v->fill_price), v->exec_id));
    }
    model_customer& m = customers_[t.customer_id];
    const std::int64_t notional = e.fill_price.ticks * t.qty;
    const std::int64_t sign = t.trade_side == side::buy ? 1 : -1;
    m.cash -= sign * notional;
    m.shares[t.sym.packed] += sign * t.qty;
    close(t, e.id.value, trade_status::filled);
    count_("trade.filled");
}

void auditor::on(const trade_rejected& e) {
    model_trade& t = trade_of(e.id.value, "trade_rejected");
    if (e.reason == errc::expired) {
        if (t.status != trade_status::placed) {
            fail("ledger", fmt::format("journal: trade {} expired after it was sent", e.id.value));
        }
        count_("trade.expired");
    } else {
        const venue_order* v = exchange_.find(e.id);
        if (t.status != trade_status::in_progress || v == nullptr ||
            v->status != venue_status::rejected || v->reason != e.reason) {
            fail("ledger", fmt::format("journal: trade {} rejected ({}) but the exchange {}",
                                       e.id.value, to_string(e.reason),
                                       v == nullptr                        ? "never saw it"
                                       : v->status == venue_status::filled ? "filled it"
                                                                           : "says otherwise"));
        }
        count_("trade.rejected_by_exchange");
    }
    close(t, e.id.value, trade_status::rejected);
}

void auditor::on(const trade_canceled& e) {
    model_trade& t = trade_of(e.id.value, "trade_canceled");
    if (t.status != trade_status::placed)
        fail("ledger", fmt::format("journal: trade {} canceled after it was sent", e.id.value));
    close(t, e.id.value, trade_status::canceled);
    count_("trade.canceled");
}

void auditor::compare(const state& live) const {
    if (live.customers.size() != customers_.size()) {
        fail("ledger", fmt::format("{} customers live, {} in the journal", live.customers.size(),
                                   customers_.size()));
    }
    std::map<std::uint64_t, std::int64_t> shares_total;
    std::int64_t cash_total = 0;
    for (const auto& [id, m] : customers_) {
        const customer* c = live.find_customer(id);
        if (c == nullptr) fail("ledger", "customer " + id + " missing from the live state");
        if (c->cash.ticks != m.cash) {
            fail("ledger", fmt::format("{} has cash {}, opening cash and settled fills say {}", id,
                                       format_money(c->cash), format_money(money{m.cash})));
        }
        for (const auto& [sym, n] : m.shares) {
            const position* p = c->find_position(symbol{sym});
            if ((p == nullptr ? 0 : p->shares) != n) {
                fail("ledger",
                     fmt::format("{} holds {} {}, opening and settled fills say {}", id,
                                 p == nullptr ? 0 : p->shares, to_string(symbol{sym}), n));
            }
            shares_total[sym] += n;
        }
        for (const auto& p : c->positions) {
            if (!m.shares.contains(p.sym.packed) && p.shares != 0) {
                fail("ledger",
                     fmt::format("{} holds {} {} it never bought", id, p.shares, to_string(p.sym)));
            }
        }
        cash_total += m.cash;
    }
    // Customers + exchange == opening, once the exchange's unsettled fills are put back.
    std::int64_t unsettled_cash = 0;
    for (const auto& [id, v] : exchange_.orders()) {
        const auto it = trades_.find(id);
        if (it == trades_.end()) {
            fail("durability",
                 fmt::format("the exchange has order {}, which the journal does not", id));
        }
        if (v.status == venue_status::working) continue;
        const trade_status s = it->second.status;
        const bool ok = s == trade_status::in_progress ||
                        (v.status == venue_status::filled ? s == trade_status::filled
                                                          : s == trade_status::rejected);
        if (!ok) {
            fail("ledger", fmt::format("the exchange {} trade {}, the broker closed it as {}",
                                       v.status == venue_status::filled ? "filled" : "rejected", id,
                                       to_string(s)));
        }
        if (v.status == venue_status::filled && s == trade_status::in_progress) {
            const std::int64_t sign = v.order.order_side == side::buy ? 1 : -1;
            shares_total[v.order.sym.packed] += sign * v.order.qty.shares;
            unsettled_cash -= sign * v.fill_price.ticks * v.order.qty.shares;
        }
    }
    for (const auto& [sym, net] : exchange_.net_shares()) shares_total[sym] += net;
    for (const auto& [sym, total] : shares_total) {
        const auto opening = opening_shares_.find(sym);
        if (total != (opening == opening_shares_.end() ? 0 : opening->second)) {
            fail("ledger", fmt::format("{}: customers + exchange hold {}, opening total {}",
                                       to_string(symbol{sym}), total,
                                       opening == opening_shares_.end() ? 0 : opening->second));
        }
    }
    if (cash_total + unsettled_cash + exchange_.net_cash_ticks() != opening_cash_) {
        fail("ledger", fmt::format("cash: customers + exchange hold {}, opening total {}",
                                   format_money(money{cash_total + unsettled_cash +
                                                      exchange_.net_cash_ticks()}),
                                   format_money(money{opening_cash_})));
    }
}

}  // namespace broker::sim
