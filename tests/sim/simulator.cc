#include "tests/sim/simulator.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <memory>
#include <random>
#include <utility>

#include "journal/store.h"
#include "tests/sim/auditor.h"
#include "tests/sim/sim_exchange.h"
#include "tests/sim/sim_random.h"

namespace broker::sim {
namespace {

namespace fs = std::filesystem;

constexpr timestamp_ms start_time = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
// The node's maintenance (engine_runner::maintenance_loop): stuck trades are reconciled after
// watchdog_ms, unsent trades expire after placed_max_age_ms (shorter than the node's default so
// that runs of a few hundred steps see expiries).
constexpr std::int64_t watchdog_ms = 5'000;
constexpr std::int64_t maintenance_period_ms = 1'000;
constexpr std::int64_t placed_max_age_ms = 60'000;
constexpr std::size_t quiescence_steps_max = 600;
constexpr std::int64_t quiescence_step_ms = 500;
constexpr std::uint64_t salt_setup = 0x5e7u;
constexpr std::uint64_t salt_quiesce = 0x91e5ceu;

// How stormy a seed is; drawn per seed so that runs range from calm to hostile.
struct fault_knobs {
    double crash_before_append = 0;  // (a) batch decided and applied, lost before its append
    double crash_after_append = 0;   // (b) durable, nothing acknowledged
    double crash_mid_dispatch = 0;   //     durable, some replies and orders out, the rest lost
    double crash_idle = 0;           //     between steps
    double crash_mid_recovery = 0;   // (c) a restart that dies while recovering, then restarts
    double outage_start = 0;
    std::int64_t outage_max_ms = 0;
    double market_close = 0;
    double time_jump = 0;  // minutes pass: expiries, client-order memory, the watchdog
    double clock_back = 0;
    std::size_t batch_max = 1;
    std::size_t group_max = 1;  // engine batches per group commit
    std::int64_t actions_max = 3;
    exchange_knobs exchange;
};

fault_knobs draw_knobs(std::mt19937_64& rng) {
    // Per node cycle. A restart costs far more than a step (RocksDB's open preallocates a WAL of
    // some 17 MB, which tmpfs really allocates, and starts over a hundred short-lived threads to
    // load table files), so a seed sees a handful of restarts, not dozens.
    static constexpr double crash_rates[] = {0.0, 0.002, 0.006, 0.015};
    fault_knobs k;
    k.crash_before_append = crash_rates[below(rng, 4)];
    k.crash_after_append = crash_rates[below(rng, 4)];
    k.crash_mid_dispatch = crash_rates[below(rng, 4)];
    k.crash_idle = crash_rates[below(rng, 3)];
    k.crash_mid_recovery = static_cast<double>(below(rng, 3)) / 4;
    k.outage_start = chance(rng, 0.3) ? 0.0 : 0.02;
    k.outage_max_ms = between(rng, 2'000, 20'000);
    k.market_close = chance(rng, 0.5) ? 0.0 : 0.01;
    k.time_jump = chance(rng, 0.5) ? 0.0 : 0.01;
    k.clock_back = chance(rng, 0.7) ? 0.0 : 0.02;
    k.batch_max = static_cast<std::size_t>(between(rng, 1, 8));
    k.group_max = static_cast<std::size_t>(between(rng, 1, 3));
    k.actions_max = between(rng, 1, 4);
    k.exchange.reject_rate = static_cast<double>(below(rng, 4)) * 0.04;
    k.exchange.exec_delay_max_ms = between(rng, 0, 3'000);
    k.exchange.slow_rate = chance(rng, 0.5) ? 0.0 : 0.05;
    k.exchange.callback_delay_max_ms = between(rng, 0, 3'000);
    k.exchange.duplicate_rate = static_cast<double>(below(rng, 4)) * 0.1;
    k.exchange.late_duplicate_rate = static_cast<double>(below(rng, 3)) * 0.05;
    k.exchange.retry_ms = between(rng, 500, 4'000);
    return k;
}

struct listing {
    const char* ticker;
    std::int64_t price_ticks;
};
// Prices from $0.75 to $400, so that tick rounding of the collar matters for some.
constexpr listing listings[] = {
    {"AAPL", 1'500'000}, {"MSFT", 3'000'000}, {"BRK.B", 4'000'000}, {"SIRI", 7'500}};
constexpr const char* unlisted_ticker = "ZZZZ";

symbol sym_of(const char* ticker) {
    return *parse_symbol(ticker);
}

// A placement with a client_order_id, kept for retries.
struct client_request {
    std::string coid;
    symbol sym;
    side trade_side = side::buy;
    quantity qty;
};

// A simulated customer app: what it sent, and what the broker acknowledged.
struct sim_client {
    std::string id;
    std::vector<client_request> sent;                 // placements with a client_order_id
    std::map<std::string, std::uint64_t> coid_trade;  // acknowledged: client_order_id -> trade
    std::vector<std::uint64_t> known;                 // acknowledged trade ids, oldest first
    std::uint32_t next_coid = 1;
};

struct acked_trade {
    std::string customer_id;
    std::uint64_t id = 0;
};

class simulation {
  public:
    simulation(const sim_options& o, const std::function<void(const std::string&)>& on_line)
        : opt_(o),
          on_line_(on_line),
          exchange_(
              initial_prices(), exchange_knobs{},
              [this](std::string line) { log(std::move(line)); },
              [this](const std::string& name) { count(name); }),
          audit_(exchange_, [this](const std::string& name) { count(name); }) {
        std::mt19937_64 root(o.seed);
        setup_seed_ = root();
        step_seeds_.reserve(o.steps);
        for (std::size_t i = 0; i < o.steps; ++i) step_seeds_.push_back(root());
        result_.seed = o.seed;
        result_.steps = o.steps;
        result_.skip = o.skip;
    }

    ~simulation() {
        node_.reset();
        store_.reset();
        if (!dir_.empty()) {
            std::error_code ec;
            fs::remove_all(dir_, ec);
        }
    }

    simulation(const simulation&) = delete;
    simulation& operator=(const simulation&) = delete;

    sim_result run() {
        try {
            make_dir();
            setup();
            for (std::size_t i = 0; i < opt_.steps; ++i) {
                if (opt_.skip.contains(i)) continue;
                step(i);
            }
            quiesce();
            final_checks();
        } catch (const check_failed& f) {
            result_.failure = sim_failure{f.kind, f.message, step_};
            log(fmt::format("FAILED [{}] {}", f.kind, f.message));
        }
        return std::move(result_);
    }

  private:
    static std::vector<std::pair<symbol, money>> initial_prices() {
        std::vector<std::pair<symbol, money>> out;
        for (const auto& l : listings) out.emplace_back(sym_of(l.ticker), money{l.price_ticks});
        return out;
    }

    // --- history, counters, failures -------------------------------------------------------

    void log(std::string line) {
        std::string text = fmt::format("{}: {}", step_label(), line);
        if (on_line_) on_line_(text);
        result_.history.push_back(std::move(text));
    }

    [[nodiscard]] std::string step_label() const {
        if (step_ < 0) return "setup";
        if (static_cast<std::size_t>(step_) >= opt_.steps) {
            return fmt::format("q{}", static_cast<std::size_t>(step_) - opt_.steps);
        }
        return fmt::format("s{}", step_);
    }

    void count(const std::string& name, std::uint64_t n = 1) { result_.counters[name] += n; }

    // --- the process: store, node, crashes, restarts ---------------------------------------

    void make_dir() {
        const fs::path root = tmp_root(opt_);
        static std::uint64_t serial = 0;
        dir_ = root / fmt::format("broker-sim-{}-{}-{}", ::getpid(), opt_.seed, ++serial);
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }

    void open_store() {
        auto s = journal::store::open((dir_ / "db").string());
        if (!s) fail("durability", "opening the store: " + s.error().what);
        store_ = std::move(s.value());
    }

    void start_node(state recovered) {
        node_config cfg;
        cfg.broken = opt_.broken;
        node_ = std::make_unique<sim_node>(*store_, std::move(recovered), cfg,
                                           [this](symbol s) { return exchange_.quote(s); });
    }

    // The process dies: memory (state, queue, pending replies) is gone, the store's files stay.
    // Every append was a synced WriteBatch, so closing the store loses nothing a kill would
    // keep; a torn batch is not simulated (RocksDB's WAL recovery keeps batches atomic).
    void crash(const std::string& where, bool batch_lost, bool injected = true) {
        if (injected) count("crash." + where);
        log(fmt::format("CRASH {} ({} queued requests lost{})", where, node_->queued(),
                        batch_lost ? ", the decided batch lost" : ""));
        count("requests_lost_in_crashes", node_->queued());
        const std::string live_digest = journal::state_digest(node_->live());
        node_.reset();
        store_.reset();
        restart(live_digest, batch_lost);
    }

    void restart(const std::string& live_digest, bool batch_lost) {
        count("restarts");
        open_store();
        if (chance(rng_, knobs_.crash_mid_recovery)) {
            // (c) Dies while recovering. Recovery only reads, so the next start sees the same.
            auto first = journal::recover(*store_);
            if (!first) fail("durability", "recovery: " + first.error().what);
            count("crash.mid_recovery");
            log("CRASH mid_recovery; restarting again");
            store_.reset();
            open_store();
        }
        journal::recovery_report report;
        auto recovered = journal::recover(*store_, &report);
        if (!recovered) fail("durability", "recovery: " + recovered.error().what);
        // Nothing here damages snapshots: one refused is a bug in writing or checking them.
        if (!report.warnings.empty()) fail("durability", "recovery: " + report.warnings.front());
        if (report.snapshot_sequence > 0) count("restart.from_snapshot");
        // recover() starts from the newest snapshot; a full replay from record 1 must agree.
        auto replayed = journal::replay(*store_);
        if (!replayed) fail("durability", "full replay: " + replayed.error().what);
        const std::string digest = journal::state_digest(*recovered);
        if (digest != journal::state_digest(*replayed)) {
            fail("digest", "recovery from the snapshot and a full replay give different digests");
        }
        if (digest != durable_digest_) {
            fail("digest", fmt::format("recovered digest {} differs from the live digest at the "
                                       "last durable commit {}",
                                       digest, durable_digest_));
        }
        if (!batch_lost && digest != live_digest) {
            fail("digest", fmt::format("no batch was lost, but the recovered digest {} differs "
                                       "from the pre-crash live digest {}",
                                       digest, live_digest));
        }
        if (auto broken = check_invariants(*recovered)) fail("invariants", *broken);
        log(fmt::format("restart: recovered {} events, {} open trades, digest {}",
                        recovered->last_sequence, recovered->open_trades.size(),
                        digest.substr(0, 12)));
        start_node(std::move(recovered.value()));
        check_acked(0);
        check_store_indexes();
        // As engine_runner::start: trades that were at the exchange are reconciled first.
        std::vector<trade> in_progress;
        for (const auto& [id, t] : node_->live().open_trades) {
            if (t.status == trade_status::in_progress) in_progress.push_back(t);
        }
        std::sort(in_progress.begin(), in_progress.end(),
                  [](const trade& a, const trade& b) { return a.id < b.id; });
        for (const trade& t : in_progress) {
            count("restart.reconcile");
            exchange_.reconcile(order_for(t), now_, rng_, status_sink());
        }
    }

    // One round of the engine thread: a batch (with faults, up to group_max batches merged), one
    // group commit, then the orders and replies, with a crash possible between any two.
    void node_cycle(bool faults) {
        if (node_->queued() == 0) return;
        const std::size_t groups = faults
                                       ? static_cast<std::size_t>(between(
                                             rng_, 1, static_cast<std::int64_t>(knobs_.group_max)))
                                       : 1;
        std::vector<pending_batch> batches;
        for (std::size_t g = 0; g < groups && node_->queued() > 0; ++g) {
            const auto n = faults ? static_cast<std::size_t>(between(
                                        rng_, 1, static_cast<std::int64_t>(knobs_.batch_max)))
                                  : knobs_.batch_max;
            batches.push_back(node_->decide_batch(now_, n));
        }
        const journal::write_set all = sim_node::merge(batches);
        bool dispatched = false;
        if (opt_.broken == sabotage::ack_before_append) {
            dispatch(batches, SIZE_MAX);
            dispatched = true;
        }
        if (faults && chance(rng_, knobs_.crash_before_append)) {
            return crash("before_append", !all.events.empty());
        }
        if (auto written = node_->commit(all); !written) {
            fail("durability", "append failed: " + written.error().what);
        }
        if (auto stored = node_->store_snapshots(batches); !stored) {
            fail("durability", "storing a snapshot failed: " + stored.error().what);
        }
        if (!all.events.empty()) {
            log(fmt::format("node: committed events {}..{}", all.events.front().sequence,
                            all.events.back().sequence));
            durable_digest_ = journal::state_digest(node_->live());
            count("commits");
            count("events", all.events.size());
        }
        if (dispatched) return;
        if (faults && chance(rng_, knobs_.crash_after_append)) {
            return crash("after_append", false);
        }
        if (faults && chance(rng_, knobs_.crash_mid_dispatch)) {
            std::size_t outputs = 0;
            for (const auto& b : batches) outputs += b.replies.size() + b.orders.size();
            dispatch(batches, outputs == 0 ? 0 : below(rng_, outputs));
            return crash("mid_dispatch", false);
        }
        dispatch(batches, SIZE_MAX);
    }

    // Sends the orders, then answers the clients, at most `max` of them in all: the engine
    // thread submits every order of a commit and then hands all its replies to the IO threads at
    // once (engine_runner::finish), so a crash in between has sent orders but no answers.
    void dispatch(std::vector<pending_batch>& batches, std::size_t max) {
        std::size_t sent = 0;
        for (const auto& b : batches) {
            for (const sim_order& o : b.orders) {
                if (sent++ >= max) return;
                log(fmt::format("node: order {} to the exchange", o.id.value));
                exchange_.submit(o, now_, rng_);
            }
        }
        for (auto& b : batches) {
            for (auto& [done, out] : b.replies) {
                if (sent++ >= max) return;
                if (done) done(out);
            }
        }
    }

    // --- the exchange's side ---------------------------------------------------------------

    // Execution reports go in as apply_execution commands; the callback is answered only once
    // its command is durable, as the node's HTTP route answers.
    void deliver_report(const apply_execution& x, std::function<void(errc)> answered,
                        const char* path) {
        node_->submit(x, [this, answered = std::move(answered), id = x.id.value,
                          path](const reply& r) {
            if (r.code != errc::ok) {
                fail("ledger", fmt::format("the broker refused the exchange's {} report for trade "
                                           "{}: {}",
                                           path, id, to_string(r.code)));
            }
            count(r.repeated ? "report.duplicate_ignored" : "report.settled");
            answered(r.code);
        });
    }

    sim_exchange::report_sink status_sink() {
        return [this](const apply_execution& x, std::function<void(errc)> answered) {
            deliver_report(x, std::move(answered), "status");
        };
    }

    sim_exchange::report_sink callback_sink() {
        return [this](const apply_execution& x, std::function<void(errc)> answered) {
            deliver_report(x, std::move(answered), "callback");
        };
    }

    // engine_runner::maintenance_loop: the watchdog and the expiry of unsent trades, both as
    // commands through the pipeline.
    void maintenance() {
        next_maintenance_ = now_ + maintenance_period_ms;
        node_->submit(find_stuck_trades{now_ - watchdog_ms, 10'000}, [this](const reply& r) {
            for (const trade& t : r.trades) {
                count("watchdog.reconcile");
                log(fmt::format("watchdog: asks the exchange about {}", t.id.value));
                exchange_.reconcile(order_for(t), now_, rng_, status_sink());
            }
        });
        node_->submit(expire_placed{now_ - placed_max_age_ms, 10'000}, {});
    }

    // --- simulated customers ----------------------------------------------------------------

    void setup() {
        rng_.seed(mix(opt_.seed ^ salt_setup) ^ setup_seed_);
        knobs_ = draw_knobs(rng_);
        exchange_.set_knobs(knobs_.exchange);
        now_ = start_time;
        next_maintenance_ = now_;
        open_store();
        auto fresh = journal::recover(*store_);
        if (!fresh) fail("durability", "recovering an empty store: " + fresh.error().what);
        durable_digest_ = journal::state_digest(*fresh);
        start_node(std::move(fresh.value()));
        log(fmt::format("knobs: crash a={} b={} mid={} idle={} recovery={} outage={} batch={}x{}",
                        knobs_.crash_before_append, knobs_.crash_after_append,
                        knobs_.crash_mid_dispatch, knobs_.crash_idle, knobs_.crash_mid_recovery,
                        knobs_.outage_start, knobs_.batch_max, knobs_.group_max));
        const auto customers = between(rng_, 2, 5);
        for (std::int64_t i = 0; i < customers; ++i) {
            open_customer c;
            // Ids that are prefixes of one another, as the store's per-customer keys must cope.
            static constexpr const char* names[] = {"c0", "c0.1", "c1", "c1-b", "c10"};
            c.customer_id = names[i];
            c.cash = money{between(rng_, 2'000, 60'000) * limits::ticks_per_usd};
            for (const auto& l : listings) {
                if (chance(rng_, 0.5))
                    c.positions.push_back({sym_of(l.ticker), quantity{between(rng_, 1, 200)}});
            }
            log(fmt::format("open {} cash {} with {} positions", c.customer_id,
                            format_money(c.cash), c.positions.size()));
            const int copies = chance(rng_, 0.3) ? 2 : 1;  // an administrator's retry
            for (int k = 0; k < copies; ++k) {
                node_->submit(c, [this, id = c.customer_id](const reply& r) {
                    if (r.code != errc::ok)
                        fail("durability", "opening " + id + ": " + std::string(to_string(r.code)));
                });
            }
            clients_.push_back(sim_client{c.customer_id, {}, {}, {}, 1});
        }
        while (node_->queued() > 0) node_cycle(false);
        check_step();
    }

    void client_action(sim_client& c) {
        const auto roll = below(rng_, 100);
        if (roll < 50 || c.known.empty()) {
            if (roll >= 50 && roll < 62 && !c.sent.empty()) return retry(c);
            return place_new(c);
        }
        if (roll < 62 && !c.sent.empty()) return retry(c);
        // Mostly recent trades (still PLACED, so cancel and modify can work); now and then a
        // trade id the customer does not own or that does not exist.
        std::uint64_t id =
            c.known[c.known.size() - 1 - below(rng_, std::min<std::size_t>(c.known.size(), 6))];
        if (chance(rng_, 0.05)) id = 1 + below(rng_, node_->live().next_trade_id + 3);
        if (roll < 80) return cancel(c, id);
        return modify(c, id);
    }

    // Mostly small; now and then more than a customer can afford or hold, past the notional
    // limit, or not a quantity at all (the engine's own checks, behind the API's).
    std::int64_t draw_quantity(std::int64_t usual_max) {
        const auto roll = below(rng_, 100);
        if (roll < 88) return between(rng_, 1, usual_max);
        if (roll < 97) return between(rng_, 100, 3'000);
        if (roll < 99) return between(rng_, 100'000, limits::quantity_max);
        return chance(rng_, 0.5) ? 0 : limits::quantity_max + 1;
    }

    void place_new(sim_client& c) {
        client_request req;
        const auto pick = below(rng_, std::size(listings) * 10 + 1);
        req.sym = pick < std::size(listings) * 10 ? sym_of(listings[pick / 10].ticker)
                                                  : sym_of(unlisted_ticker);
        req.trade_side = chance(rng_, 0.55) ? side::buy : side::sell;
        req.qty = quantity{draw_quantity(40)};
        if (chance(rng_, 0.6)) {
            req.coid = fmt::format("{}-k{}", c.id, c.next_coid++);
            c.sent.push_back(req);
        }
        send_placement(c, req, "place");
    }

    void retry(sim_client& c) {
        client_request req = c.sent[below(rng_, c.sent.size())];
        const bool same = chance(rng_, 0.7);
        if (!same) {
            if (chance(rng_, 0.5)) {
                req.qty.shares += between(rng_, 1, 5);
            } else {
                req.trade_side = req.trade_side == side::buy ? side::sell : side::buy;
            }
        }
        count(same ? "client.retry_same_body" : "client.retry_other_body");
        send_placement(c, req, same ? "retry" : "retry-changed");
    }

    // As the router's place_trade: quote, market status, and the store's memory of the
    // client_order_id when one is given.
    void send_placement(sim_client& c, const client_request& req, const char* what) {
        place_trade p{c.id,         req.coid,
                      req.sym,      req.trade_side,
                      req.qty,      exchange_.quote(req.sym),
                      market_open_, limits::collar_bps_default};
        if (!req.coid.empty()) {
            p.client_order_checked_at = now_;
            auto known = store_->find_client_order(c.id, req.coid);
            if (!known) fail("durability", "client order lookup: " + known.error().what);
            p.known_client_order = *known;
            if (*known) count("client.coid_found_in_store");
        }
        log(fmt::format("{} {} {} {} {}{}{}", c.id, what, to_string(req.trade_side), req.qty.shares,
                        to_string(req.sym), req.coid.empty() ? "" : " coid=", req.coid));
        count("client.placements_sent");
        node_->submit(std::move(p),
                      [this, id = c.id, req](const reply& r) { on_placed(id, req, r); });
    }

    sim_client& client(const std::string& id) {
        for (auto& c : clients_) {
            if (c.id == id) return c;
        }
        fail("model", "unknown client " + id);
    }

    void on_placed(const std::string& customer_id, const client_request& req, const reply& r) {
        count("reply.place." + std::string(to_string(r.code)));
        if (r.code != errc::ok) return;
        sim_client& c = client(customer_id);
        if (!r.trade_ref) fail("durability", "a placement was answered ok without a trade");
        const std::uint64_t id = r.trade_ref->value;
        std::optional<trade> t = r.trade_view;
        if (!t) {
            auto stored = store_->find_trade(customer_id, *r.trade_ref);
            if (!stored) fail("durability", "trade store: " + stored.error().what);
            t = *stored;
        }
        if (!t)
            fail("durability",
                 fmt::format("placement answered with trade {}, which is nowhere", id));
        if (t->customer_id != c.id || t->client_order_id != req.coid) {
            fail("idempotency",
                 fmt::format("{} placed coid '{}' and got trade {} of {} with coid '{}'", c.id,
                             req.coid, id, t->customer_id, t->client_order_id));
        }
        if (!r.repeated &&
            (t->sym != req.sym || t->trade_side != req.trade_side || t->qty != req.qty)) {
            fail("idempotency", fmt::format("new trade {} does not match its request", id));
        }
        if (r.repeated) {
            const bool same =
                t->sym == req.sym && t->trade_side == req.trade_side && t->qty == req.qty;
            count(same ? "client.repeat_answered_original" : "client.repeat_answered_conflict");
        }
        log(fmt::format("{} acked trade {} {}{}", c.id, id, to_string(t->status),
                        r.repeated ? " (repeat)" : ""));
        if (!req.coid.empty()) {
            auto [it, inserted] = c.coid_trade.emplace(req.coid, id);
            if (!inserted && it->second != id) {
                fail("idempotency",
                     fmt::format("{} client_order_id {} named trade {}, now trade {}", c.id,
                                 req.coid, it->second, id));
            }
        }
        if (std::find(c.known.begin(), c.known.end(), id) == c.known.end()) {
            c.known.push_back(id);
            acked_.push_back(acked_trade{c.id, id});
            count("client.trades_acknowledged");
        }
    }

    void cancel(sim_client& c, std::uint64_t id) {
        log(fmt::format("{} cancel {}", c.id, id));
        node_->submit(cancel_trade{c.id, trade_id{id}}, [this, who = c.id, id](const reply& r) {
            count("reply.cancel." + std::string(to_string(r.code)));
            if (r.code != errc::ok) return;
            // Acknowledged: the cancel is durable and the trade was the caller's.
            auto stored = store_->find_trade(who, trade_id{id});
            if (!stored) fail("durability", "trade store: " + stored.error().what);
            if (!*stored || (*stored)->status != trade_status::canceled) {
                fail("durability",
                     fmt::format("{}'s acknowledged cancel of {} is not in the trade store", who,
                                 id));
            }
            log(fmt::format("{} acked cancel {}", who, id));
        });
    }

    void modify(sim_client& c, std::uint64_t id) {
        const quantity qty{draw_quantity(40)};
        log(fmt::format("{} modify {} to {}", c.id, id, qty.shares));
        modify_trade m{c.id, trade_id{id}, qty, std::nullopt, limits::collar_bps_default};
        node_->submit(std::move(m), [this, who = c.id, id, qty](const reply& r) {
            count("reply.modify." + std::string(to_string(r.code)));
            if (r.code != errc::ok) return;
            if (!r.trade_view || r.trade_view->customer_id != who || r.trade_view->qty != qty) {
                fail("durability",
                     fmt::format("{}'s modify of {} answered ok with another trade", who, id));
            }
        });
    }

    // --- steps ------------------------------------------------------------------------------

    void step(std::size_t i) {
        step_ = static_cast<std::int64_t>(i);
        rng_.seed(step_seeds_[i]);
        const std::int64_t advance = chance(rng_, knobs_.time_jump)
                                         ? between(rng_, 60'000, 11 * 60'000)
                                         : between(rng_, 0, 800);
        now_ += advance;
        if (chance(rng_, knobs_.clock_back)) {
            // The node reads the system clock, which NTP may step back a little.
            const std::int64_t back = between(rng_, 1, 3'000);
            now_ -= back;
            count("fault.clock_stepped_back");
            log(fmt::format("clock steps back {} ms", back));
        }
        count("steps");
        if (advance >= 60'000) {
            count("fault.time_jump");
            log(fmt::format("time jumps {} s", advance / 1000));
        }
        exchange_.move_prices(rng_);
        if (!exchange_.in_outage(now_) && chance(rng_, knobs_.outage_start)) {
            const std::int64_t len = between(rng_, 1'000, knobs_.outage_max_ms);
            exchange_.start_outage(now_ + len);
            count("fault.exchange_outage");
            log(fmt::format("exchange outage for {} ms", len));
        }
        if (market_open_ ? chance(rng_, knobs_.market_close) : chance(rng_, 0.3)) {
            market_open_ = !market_open_;
            if (!market_open_) count("fault.market_closed");
            log(market_open_ ? "market opens" : "market closes");
        }
        const auto actions = between(rng_, 0, knobs_.actions_max);
        for (std::int64_t a = 0; a < actions; ++a) {
            client_action(clients_[below(rng_, clients_.size())]);
        }
        exchange_.execute_due(now_, rng_);
        exchange_.deliver_due(now_, rng_, callback_sink());
        if (now_ >= next_maintenance_) maintenance();
        for (int round = 0; round < 2 && node_->queued() > 0; ++round) node_cycle(true);
        if (chance(rng_, knobs_.crash_idle)) crash("idle", false);
        check_step();
    }

    // No new work and no new faults: the outage ends, the market opens, and the node must bring
    // every trade to a terminal state.
    void quiesce() {
        exchange_knobs calm = knobs_.exchange;
        calm.slow_rate = 0;
        exchange_.set_knobs(calm);
        exchange_.start_outage(0);
        market_open_ = true;
        for (std::size_t q = 0; q < quiescence_steps_max; ++q) {
            step_ = static_cast<std::int64_t>(opt_.steps + q);
            rng_.seed(mix(opt_.seed ^ salt_quiesce) + q);
            now_ += quiescence_step_ms;
            exchange_.execute_due(now_, rng_);
            exchange_.deliver_due(now_, rng_, callback_sink());
            if (now_ >= next_maintenance_) maintenance();
            for (int round = 0; round < 4 && node_->queued() > 0; ++round) node_cycle(false);
            check_step();
            if (node_->live().open_trades.empty() && node_->queued() == 0 && exchange_.idle()) {
                count("quiescence_steps", q + 1);
                return;
            }
        }
        count("quiescence_steps", quiescence_steps_max);
    }

    // --- checks -----------------------------------------------------------------------------

    void check_step() {
        const state& live = node_->live();
        if (auto broken = check_invariants(live)) fail("invariants", *broken);
        if (live.last_sequence != store_->last_sequence()) {
            fail("durability", fmt::format("live state at event {} but the journal ends at {}",
                                           live.last_sequence, store_->last_sequence()));
        }
        audit_.tail(*store_);
        audit_.compare(live);
        check_acked(acked_checked_);
        acked_checked_ = acked_.size();
        if (!exchange_.violations().empty()) fail("order", exchange_.violations().front());
    }

    // Every acknowledged placement is open in the state or closed in the trade store.
    void check_acked(std::size_t from) {
        const state& live = node_->live();
        for (std::size_t i = from; i < acked_.size(); ++i) {
            const acked_trade& a = acked_[i];
            if (const trade* t = live.find_open_trade(trade_id{a.id})) {
                if (t->customer_id != a.customer_id) {
                    fail("durability", fmt::format("acknowledged trade {} of {} now belongs to {}",
                                                   a.id, a.customer_id, t->customer_id));
                }
                continue;
            }
            auto stored = store_->find_trade(a.customer_id, trade_id{a.id});
            if (!stored) fail("durability", "trade store: " + stored.error().what);
            if (!*stored) {
                fail("durability",
                     fmt::format("acknowledged trade {} of {} is lost", a.id, a.customer_id));
            }
        }
    }

    // The indexes written in the same WriteBatch as the events: each customer's durable update
    // backlog (the WebSocket stream's) counts 1..n without gaps up to the live update sequence
    // and ends, for each open trade, in its live status; acknowledged client order ids resolve.
    void check_store_indexes() {
        const state& live = node_->live();
        for (const auto& [id, c] : live.customers) {
            auto updates = store_->updates_since(id, 0, 1'000'000);
            if (!updates) fail("durability", "reading updates: " + updates.error().what);
            std::map<std::uint64_t, trade_status> last_status;
            for (std::size_t i = 0; i < updates->size(); ++i) {
                const trade_change& u = (*updates)[i];
                if (u.update_sequence != i + 1 || u.snapshot.customer_id != id) {
                    fail("durability",
                         fmt::format("{}'s update backlog has {} (of {}) at place {}", id,
                                     u.update_sequence, u.snapshot.customer_id, i + 1));
                }
                last_status[u.snapshot.id.value] = u.snapshot.status;
            }
            if (updates->size() != c.update_sequence) {
                fail("durability", fmt::format("{} has update sequence {} but {} durable updates",
                                               id, c.update_sequence, updates->size()));
            }
            for (const trade_id open : c.fifo) {
                const auto it = last_status.find(open.value);
                if (it == last_status.end() || it->second != live.find_open_trade(open)->status) {
                    fail("durability", fmt::format("{}'s update backlog disagrees with the live "
                                                   "status of trade {}",
                                                   id, open.value));
                }
            }
        }
        for (const auto& cl : clients_) {
            for (const auto& [coid, id] : cl.coid_trade) {
                auto found = store_->find_client_order(cl.id, coid);
                if (!found) fail("durability", "client order lookup: " + found.error().what);
                if (!*found || (*found)->value != id) {
                    fail("idempotency", fmt::format("{}'s client_order_id {} was acknowledged as "
                                                    "trade {}; the store says {}",
                                                    cl.id, coid, id, *found ? (*found)->value : 0));
                }
            }
        }
    }

    void final_checks() {
        const state& live = node_->live();
        if (!live.open_trades.empty()) {
            std::vector<std::uint64_t> ids;
            for (const auto& [id, t] : live.open_trades) ids.push_back(id);
            std::sort(ids.begin(), ids.end());
            const trade& first = live.open_trades.at(ids.front());
            fail("terminal",
                 fmt::format("{} trades still open after {} quiet steps; the oldest, {}, is {}",
                             ids.size(), quiescence_steps_max, ids.front(),
                             to_string(first.status)));
        }
        if (!exchange_.idle()) {
            fail("terminal",
                 fmt::format("the exchange still has {} working orders and {} unanswered reports",
                             exchange_.working(), exchange_.unanswered_callbacks()));
        }
        audit_.check_settled();
        for (const auto& a : acked_) {
            auto stored = store_->find_trade(a.customer_id, trade_id{a.id});
            if (!stored) fail("durability", "trade store: " + stored.error().what);
            if (!*stored || !is_terminal((*stored)->status)) {
                fail("terminal",
                     fmt::format("acknowledged trade {} never reached a terminal state", a.id));
            }
        }
        check_store_indexes();
        count("acknowledged_trades_verified", acked_.size());
        // One last restart, without faults: the final state must come back exactly.
        crash("final", false, false);
        check_step();
        count("runs_clean");
    }

    sim_options opt_;
    std::function<void(const std::string&)> on_line_;
    sim_result result_;
    std::uint64_t setup_seed_ = 0;
    std::vector<std::uint64_t> step_seeds_;
    std::mt19937_64 rng_;
    std::int64_t step_ = -1;
    fault_knobs knobs_;
    timestamp_ms now_ = start_time;
    timestamp_ms next_maintenance_ = start_time;
    bool market_open_ = true;

    fs::path dir_;
    std::unique_ptr<journal::store> store_;
    std::unique_ptr<sim_node> node_;
    sim_exchange exchange_;
    std::string durable_digest_;

    std::vector<sim_client> clients_;
    std::vector<acked_trade> acked_;
    std::size_t acked_checked_ = 0;

    auditor audit_;
};

}  // namespace

std::string tmp_root(const sim_options& o) {
    if (!o.tmp_root.empty()) return o.tmp_root;
    return ::access("/dev/shm", W_OK) == 0 ? std::string("/dev/shm")
                                           : fs::temp_directory_path().string();
}

sim_result run_simulation(const sim_options& o,
                          const std::function<void(const std::string&)>& on_line) {
    simulation sim(o, on_line);
    return sim.run();
}

}  // namespace broker::sim
