// Random command streams for tests: open accounts, then place, fill, reject, cancel and modify
// trades at random, decided and applied as the node does. Shared by the engine's replay test and
// the snapshot tests, so that both see every event type and the states between them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "engine/decide.h"
#include "engine/state.h"

namespace broker::testing {

struct random_journal_options {
    std::uint64_t seed = 1;
    int steps = 400;
    // How far the clock moves per command. Steps of minutes make the engine forget client order
    // ids of long-closed trades (limits::client_order_memory_ms) within one stream.
    timestamp_ms max_step_ms = 1;
};

struct random_journal {
    state s;
    std::vector<event> journal;

    // Runs the stream; `after_step` sees the state after every command.
    explicit random_journal(const random_journal_options& o,
                            const std::function<void(const state&)>& after_step = {}) {
        std::mt19937_64 rng(o.seed);
        const symbol aapl = *parse_symbol("AAPL");
        const symbol msft = *parse_symbol("MSFT");
        constexpr std::int64_t usd = limits::ticks_per_usd;
        timestamp_ms now = 1'700'000'000'000;
        auto run = [&](const command& c) {
            decision d = decide(s, c, now);
            for (const auto& body : d.events) {
                event e{s.last_sequence + 1, now, body};
                apply(s, e);
                journal.push_back(std::move(e));
            }
            if (after_step) after_step(s);
            now += std::uniform_int_distribution<timestamp_ms>(1, o.max_step_ms)(rng);
        };
        auto pick = [&](std::size_t n) {
            return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
        };
        const std::vector<std::string> ids{"a", "b", "c", "d"};
        for (const auto& id : ids) {
            run(open_customer{id, money{2'000 * usd}, {{aapl, quantity{20}}, {msft, quantity{5}}}});
        }
        for (int step = 0; step < o.steps; ++step) {
            const auto& who = ids[pick(ids.size())];
            switch (pick(5)) {
                case 0:
                case 1: {
                    const auto sd = pick(2) == 0 ? side::buy : side::sell;
                    const std::string coid = pick(3) == 0 ? fmt::format("c{}", pick(20)) : "";
                    run(place_trade{who, coid, pick(2) == 0 ? aapl : msft, sd,
                                    quantity{1 + static_cast<std::int64_t>(pick(12))},
                                    money{(50 + static_cast<std::int64_t>(pick(100))) * usd}, true,
                                    500, std::nullopt, now});
                    break;
                }
                case 2:
                case 3: {  // the exchange reports on some trade at the exchange
                    std::vector<trade_id> live;
                    for (const auto& [id, t] : s.open_trades) {
                        if (t.status == trade_status::in_progress) live.push_back(t.id);
                    }
                    if (live.empty()) break;
                    std::sort(live.begin(), live.end());
                    const trade_id id = live[pick(live.size())];
                    const trade& t = *s.find_open_trade(id);
                    if (pick(4) == 0) {
                        run(apply_execution{id, false, quantity{0}, money{0},
                                            errc::exchange_rejected, "x", now});
                    } else {
                        const std::int64_t top =
                            t.trade_side == side::buy ? t.limit_price.ticks : 200 * usd;
                        const auto price = std::uniform_int_distribution<std::int64_t>(1, top)(rng);
                        const std::int64_t qty = t.qty.shares;
                        const std::string exec = fmt::format("x{}", id.value);
                        run(apply_execution{id, true, quantity{qty}, money{price}, errc::ok, exec,
                                            now});
                        if (pick(3) == 0) {  // a duplicate callback
                            run(apply_execution{id, true, quantity{qty}, money{price}, errc::ok,
                                                exec, now});
                        }
                    }
                    break;
                }
                default: {
                    const trade_id id{1 + pick(static_cast<std::size_t>(s.next_trade_id))};
                    if (pick(2) == 0) {
                        run(cancel_trade{who, id});
                    } else {
                        run(modify_trade{who, id, quantity{1 + static_cast<std::int64_t>(pick(12))},
                                         money{(50 + static_cast<std::int64_t>(pick(100))) * usd},
                                         500});
                    }
                }
            }
        }
    }
};

}  // namespace broker::testing
