// When the US equity market is open: NYSE's regular session, holidays and early closes.
//
// The node asks `is_open(now)` before a placement reaches the engine (a closed market rejects it
// with market_closed) and `next_open(now)` for the error message. Pure and deterministic: time
// comes in as an argument, nothing reads a clock, a time zone database or a file (the caller reads
// the holidays file and hands its text to `parse_holidays`). Const members are safe to call from
// any number of threads; add_holiday / add_early_close are not, so configure the calendar before
// sharing it.
//
// `nyse()` computes NYSE's published rules for every year:
//   - regular session [09:30, 16:00) America/New_York, Monday to Friday; early closes end at 13:00;
//   - Eastern Time by the US DST rule in force since 2007 (UTC-4 from the second Sunday of March
//     02:00 local to the first Sunday of November 02:00 local, UTC-5 otherwise), computed
//     arithmetically, never from tzdata;
//   - full-day holidays: New Year's Day, Martin Luther King Jr. Day (3rd Monday of January),
//     Washington's Birthday (3rd Monday of February), Good Friday, Memorial Day (last Monday of
//     May), Juneteenth (from 2022), Independence Day, Labor Day (1st Monday of September),
//     Thanksgiving (4th Thursday of November) and Christmas. A holiday on a Saturday is observed
//     the Friday before, except New Year's Day, which is then not observed at all (NYSE stays open
//     on December 31); a holiday on a Sunday is observed the Monday after;
//   - early closes at 13:00: July 3 and December 24 when they are trading days, and the day after
//     Thanksgiving.
// The rules are today's, applied to every year: dates before 2007 (older DST rule, no MLK Day
// before 1998, ...) are not historically accurate.
//
// Special closures that no rule predicts (national days of mourning such as 2025-01-09, storms
// such as 2012-10-29/30) and unscheduled early closes are added with add_holiday /
// add_early_close, or listed in the holidays file read by parse_holidays.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "engine/result.h"
#include "engine/types.h"

namespace broker {

// next_open looks this many days past the day of `t` before giving up. The longest NYSE closure in
// modern times (after 2001-09-11) lasted four trading days, so nullopt means a misconfiguration.
inline constexpr int next_open_search_days_max = 14;
// Entries a holidays file may hold: decades of special closures, while bounding memory.
inline constexpr std::size_t holiday_file_entries_max = 1'000;
// The instants the NYSE calendar handles: [1970-01-01T00:00Z, 10000-01-01T00:00Z). Outside it
// the market is closed and next_open is nullopt (it keeps the calendar arithmetic in range).
inline constexpr timestamp_ms calendar_min_ms = 0;
inline constexpr timestamp_ms calendar_end_ms = 253'402'300'800'000;

// Offset of America/New_York from UTC at instant `t`: -4 h during DST, -5 h otherwise, by the
// 2007 US rule. Switches at 07:00Z on the second Sunday of March and at 06:00Z on the first Sunday
// of November. Outside [calendar_min_ms, calendar_end_ms) it is -5 h.
[[nodiscard]] std::int64_t eastern_utc_offset_ms(timestamp_ms t);

class market_calendar {
public:
    // Open at every instant; for development and simulations. Added days have no effect on it.
    [[nodiscard]] static market_calendar always_open();
    // NYSE's regular session, holidays and early closes as described above.
    [[nodiscard]] static market_calendar nyse();

    // Whether `t` lies in a session: [09:30, close) Eastern on a trading day, where close is 13:00
    // on an early-close day and 16:00 otherwise.
    [[nodiscard]] bool is_open(timestamp_ms t) const;
    // `t` itself when the market is open at `t`; otherwise the next session's opening instant, if
    // one starts within next_open_search_days_max days after the Eastern date of `t`.
    [[nodiscard]] std::optional<timestamp_ms> next_open(timestamp_ms t) const;

    // Closes the market all day on the Eastern date `d`, on top of the rules. `d` must be valid.
    void add_holiday(std::chrono::year_month_day d);
    // Ends the session at 13:00 Eastern on `d`; a holiday on the same day wins. `d` must be valid.
    void add_early_close(std::chrono::year_month_day d);

    // nyse() plus the days listed in `text`, one per line:
    //     # comment (a '#' starts a comment anywhere on a line)
    //     2025-01-09 holiday        # national day of mourning
    //     2026-11-27 early_close
    // Blank lines are ignored. Errors name the line: a malformed line or date, a year before 1970,
    // a kind other than holiday/early_close, a Saturday or Sunday, an early_close on a day NYSE's
    // rules already close, a date listed twice, or more than holiday_file_entries_max entries.
    // Listing a rule holiday as a holiday is accepted, so NYSE's published list can be pasted in.
    [[nodiscard]] static result<market_calendar, std::string> parse_holidays(std::string_view text);

private:
    explicit market_calendar(bool always_open) : always_open_(always_open) {}

    [[nodiscard]] bool is_holiday(std::chrono::sys_days d) const;
    [[nodiscard]] bool is_trading_day(std::chrono::sys_days d) const;
    // Whether a session on `d` ends at 13:00; only meaningful on a trading day.
    [[nodiscard]] bool is_early_close(std::chrono::sys_days d) const;

    bool always_open_ = false;
    std::set<std::chrono::sys_days> added_holidays_;
    std::set<std::chrono::sys_days> added_early_closes_;
};

}  // namespace broker
