#include <doctest/doctest.h>
#include <fmt/format.h>

#include <string>

#include "engine/market_calendar.h"
#include "engine/time.h"

using namespace broker;
using namespace std::chrono;

namespace {

// Instants are written in UTC; the comment on each row gives the Eastern time it stands for.
timestamp_ms at(const char* rfc3339) {
    const auto t = parse_rfc3339_ms(rfc3339);
    REQUIRE(t.has_value());
    return *t;
}

year_month_day date(const char* yyyy_mm_dd) {
    const auto t = parse_rfc3339_ms(std::string(yyyy_mm_dd) + "T00:00:00Z");
    REQUIRE(t.has_value());
    return year_month_day{sys_days{days{*t / 86'400'000}}};
}

// Every half hour from 13:00Z to 21:30Z: covers the whole session in both EST and EDT.
bool open_at_any_half_hour(const market_calendar& cal, const char* yyyy_mm_dd) {
    const timestamp_ms midnight = at((std::string(yyyy_mm_dd) + "T00:00:00Z").c_str());
    for (timestamp_ms t = midnight + 13 * 3'600'000; t <= midnight + 21 * 3'600'000 + 1'800'000;
         t += 1'800'000) {
        if (cal.is_open(t)) return true;
    }
    return false;
}

}  // namespace

TEST_CASE("NYSE full-day holidays of 2025, 2026 and 2027 are closed all day") {
    // NYSE's published holiday schedule for these years.
    const char* holidays[] = {
        "2025-01-01", "2025-01-20", "2025-02-17", "2025-04-18",  // Good Friday
        "2025-05-26", "2025-06-19", "2025-07-04", "2025-09-01", "2025-11-27", "2025-12-25",
        "2026-01-01", "2026-01-19", "2026-02-16", "2026-04-03",  // Good Friday
        "2026-05-25", "2026-06-19",
        "2026-07-03",  // Independence Day on a Saturday, observed Friday
        "2026-09-07", "2026-11-26", "2026-12-25",
        "2027-01-01", "2027-01-18", "2027-02-15", "2027-03-26",  // Good Friday
        "2027-05-31",
        "2027-06-18",  // Juneteenth on a Saturday, observed Friday
        "2027-07-05",  // Independence Day on a Sunday, observed Monday
        "2027-09-06", "2027-11-25",
        "2027-12-24",  // Christmas on a Saturday, observed Friday
    };
    const market_calendar cal = market_calendar::nyse();
    for (const char* d : holidays) {
        CAPTURE(d);
        CHECK_FALSE(open_at_any_half_hour(cal, d));
    }
}

TEST_CASE("ordinary weekdays, including days next to holidays, are open at midday") {
    const char* trading_days[] = {
        "2025-01-02", "2025-04-17", "2025-04-21", "2025-06-20", "2025-12-26", "2026-01-02",
        "2026-04-06", "2026-07-06", "2027-03-25", "2027-07-06", "2027-12-27",
        "2027-12-31",  // New Year's Day 2028 is a Saturday: NYSE does not close the Friday before
        "2025-01-09",  // the national day of mourning for President Carter is no rule holiday
        "2021-06-18",  // Juneteenth became an NYSE holiday only in 2022
    };
    const market_calendar cal = market_calendar::nyse();
    for (const char* d : trading_days) {
        CAPTURE(d);
        // 17:00Z is 12:00 EST or 13:00 EDT.
        CHECK(cal.is_open(at((std::string(d) + "T17:00:00Z").c_str())));
    }
}

TEST_CASE("the regular session is the half-open interval from 09:30 to 16:00 Eastern") {
    struct row {
        const char* utc;
        bool open;
    };
    const row rows[] = {
        // Wednesday 2025-01-15, EST (UTC-5).
        {"2025-01-15T14:29:59.999Z", false},  // 09:29:59.999
        {"2025-01-15T14:30:00.000Z", true},   // 09:30:00.000
        {"2025-01-15T20:59:59.999Z", true},   // 15:59:59.999
        {"2025-01-15T21:00:00.000Z", false},  // 16:00:00.000
        {"2025-01-16T04:00:00.000Z", false},  // 23:00 the evening before
        // Wednesday 2025-07-16, EDT (UTC-4).
        {"2025-07-16T13:29:59.999Z", false},  // 09:29:59.999
        {"2025-07-16T13:30:00.000Z", true},   // 09:30:00.000
        {"2025-07-16T19:59:59.999Z", true},   // 15:59:59.999
        {"2025-07-16T20:00:00.000Z", false},  // 16:00:00.000
    };
    const market_calendar cal = market_calendar::nyse();
    for (const auto& r : rows) {
        CAPTURE(r.utc);
        CHECK(cal.is_open(at(r.utc)) == r.open);
    }
}

