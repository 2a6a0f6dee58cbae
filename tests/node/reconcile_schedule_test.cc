#include "node/reconcile_schedule.h"

#include <doctest/doctest.h>

#include <vector>

using broker::node::reconcile_schedule;
using namespace std::chrono_literals;
using ids = std::vector<std::uint64_t>;

TEST_CASE("a stuck trade is asked about at once, then after waits that double up to a bound") {
    reconcile_schedule s(250ms, 2s);
    const auto t0 = reconcile_schedule::clock::time_point{} + 1h;
    std::vector<int> asked_at_ms;
    // Rounds every 50 ms for 10 s, the trade stuck throughout.
    for (int ms = 0; ms <= 10'000; ms += 50) {
        if (!s.due({7}, t0 + std::chrono::milliseconds(ms)).empty()) asked_at_ms.push_back(ms);
    }
    // 0, +250, +500, +1000, +2000, then every 2000 (the bound).
    CHECK(asked_at_ms == std::vector<int>{0, 250, 750, 1750, 3750, 5750, 7750, 9750});
}

TEST_CASE("trades are scheduled apart, and one no longer stuck starts over when stuck again") {
    reconcile_schedule s(100ms, 10s);
    const auto t0 = reconcile_schedule::clock::time_point{} + 1h;
    CHECK(s.due({1, 2}, t0) == ids{1, 2});
    CHECK(s.due({1, 2, 3}, t0 + 50ms) == ids{3});  // 3 is new; 1 and 2 wait until +100
    CHECK(s.due({1, 2, 3}, t0 + 100ms) == ids{1, 2});
    CHECK(s.tracked() == 3);
    CHECK(s.due({2, 3}, t0 + 150ms) == ids{3});  // 1 was settled: forgotten
    CHECK(s.tracked() == 2);
    CHECK(s.due({1, 2, 3}, t0 + 160ms) == ids{1});  // stuck again: asked at once
    CHECK(s.due({}, t0 + 170ms).empty());
    CHECK(s.tracked() == 0);
}

TEST_CASE("a bound below the first wait is the first wait") {
    reconcile_schedule s(1s, 10ms);
    const auto t0 = reconcile_schedule::clock::time_point{} + 1h;
    CHECK(s.due({5}, t0) == ids{5});
    CHECK(s.due({5}, t0 + 999ms).empty());
    CHECK(s.due({5}, t0 + 1s) == ids{5});
    CHECK(s.due({5}, t0 + 1999ms).empty());
    CHECK(s.due({5}, t0 + 2s) == ids{5});
}
