// An in-memory implementation of api::services for router tests and the fuzzer: each command is
// decided and applied at once on the calling thread, and closed trades, client order ids and
// updates are kept in maps instead of RocksDB.
#pragma once

#include <functional>
#include <map>
#include <unordered_map>
#include <utility>

#include "api/services.h"
#include "engine/decide.h"

namespace broker::testing {

inline constexpr std::int64_t now_ms = 1'800'000'000'000;

class memory_services final : public api::services {
public:
    state s;
    bool market_is_open = true;
    bool full = false;
    std::unordered_map<std::uint64_t, trade> closed;
    std::map<std::pair<std::string, std::string>, trade_id> client_orders;
    std::map<std::string, std::vector<api::trade_update>> updates;
    // Runs once at the next closed_trades read, before it (a trade closing in the meantime).
    std::function<void()> before_closed_trades;
    // Runs before every updates_since read (a store that fails in the middle of a catch-up).
    std::function<void()> before_updates_since;
    bool store_unreadable = false;  // every read of the store fails
    bool no_quotes_yet = false;     // the exchange has sent no quote yet

    bool submit(command c, api::completion done) override {
        if (full) return false;
        if (auto* m = std::get_if<modify_trade>(&c); m && !m->reference_price) {
            if (const trade* t = s.find_open_trade(m->id)) m->reference_price = quote(t->sym);
        }
        decision d = decide(s, c, now_ms);
        api::outcome o;
        o.code = d.code;
        o.repeated = d.repeated;
        for (auto& body : d.events) {
            auto change = apply(s, event{s.last_sequence + 1, now_ms, std::move(body)});
            if (!change) continue;
            const trade& t = change->snapshot;
            if (!o.trade_view) o.trade_view = t;
            if (is_terminal(t.status)) closed[t.id.value] = t;
            if (!t.client_order_id.empty()) client_orders[{t.customer_id, t.client_order_id}] = t.id;
            updates[t.customer_id].push_back(api::trade_update{change->update_sequence, t});
        }
        if (d.repeated && d.trade && !o.trade_view) {
            if (const trade* t = s.find_open_trade(*d.trade)) o.trade_view = *t;
            else o.trade_closed = true;
        }
        if (auto* g = std::get_if<get_trade>(&c); g && d.code == errc::ok) o.trade_view = *s.find_open_trade(g->id);
        std::string who;
        if (auto* a = std::get_if<get_account>(&c)) who = a->customer_id;
        if (auto* oc = std::get_if<open_customer>(&c)) who = oc->customer_id;
        if (!who.empty() && d.code == errc::ok) {
            const customer* cu = s.find_customer(who);
            o.account = api::account_view{cu->id, cu->cash, cu->reserved_cash, cu->positions};
        }
        o.trade_ref = d.trade;
        if (auto* l = std::get_if<list_open_trades>(&c); l && d.code == errc::ok) {
            for (const trade_id id : s.find_customer(l->customer_id)->fifo) {
                o.open_trades.push_back(*s.find_open_trade(id));
            }
        }
        if (std::holds_alternative<::broker::find_client_order>(c) && d.code == errc::ok) {
            if (const trade* t = s.find_open_trade(*d.trade)) o.trade_view = *t;
        }
        o.sequence = s.last_sequence;
        done(std::move(o));
        return true;
    }
    bool submit_digest(api::completion done) override {
        api::outcome o;
        o.sequence = s.last_sequence;
        o.digest = "test";
        done(std::move(o));
        return true;
    }
    api::lookup<trade> find_closed_trade(const std::string& customer_id, trade_id id) override {
        if (store_unreadable) return unexpected{api::store_unreadable{}};
        auto it = closed.find(id.value);
        if (it == closed.end() || it->second.customer_id != customer_id)
            return std::optional<trade>{};
        return std::optional<trade>{it->second};
    }
    std::optional<money> quote(symbol sym) override {
        if (no_quotes_yet) return std::nullopt;
        if (sym == *parse_symbol("AAPL")) return money{100 * limits::ticks_per_usd};
        if (sym == *parse_symbol("MSFT")) return money{400 * limits::ticks_per_usd};
        return std::nullopt;
    }
    bool has_quotes() override { return !no_quotes_yet; }
    bool market_open(timestamp_ms) override { return market_is_open; }
    std::int64_t collar_bps() const override { return 500; }
    timestamp_ms now() override { return now_ms; }
    std::optional<api::closed_page> closed_trades(const std::string& customer_id, trade_id before,
                                                  std::optional<symbol> sym, std::size_t limit,
                                                  std::size_t scan_max) override {
        if (before_closed_trades) std::exchange(before_closed_trades, nullptr)();
        if (store_unreadable) return std::nullopt;
        std::vector<trade> mine;
        for (const auto& [id, t] : closed) {
            if (t.customer_id != customer_id || (before.value != 0 && !(t.id < before))) continue;
            mine.push_back(t);
        }
        std::sort(mine.begin(), mine.end(),
                  [](const trade& a, const trade& b) { return b.id < a.id; });
        // As the store reads: newest first, at most scan_max of them.
        api::closed_page out;
        for (std::size_t read = 0; read < mine.size() && out.trades.size() < limit; ++read) {
            if (read == scan_max) {
                out.scanned_to = mine[read - 1].id;
                break;
            }
            if (!sym || mine[read].sym == *sym) out.trades.push_back(mine[read]);
        }
        return out;
    }
    api::lookup<trade_id> find_client_order(const std::string& customer_id,
                                            std::string_view client_order_id) override {
        if (store_unreadable) return unexpected{api::store_unreadable{}};
        auto it = client_orders.find({customer_id, std::string(client_order_id)});
        if (it == client_orders.end()) return std::optional<trade_id>{};
        return std::optional<trade_id>{it->second};
    }
    std::optional<std::vector<api::trade_update>> updates_since(const std::string& customer_id,
                                                                std::uint64_t after,
                                                                std::size_t limit) override {
        if (before_updates_since) before_updates_since();
        if (store_unreadable) return std::nullopt;
        std::vector<api::trade_update> out;
        for (const auto& u : updates[customer_id]) {
            if (u.sequence > after && out.size() < limit) out.push_back(u);
        }
        return out;
    }
    std::unique_ptr<api::subscription> subscribe(const std::string&, api::update_sink) override {
        return std::make_unique<api::subscription>();
    }
};

}  // namespace broker::testing