TEST_CASE("the trading days either side of a DST switch open at 09:30 local time") {
    struct row {
        const char* utc;
        bool open;
    };
    const row rows[] = {
        // DST starts Sunday 2025-03-09: Friday the 7th is EST, Monday the 10th EDT.
        {"2025-03-07T13:30:00.000Z", false},  // 08:30 EST
        {"2025-03-07T14:30:00.000Z", true},   // 09:30 EST
        {"2025-03-07T20:59:59.999Z", true},   // 15:59:59.999 EST
        {"2025-03-07T21:00:00.000Z", false},  // 16:00 EST
        {"2025-03-10T13:29:59.999Z", false},  // 09:29:59.999 EDT
        {"2025-03-10T13:30:00.000Z", true},   // 09:30 EDT
        {"2025-03-10T19:59:59.999Z", true},   // 15:59:59.999 EDT
        {"2025-03-10T20:00:00.000Z", false},  // 16:00 EDT
        // DST ends Sunday 2025-11-02: Friday 2025-10-31 is EDT, Monday 2025-11-03 EST.
        {"2025-10-31T13:30:00.000Z", true},   // 09:30 EDT
        {"2025-10-31T20:00:00.000Z", false},  // 16:00 EDT
        {"2025-11-03T13:30:00.000Z", false},  // 08:30 EST
        {"2025-11-03T14:29:59.999Z", false},  // 09:29:59.999 EST
        {"2025-11-03T14:30:00.000Z", true},   // 09:30 EST
        {"2025-11-03T20:30:00.000Z", true},   // 15:30 EST
        {"2025-11-03T21:00:00.000Z", false},  // 16:00 EST
        // 2026 switches: Sunday March 8 and Sunday November 1.
        {"2026-03-09T13:30:00.000Z", true},   // Monday 09:30 EDT
        {"2026-11-02T13:30:00.000Z", false},  // Monday 08:30 EST
        {"2026-11-02T14:30:00.000Z", true},   // Monday 09:30 EST
    };
    const market_calendar cal = market_calendar::nyse();
    for (const auto& r : rows) {
        CAPTURE(r.utc);
        CHECK(cal.is_open(at(r.utc)) == r.open);
    }
}

TEST_CASE("the Eastern offset switches at 02:00 local time on the DST switch days") {
    constexpr std::int64_t edt = -4 * 3'600'000, est = -5 * 3'600'000;
    struct row {
        const char* utc;
        std::int64_t offset_ms;
    };
    const row rows[] = {
        {"2025-03-09T06:59:59.999Z", est},  // 01:59:59.999 EST
        {"2025-03-09T07:00:00.000Z", edt},  // 03:00 EDT: 02:00-03:00 never happens
        {"2025-11-02T05:59:59.999Z", edt},  // 01:59:59.999 EDT
        {"2025-11-02T06:00:00.000Z", est},  // 01:00 EST: the hour repeats
        {"2026-03-08T07:00:00.000Z", edt},
        {"2026-11-01T06:00:00.000Z", est},
        {"2025-01-01T04:59:59.999Z", est},  // New Year's Eve, local
        {"2025-07-01T12:00:00.000Z", edt},
    };
    for (const auto& r : rows) {
        CAPTURE(r.utc);
        CHECK(eastern_utc_offset_ms(at(r.utc)) == r.offset_ms);
    }
}

TEST_CASE("weekends are closed") {
    const char* weekend_days[] = {"2025-03-08", "2025-03-09", "2025-11-01", "2025-11-02",
                                  "2026-01-03", "2026-07-04", "2027-12-25"};
    const market_calendar cal = market_calendar::nyse();
    for (const char* d : weekend_days) {
        CAPTURE(d);
        CHECK_FALSE(open_at_any_half_hour(cal, d));
    }
}

