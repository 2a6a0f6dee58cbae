#include "node/latency_histogram.h"

#include <doctest/doctest.h>

#include <string>

using broker::node::latency_histogram;
using namespace std::chrono_literals;

TEST_CASE("durations fall in the first bucket whose bound holds them, rendered cumulatively") {
    latency_histogram h;
    h.add(100us);   // exactly on the first bound: inside it (Prometheus buckets are <=)
    h.add(101us);   // just past it
    h.add(2ms, 3);  // a round of three requests that shared one commit
    h.add(2s);      // past the largest bound
    std::string text;
    h.render(text, "x_seconds", "stage=\"a\"");
    CHECK(text.find("x_seconds_bucket{stage=\"a\",le=\"0.0001\"} 1\n") != std::string::npos);
    CHECK(text.find("x_seconds_bucket{stage=\"a\",le=\"0.00025\"} 2\n") != std::string::npos);
    CHECK(text.find("x_seconds_bucket{stage=\"a\",le=\"0.0015\"} 2\n") != std::string::npos);
    CHECK(text.find("x_seconds_bucket{stage=\"a\",le=\"0.002\"} 5\n") != std::string::npos);
    CHECK(text.find("x_seconds_bucket{stage=\"a\",le=\"1\"} 5\n") != std::string::npos);
    CHECK(text.find("x_seconds_bucket{stage=\"a\",le=\"+Inf\"} 6\n") != std::string::npos);
    CHECK(text.find("x_seconds_sum{stage=\"a\"} 2.006201\n") != std::string::npos);
    CHECK(text.find("x_seconds_count{stage=\"a\"} 6\n") != std::string::npos);
}

TEST_CASE("without labels the lines carry only le, and a clock that stepped back adds no time") {
    latency_histogram h;
    h.add(-5ms);
    std::string text;
    h.render(text, "y_seconds");
    CHECK(text.find("y_seconds_bucket{le=\"0.0001\"} 1\n") != std::string::npos);
    CHECK(text.find("y_seconds_sum 0.000000\ny_seconds_count 1\n") != std::string::npos);
    CHECK(text.find("y_seconds_bucket{,") == std::string::npos);
}
