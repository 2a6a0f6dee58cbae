// The embedded simulated exchange (exchange/simulator.h), through its gateway interface with a
// report sink standing in for the engine: every order executes exactly once and never before its
// latency allows, whether it arrives while the simulator is idle or while it is ticking; reports
// not taken are delivered again until they are; duplicates come after the settled original.
// Real time with a short latency: only lower bounds and "eventually" (a few seconds at most) are
// asserted, never how fast.
#include "exchange/simulator.h"

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/money.h"
#include "engine/types.h"

using namespace broker;
using namespace broker::exchange;

namespace {

using clock_type = std::chrono::steady_clock;

// Records every report handed over, answering with `answer(id, delivery)` (1-based delivery).
class recording_sink {
public:
    using answer_fn = std::function<report_taken(std::uint64_t id, int delivery)>;
    explicit recording_sink(answer_fn answer = {}) : answer_(std::move(answer)) {}

    report_sink sink() {
        return [this](std::vector<handover> reports) {
            std::vector<std::pair<std::function<void(report_taken)>, report_taken>> answers;
            {
                std::lock_guard lock(mutex_);
                for (auto& h : reports) {
                    auto& seen = seen_[h.report.id.value];
                    seen.push_back(delivery{clock_type::now(), h.report});
                    const int n = static_cast<int>(seen.size());
                    answers.emplace_back(std::move(h.done),
                                         answer_ ? answer_(h.report.id.value, n) : report_taken::settled);
                }
            }
            cv_.notify_all();
            for (auto& [done, taken] : answers) done(taken);
        };
    }

    struct delivery {
        clock_type::time_point at;
        apply_execution report;
    };

    // Waits until every id in `ids` was delivered at least `times` times, or `limit` passes.
    bool wait_for(const std::vector<std::uint64_t>& ids, std::size_t times,
                  std::chrono::milliseconds limit) {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, limit, [&] {
            for (const auto id : ids) {
                auto it = seen_.find(id);
                if (it == seen_.end() || it->second.size() < times) return false;
            }
            return true;
        });
    }

    std::vector<delivery> deliveries(std::uint64_t id) {
        std::lock_guard lock(mutex_);
        auto it = seen_.find(id);
        return it == seen_.end() ? std::vector<delivery>{} : it->second;
    }

private:
    answer_fn answer_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::map<std::uint64_t, std::vector<delivery>> seen_;
};

order buy(std::uint64_t id) {
    // A limit far above any simulated price: the order is marketable and fills.
    return order{trade_id{id}, *parse_symbol("AAPL"), side::buy, quantity{1},
                 money{1'000'000 * 10'000LL}};
}

simulator_config quiet(std::int64_t latency_ms) {
    simulator_config c;
    c.latency_ms = latency_ms;
    c.reject_rate = 0;
    c.duplicate_rate = 0;
    return c;
}

}  // namespace

TEST_CASE("every order executes once, after its latency, whether the simulator idles or ticks") {
    constexpr std::int64_t latency_ms = 40;  // due 20-60 ms after the millisecond of arrival
    recording_sink rec;
    auto sim = make_simulated_exchange(quiet(latency_ms), rec.sink());
    std::map<std::uint64_t, clock_type::time_point> submitted;
    auto submit = [&](std::vector<std::uint64_t> ids) {
        std::vector<order> orders;
        for (const auto id : ids) orders.push_back(buy(id));
        const auto now = clock_type::now();
        for (const auto id : ids) submitted[id] = now;
        sim->submit_all(orders);
    };

    // Idle: the first submission must wake it.
    submit({1});
    // While it waits for order 1's due millisecond: orders whose due time may come first.
    std::vector<std::uint64_t> ticking;
    for (std::uint64_t i = 0; i < 20; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(3));
        ticking.push_back(100 + i);
        submit({100 + i});
    }
    // Several at once, one by one, and the same order again (re-sent: still one execution).
    submit({200, 201, 202});
    submitted[203] = clock_type::now();
    sim->submit(buy(203));
    sim->reconcile(buy(203));
    std::vector<std::uint64_t> all{1, 200, 201, 202, 203};
    all.insert(all.end(), ticking.begin(), ticking.end());
    REQUIRE(rec.wait_for(all, 1, std::chrono::seconds(10)));

    // Idle again, then one more: woken again.
    std::this_thread::sleep_for(std::chrono::milliseconds(3 * latency_ms));
    submit({300});
    all.push_back(300);
    REQUIRE(rec.wait_for(all, 1, std::chrono::seconds(10)));
    std::this_thread::sleep_for(std::chrono::milliseconds(2 * latency_ms));  // room for repeats

    for (const auto id : all) {
        const auto d = rec.deliveries(id);
        CAPTURE(id);
        REQUIRE(d.size() == 1);
        CHECK(d[0].report.filled);
        CHECK(d[0].report.qty == quantity{1});
        // Due at the arrival millisecond + latency/2 at the earliest: at most 1 ms of that
        // millisecond had already passed at submission.
        const auto delay = std::chrono::duration_cast<std::chrono::microseconds>(
            d[0].at - submitted.at(id));
        CHECK(delay >= std::chrono::milliseconds(latency_ms / 2 - 1));
    }
    sim->stop();
}