TEST_CASE("early-close days end the session at 13:00 Eastern") {
    struct row {
        const char* utc;
        bool open;
    };
    const row rows[] = {
        // Friday after Thanksgiving 2025 (EST).
        {"2025-11-28T14:30:00.000Z", true},   // 09:30
        {"2025-11-28T17:59:59.999Z", true},   // 12:59:59.999
        {"2025-11-28T18:00:00.000Z", false},  // 13:00
        {"2025-11-28T20:00:00.000Z", false},  // 15:00
        // Thursday 2025-07-03, the day before Independence Day (EDT).
        {"2025-07-03T16:59:59.999Z", true},   // 12:59:59.999
        {"2025-07-03T17:00:00.000Z", false},  // 13:00
        // Christmas Eve 2025 (Wednesday) and 2026 (Thursday).
        {"2025-12-24T17:59:59.999Z", true},
        {"2025-12-24T18:00:00.000Z", false},
        {"2026-12-24T18:00:00.000Z", false},
        // Friday after Thanksgiving 2026 and 2027.
        {"2026-11-27T17:59:59.999Z", true},
        {"2026-11-27T18:00:00.000Z", false},
        {"2027-11-26T18:00:00.000Z", false},
        // An ordinary day around them runs to 16:00.
        {"2025-12-23T20:59:59.999Z", true},
    };
    const market_calendar cal = market_calendar::nyse();
    for (const auto& r : rows) {
        CAPTURE(r.utc);
        CHECK(cal.is_open(at(r.utc)) == r.open);
    }
}

TEST_CASE("next_open gives the instant itself during a session and the next opening otherwise") {
    struct row {
        const char* now;
        const char* expected;
    };
    const row rows[] = {
        {"2025-01-15T15:00:00.000Z", "2025-01-15T15:00:00.000Z"},  // open: now
        {"2025-01-15T10:00:00.000Z", "2025-01-15T14:30:00.000Z"},  // 05:00 EST: today 09:30
        {"2025-01-15T21:00:00.000Z", "2025-01-16T14:30:00.000Z"},  // at the close: tomorrow
        {"2025-11-28T18:00:00.000Z", "2025-12-01T14:30:00.000Z"},  // after an early close
        {"2025-03-08T12:00:00.000Z", "2025-03-10T13:30:00.000Z"},  // over the DST weekend
        {"2025-04-17T20:00:00.000Z", "2025-04-21T13:30:00.000Z"},  // over Good Friday
        {"2025-12-25T15:00:00.000Z", "2025-12-26T14:30:00.000Z"},  // Christmas Day
        {"2025-12-31T23:00:00.000Z", "2026-01-02T14:30:00.000Z"},  // 18:00 ET New Year's Eve
        {"2026-07-02T20:00:00.000Z", "2026-07-06T13:30:00.000Z"},  // over observed July 4th
    };
    const market_calendar cal = market_calendar::nyse();
    for (const auto& r : rows) {
        CAPTURE(r.now);
        const auto next = cal.next_open(at(r.now));
        REQUIRE(next.has_value());
        CHECK(format_rfc3339_ms(*next) == r.expected);
    }
}

TEST_CASE("next_open gives up when no session starts within the search bound") {
    market_calendar cal = market_calendar::nyse();
    for (int i = 0; i < 30; ++i) {
        cal.add_holiday(year_month_day{sys_days{date("2025-02-03")} + days{i}});
    }
    CHECK_FALSE(cal.next_open(at("2025-02-03T12:00:00Z")).has_value());
    CHECK_FALSE(market_calendar::nyse().next_open(-1).has_value());
    CHECK_FALSE(market_calendar::nyse().next_open(calendar_end_ms).has_value());
}

TEST_CASE("the always-open calendar is open at every instant") {
    const market_calendar cal = market_calendar::always_open();
    for (const char* t : {"2025-12-25T12:00:00Z", "2025-03-08T03:00:00Z", "2025-01-15T21:00:00Z"}) {
        CAPTURE(t);
        CHECK(cal.is_open(at(t)));
        CHECK(cal.next_open(at(t)) == at(t));
    }
}

