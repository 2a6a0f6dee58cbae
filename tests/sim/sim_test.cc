// The deterministic simulation as a test: many seeds of simulated customers, a faulty exchange
// and crashes against the real engine and journal (tests/sim/simulator.h).
//
// Environment (soak mode):
//   BROKER_SIM_SEEDS       how many seeds (default 200)
//   BROKER_SIM_FIRST_SEED  the first seed (default 1); seeds are consecutive
//   BROKER_SIM_STEPS       steps per seed (default 200)
//   BROKER_SIM_JOBS        simulations run at once, each in its own child process (default 2)
//   BROKER_SIM_FORK=0      run in this process (for a debugger; an engine abort ends the test)
// For "as many as asked" outside ctest, use the sim_soak executable (sim_soak --help).
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tests/sim/simulator.h"

namespace broker::sim {
namespace {

// Seeds that found a bug once. When a seed fails: fix the bug, then add {seed, steps} here (the
// seed and steps that the failure report's "replay:" line names) so that every run replays it.
// Keep a comment saying what it caught.
constexpr std::array<std::pair<std::uint64_t, std::size_t>, 0> regression_seeds{};

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return fallback;
    return std::strtoull(v, nullptr, 10);
}

std::vector<std::uint64_t> consecutive(std::uint64_t first, std::uint64_t n) {
    std::vector<std::uint64_t> out;
    for (std::uint64_t i = 0; i < n; ++i) out.push_back(first + i);
    return out;
}

// Prints the first failure, shrunk, with its replay line; returns the number of failures.
std::size_t report_failures(const std::vector<sim_result>& results, sabotage broken,
                            std::size_t shrink_budget) {
    std::size_t failures = 0;
    for (const auto& r : results) {
        if (!r.failure) continue;
        if (failures++ == 0) {
            sim_options o;
            o.seed = r.seed;
            o.steps = r.steps;
            o.broken = broken;
            const sim_result small = shrink(o, r, shrink_budget);
            std::printf("%s", describe(small, broken).c_str());
        } else {
            std::printf("sim: seed %llu also failed [%s]: %s\n",
                        static_cast<unsigned long long>(r.seed), r.failure->kind.c_str(),
                        r.failure->message.c_str());
        }
    }
    std::fflush(stdout);
    return failures;
}

TEST_CASE(
    "customers, a faulty exchange and crashes never break an invariant or lose an "
    "acknowledged trade") {
    const auto seeds =
        consecutive(env_u64("BROKER_SIM_FIRST_SEED", 1), env_u64("BROKER_SIM_SEEDS", 200));
    const auto steps = env_u64("BROKER_SIM_STEPS", 200);
    const auto results = run_seeds(seeds, steps, env_u64("BROKER_SIM_JOBS", 2));
    std::map<std::string, std::uint64_t> totals;
    for (const auto& r : results) add_counters(totals, r);
    const std::size_t failures = report_failures(results, sabotage::none, 150);
    std::size_t lost = 0;
    for (const auto& r : results) lost += r.failure && r.failure->kind == "durability" ? 1 : 0;
    std::printf("sim: seeds %llu.. with %llu steps each; all counters:\n%s%s",
                static_cast<unsigned long long>(seeds.front()),
                static_cast<unsigned long long>(steps), format_counters(totals).c_str(),
                format_summary(totals, seeds.size(), failures, lost).c_str());
    std::fflush(stdout);
    CHECK(failures == 0);
    CHECK(totals["runs_clean"] == seeds.size() - failures);
    if (seeds.size() >= 50 && steps >= 100) {
        // A simulation that injects no faults proves nothing: each kind must have happened.
        for (const char* injected :
             {"crash.before_append", "crash.after_append", "crash.mid_dispatch", "crash.idle",
              "crash.mid_recovery", "fault.exchange_outage", "fault.order_lost_in_outage",
              "fault.duplicate_report", "fault.late_duplicate_report", "fault.callbacks_reordered",
              "report.duplicate_ignored", "watchdog.reconcile", "restart.reconcile", "trade.filled",
              "trade.expired", "trade.canceled", "trade.modified",
              "client.repeat_answered_original", "client.repeat_answered_conflict"}) {
            INFO(injected);
            CHECK(totals[injected] > 0);
        }
    }
}

TEST_CASE("regression seeds replay clean") {
    for (const auto& [seed, steps] : regression_seeds) {
        sim_options o;
        o.seed = seed;
        o.steps = steps;
        const sim_result r = run_isolated(o);
        INFO(describe(r));
        CHECK_FALSE(r.failure.has_value());
    }
}

TEST_CASE("a seed replays exactly: same history, same counts") {
    sim_options o;
    o.seed = 4242;
    o.steps = 150;
    const sim_result a = run_isolated(o);
    const sim_result b = run_isolated(o);
    CHECK_FALSE(a.failure.has_value());
    CHECK(a.history.size() > 100);
    CHECK(a.history == b.history);
    CHECK(a.counters == b.counters);
}

// The checks must fire: each sabotage breaks the pipeline in the simulated node only (never the
// engine), and the simulator must catch it within a few seeds, then shrink the history.
TEST_CASE("the simulator catches a broken pipeline and shrinks the failing history") {
    struct expectation {
        sabotage broken;
        std::vector<std::string> kinds;  // what may catch it first
    };
    const std::vector<expectation> cases{
        {sabotage::ack_before_append, {"durability", "digest", "order", "ledger", "idempotency"}},
        {sabotage::wrong_fill_price, {"ledger"}},
        {sabotage::double_fill, {"abort"}},  // apply asserts: a settled trade is no longer open
    };
    for (const auto& c : cases) {
        CAPTURE(to_string(c.broken));
        const auto results = run_seeds(consecutive(1, 4), 150, 2, c.broken);
        const sim_result* first = nullptr;
        for (const auto& r : results) {
            if (r.failure && first == nullptr) first = &r;
        }
        REQUIRE(first != nullptr);
        INFO(first->failure->message);
        CHECK(std::find(c.kinds.begin(), c.kinds.end(), first->failure->kind) != c.kinds.end());
        sim_options o;
        o.seed = first->seed;
        o.steps = first->steps;
        o.broken = c.broken;
        const sim_result small = shrink(o, *first, 25);
        REQUIRE(small.failure.has_value());
        CHECK(small.failure->kind == first->failure->kind);
        CHECK(small.history.size() <= first->history.size());
        std::printf(
            "sim: sabotage %s caught by seed %llu [%s] at step %lld; shrunk from %zu to %zu "
            "history lines (%zu of %zu steps) in %llu runs: %s\n",
            std::string(to_string(c.broken)).c_str(), static_cast<unsigned long long>(first->seed),
            first->failure->kind.c_str(), static_cast<long long>(first->failure->step),
            first->history.size(), small.history.size(), small.steps - small.skip.size(),
            small.steps, static_cast<unsigned long long>(small.counters.at("shrink_runs")),
            small.failure->message.c_str());
        std::fflush(stdout);
    }
}

}  // namespace
}  // namespace broker::sim
