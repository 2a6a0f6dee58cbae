// exchange-sim's outage windows.
#include <doctest/doctest.h>

#include "exchange/sim/outage.h"

using namespace broker::exchange::sim;

TEST_CASE("outage windows are parsed as START_S:DURATION_S with up to three decimals") {
    const auto w = parse_outage("5:2.5");
    REQUIRE(w.has_value());
    CHECK(w->start_ms == 5000);
    CHECK(w->duration_ms == 2500);
    const auto z = parse_outage("0.125:1");
    REQUIRE(z.has_value());
    CHECK(z->start_ms == 125);
    for (const char* bad : {"", "5", "5:", ":2", "5:0", "-1:2", "5:2.", "5:2.1234", "a:b", "5:2:1",
                            "1e3:1", "99999999:1"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_outage(bad).has_value());
    }
}

TEST_CASE("the exchange is down from the start of a window until just before its end") {
    const std::vector<outage_window> windows{{1000, 500}, {3000, 1000}};
    CHECK_FALSE(down_at(windows, 999));
    CHECK(down_at(windows, 1000));
    CHECK(down_at(windows, 1499));
    CHECK_FALSE(down_at(windows, 1500));
    CHECK(down_at(windows, 3999));
    CHECK_FALSE(down_at(windows, 4000));
    CHECK(next_change(windows, 0) == 1000);
    CHECK(next_change(windows, 1000) == 1500);
    CHECK(next_change(windows, 1500) == 3000);
    CHECK(next_change(windows, 4000) == std::nullopt);
}