TEST_CASE("added holidays and early closes change a day the rules leave alone") {
    market_calendar cal = market_calendar::nyse();
    cal.add_holiday(date("2025-01-09"));  // national day of mourning for President Carter
    cal.add_early_close(date("2025-01-10"));
    CHECK_FALSE(open_at_any_half_hour(cal, "2025-01-09"));
    CHECK(cal.next_open(at("2025-01-09T15:00:00Z")) == at("2025-01-10T14:30:00Z"));
    CHECK(cal.is_open(at("2025-01-10T17:59:59.999Z")));
    CHECK_FALSE(cal.is_open(at("2025-01-10T18:00:00Z")));
    // A holiday wins over an early close on the same day.
    cal.add_early_close(date("2025-01-09"));
    CHECK_FALSE(open_at_any_half_hour(cal, "2025-01-09"));
}

TEST_CASE("a holidays file adds its days to the NYSE rules") {
    const auto cal = market_calendar::parse_holidays(
        "# special closures\n"
        "\n"
        "2025-01-09 holiday   # national day of mourning\r\n"
        "  2025-01-10\tearly_close\n"
        "2025-12-25 holiday\n"  // a rule holiday may be listed again
        "2025-01-13 holiday");  // no final newline
    REQUIRE(cal.has_value());
    CHECK_FALSE(open_at_any_half_hour(*cal, "2025-01-09"));
    CHECK_FALSE(cal->is_open(at("2025-01-10T18:00:00Z")));
    CHECK(cal->is_open(at("2025-01-10T17:00:00Z")));
    CHECK_FALSE(open_at_any_half_hour(*cal, "2025-01-13"));
    CHECK_FALSE(open_at_any_half_hour(*cal, "2025-12-25"));
    CHECK(cal->is_open(at("2025-01-14T17:00:00Z")));
    // The rules still apply.
    CHECK_FALSE(open_at_any_half_hour(*cal, "2025-01-20"));

    const auto empty = market_calendar::parse_holidays("");
    REQUIRE(empty.has_value());
    CHECK(empty->is_open(at("2025-01-09T17:00:00Z")));
}

TEST_CASE("a malformed holidays file is refused with an error naming the line") {
    struct row {
        const char* text;
        const char* error_contains;
    };
    const row rows[] = {
        {"2025-01-09", "line 1: expected \"YYYY-MM-DD holiday\""},
        {"# ok\n2025-01-09 holiday extra", "line 2: expected"},
        {"\n\n2025-1-09 holiday", "line 3: \"2025-1-09\" is not a date"},
        {"2025-02-30 holiday", "line 1: \"2025-02-30\" is not a date"},
        {"2025/01/09 holiday", "is not a date"},
        {"1969-12-31 holiday", "line 1: 1969-12-31 is before 1970"},
        {"2025-01-09 closed", "line 1: unknown kind \"closed\""},
        {"2025-01-09 Holiday", "unknown kind"},
        {"2026-07-04 holiday", "line 1: 2026-07-04 is a Saturday"},
        {"2025-03-09 early_close", "2025-03-09 is a Sunday"},
        {"2025-12-25 early_close", "line 1: 2025-12-25 is an NYSE holiday"},
        {"2025-01-09 holiday\n2025-01-09 early_close",
         "line 2: 2025-01-09 is already listed on line 1"},
    };
    for (const auto& r : rows) {
        CAPTURE(r.text);
        const auto cal = market_calendar::parse_holidays(r.text);
        REQUIRE_FALSE(cal.has_value());
        CAPTURE(cal.error());
        CHECK(cal.error().find(r.error_contains) != std::string::npos);
    }
}

TEST_CASE("a holidays file with more entries than the limit is refused") {
    std::string text;
    sys_days d{date("2030-01-01")};
    std::size_t entries = 0;
    while (entries <= holiday_file_entries_max) {
        const weekday wd{d};
        if (wd != Saturday && wd != Sunday) {
            const year_month_day ymd{d};
            text += fmt::format("{:04}-{:02}-{:02} holiday\n", static_cast<int>(ymd.year()),
                                static_cast<unsigned>(ymd.month()),
                                static_cast<unsigned>(ymd.day()));
            ++entries;
        }
        d += days{1};
    }
    const auto cal = market_calendar::parse_holidays(text);
    REQUIRE_FALSE(cal.has_value());
    CHECK(cal.error().find("more than 1000 entries") != std::string::npos);
}