TEST_CASE("a report not taken is delivered again; a duplicate follows the settled original") {
    SUBCASE("retry until settled") {
        recording_sink rec([](std::uint64_t, int delivery) {
            return delivery < 3 ? report_taken::retry : report_taken::settled;
        });
        auto sim = make_simulated_exchange(quiet(2), rec.sink());
        sim->submit(buy(7));
        REQUIRE(rec.wait_for({7}, 3, std::chrono::seconds(10)));
        std::this_thread::sleep_for(std::chrono::milliseconds(400));  // longer than a backoff
        const auto d = rec.deliveries(7);
        REQUIRE(d.size() == 3);
        CHECK(d[0].report.exec_id == d[2].report.exec_id);  // the same execution, re-delivered
        sim->stop();
    }
    SUBCASE("every report twice at duplicate rate 1") {
        recording_sink rec;
        auto config = quiet(2);
        config.duplicate_rate = 1.0;
        auto sim = make_simulated_exchange(config, rec.sink());
        sim->submit_all({buy(8), buy(9)});
        REQUIRE(rec.wait_for({8, 9}, 2, std::chrono::seconds(10)));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        for (const std::uint64_t id : {8, 9}) {
            const auto d = rec.deliveries(id);
            REQUIRE(d.size() == 2);
            CHECK(d[0].report.exec_id == d[1].report.exec_id);
        }
        sim->stop();
    }
    SUBCASE("an order the broker does not know is dropped, not retried") {
        recording_sink rec([](std::uint64_t, int) { return report_taken::unknown; });
        auto sim = make_simulated_exchange(quiet(2), rec.sink());
        sim->submit(buy(10));
        REQUIRE(rec.wait_for({10}, 1, std::chrono::seconds(10)));
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        CHECK(rec.deliveries(10).size() == 1);
        sim->stop();
    }
}

TEST_CASE("an order whose report was settled is not executed again by a late reconcile") {
    // The broker's watchdog can ask about a trade in the round before its report settles; the
    // request then reaches the simulator after the settlement. A venue's order ids are
    // idempotent: it must not execute the order a second time (at another price).
    constexpr std::int64_t latency_ms = 4;
    recording_sink rec;
    auto sim = make_simulated_exchange(quiet(latency_ms), rec.sink());
    sim->submit(buy(11));
    REQUIRE(rec.wait_for({11}, 1, std::chrono::seconds(10)));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the sink's answer is given

    sim->reconcile(buy(11));
    sim->submit(buy(11));
    // Orders it never saw still execute, also one whose id shares order 11's slot.
    constexpr std::uint64_t same_slot = 11 + (std::uint64_t{1} << 17);
    sim->reconcile(buy(12));
    sim->reconcile(buy(same_slot));
    REQUIRE(rec.wait_for({12, same_slot}, 1, std::chrono::seconds(10)));
    std::this_thread::sleep_for(std::chrono::milliseconds(20 * latency_ms));  // room for repeats
    CHECK(rec.deliveries(11).size() == 1);
    CHECK(rec.deliveries(12).size() == 1);
    CHECK(rec.deliveries(same_slot).size() == 1);
    sim->stop();
}
