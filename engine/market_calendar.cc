#include "engine/market_calendar.h"

#include <array>
#include <map>

#include <fmt/format.h>

#include "engine/assert.h"

namespace broker {

namespace {
using namespace std::chrono;

constexpr std::int64_t hour_ms = 3'600'000;
constexpr std::int64_t day_ms = 24 * hour_ms;
constexpr std::int64_t session_open_ms = 9 * hour_ms + 30 * 60'000;  // 09:30
constexpr std::int64_t regular_close_ms = 16 * hour_ms;              // 16:00
constexpr std::int64_t early_close_ms = 13 * hour_ms;                // 13:00
constexpr std::int64_t edt_offset_ms = -4 * hour_ms;
constexpr std::int64_t est_offset_ms = -5 * hour_ms;

static_assert(calendar_end_ms ==
              sys_days{year{10000} / January / 1}.time_since_epoch().count() * day_ms);

// Floor division, so that instants before midnight UTC of day 0 land in the right day.
std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

bool in_range(timestamp_ms t) { return t >= calendar_min_ms && t < calendar_end_ms; }

timestamp_ms start_of(sys_days d) { return d.time_since_epoch().count() * day_ms; }

// Easter Sunday by the anonymous Gregorian algorithm (Meeus/Jones/Butcher).
sys_days easter_sunday(year y) {
    const int Y = static_cast<int>(y);
    const int a = Y % 19, b = Y / 100, c = Y % 100, d = b / 4, e = b % 4;
    const int f = (b + 8) / 25, g = (b - f + 1) / 3;
    const int h = (19 * a + b - d - g + 15) % 30;
    const int i = c / 4, k = c % 4;
    const int l = (32 + 2 * e + 2 * i - h - k) % 7;
    const int m = (a + 11 * h + 22 * l) / 451;
    const int mon = (h + l - 7 * m + 114) / 31;
    const int day_of_month = (h + l - 7 * m + 114) % 31 + 1;
    BROKER_ASSERT(mon == 3 || mon == 4);
    const year_month_day ymd{y, month{static_cast<unsigned>(mon)},
                             day{static_cast<unsigned>(day_of_month)}};
    BROKER_ASSERT(ymd.ok());
    return sys_days{ymd};
}

// NYSE weekend observance of a fixed-date holiday (New Year's Day is handled by its caller).
sys_days observed(sys_days d) {
    const weekday wd{d};
    if (wd == Saturday) return d - days{1};
    if (wd == Sunday) return d + days{1};
    return d;
}

// The observed full-day holidays of one year. No observed date leaves its year: Saturday New
// Year's Day is not moved back to December 31, and Christmas moves at most to December 24 or 26.
struct year_holidays {
    std::array<sys_days, 10> dates{};
    std::size_t count = 0;

    void add(sys_days d) {
        BROKER_ASSERT(count < dates.size());
        dates[count++] = d;
    }
    [[nodiscard]] bool contains(sys_days d) const {
        for (std::size_t i = 0; i < count; ++i) {
            if (dates[i] == d) return true;
        }
        return false;
    }
};

year_holidays nyse_holidays(year y) {
    year_holidays h;
    const sys_days new_year{y / January / 1};
    if (weekday{new_year} != Saturday) h.add(observed(new_year));
    h.add(sys_days{y / January / Monday[3]});     // Martin Luther King Jr. Day
    h.add(sys_days{y / February / Monday[3]});    // Washington's Birthday
    h.add(easter_sunday(y) - days{2});            // Good Friday
    h.add(sys_days{y / May / Monday[last]});      // Memorial Day
    if (y >= year{2022}) h.add(observed(sys_days{y / June / 19}));  // Juneteenth
    h.add(observed(sys_days{y / July / 4}));      // Independence Day
    h.add(sys_days{y / September / Monday[1]});   // Labor Day
    h.add(sys_days{y / November / Thursday[4]});  // Thanksgiving
    h.add(observed(sys_days{y / December / 25}));  // Christmas
    return h;
}

bool is_weekend(sys_days d) {
    const weekday wd{d};
    return wd == Saturday || wd == Sunday;
}

bool is_rule_holiday(sys_days d) { return nyse_holidays(year_month_day{d}.year()).contains(d); }

// The UTC instant of `ms_of_day` local time on Eastern date `d`. Valid for local times outside
// 01:00-03:00, which on switch days are skipped or repeated; the calendar only asks for 09:30.
timestamp_ms eastern_to_utc(sys_days d, std::int64_t ms_of_day) {
    BROKER_ASSERT(ms_of_day >= 3 * hour_ms && ms_of_day < day_ms);
    const timestamp_ms local = start_of(d) + ms_of_day;
    const timestamp_ms if_dst = local - edt_offset_ms;
    const timestamp_ms utc =
        eastern_utc_offset_ms(if_dst) == edt_offset_ms ? if_dst : local - est_offset_ms;
    BROKER_ASSERT(utc + eastern_utc_offset_ms(utc) == local);
    return utc;
}

// Strict "YYYY-MM-DD" with a real calendar date.
std::optional<year_month_day> parse_date(std::string_view s) {
    if (s.size() != 10 || s[4] != '-' || s[7] != '-') return std::nullopt;
    int parts[3] = {0, 0, 0};
    const std::size_t starts[3] = {0, 5, 8}, lengths[3] = {4, 2, 2};
    for (int p = 0; p < 3; ++p) {
        for (std::size_t i = starts[p]; i < starts[p] + lengths[p]; ++i) {
            if (s[i] < '0' || s[i] > '9') return std::nullopt;
            parts[p] = parts[p] * 10 + (s[i] - '0');
        }
    }
    const year_month_day ymd{year{parts[0]}, month{static_cast<unsigned>(parts[1])},
                             day{static_cast<unsigned>(parts[2])}};
    if (!ymd.ok()) return std::nullopt;
    return ymd;
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// Splits on blanks; at most `out.size()` tokens are kept, the return value counts all of them.
std::size_t split_tokens(std::string_view line, std::array<std::string_view, 2>& out) {
    std::size_t n = 0, i = 0;
    while (i < line.size()) {
        while (i < line.size() && is_blank(line[i])) ++i;
        if (i == line.size()) break;
        const std::size_t start = i;
        while (i < line.size() && !is_blank(line[i])) ++i;
        if (n < out.size()) out[n] = line.substr(start, i - start);
        ++n;
    }
    return n;
}

// The offending text for an error message, cut so that a garbage file cannot produce a huge one.
std::string excerpt(std::string_view s) {
    constexpr std::size_t excerpt_max = 60;
    if (s.size() <= excerpt_max) return std::string(s);
    return fmt::format("{}...", s.substr(0, excerpt_max));
}

}  // namespace

std::int64_t eastern_utc_offset_ms(timestamp_ms t) {
    if (!in_range(t)) return est_offset_ms;
    // The UTC year is the right one to look up: no switch happens near New Year.
    const year y = year_month_day{sys_days{days{floor_div(t, day_ms)}}}.year();
    // 02:00 EST = 07:00Z when DST starts; 02:00 EDT = 06:00Z when it ends.
    const timestamp_ms dst_start = start_of(sys_days{y / March / Sunday[2]}) + 7 * hour_ms;
    const timestamp_ms dst_end = start_of(sys_days{y / November / Sunday[1]}) + 6 * hour_ms;
    return t >= dst_start && t < dst_end ? edt_offset_ms : est_offset_ms;
}

market_calendar market_calendar::always_open() { return market_calendar{true}; }

market_calendar market_calendar::nyse() { return market_calendar{false}; }

bool market_calendar::is_holiday(sys_days d) const {
    return is_rule_holiday(d) || added_holidays_.contains(d);
}

bool market_calendar::is_trading_day(sys_days d) const { return !is_weekend(d) && !is_holiday(d); }

bool market_calendar::is_early_close(sys_days d) const {
    if (added_early_closes_.contains(d)) return true;
    const year_month_day ymd{d};
    const year y = ymd.year();
    if (d == sys_days{y / November / Thursday[4]} + days{1}) return true;
    // The rule's "when a trading day" needs no check: on a weekend or holiday is_open never asks.
    return ymd == y / July / 3 || ymd == y / December / 24;
}

bool market_calendar::is_open(timestamp_ms t) const {
    if (always_open_) return true;
    if (!in_range(t)) return false;
    const timestamp_ms local = t + eastern_utc_offset_ms(t);
    const sys_days d{days{floor_div(local, day_ms)}};
    const std::int64_t ms_of_day = local - start_of(d);
    BROKER_ASSERT(ms_of_day >= 0 && ms_of_day < day_ms);
    if (!is_trading_day(d) || ms_of_day < session_open_ms) return false;
    return ms_of_day < (is_early_close(d) ? early_close_ms : regular_close_ms);
}

std::optional<timestamp_ms> market_calendar::next_open(timestamp_ms t) const {
    if (always_open_) return t;
    if (!in_range(t)) return std::nullopt;
    if (is_open(t)) return t;
    const sys_days today{days{floor_div(t + eastern_utc_offset_ms(t), day_ms)}};
    for (int i = 0; i <= next_open_search_days_max; ++i) {
        const sys_days d = today + days{i};
        if (!is_trading_day(d)) continue;
        const timestamp_ms open = eastern_to_utc(d, session_open_ms);
        // Today's opening may already be behind us (t is after today's close).
        if (open > t) return in_range(open) ? std::optional{open} : std::nullopt;
    }
    return std::nullopt;
}

void market_calendar::add_holiday(year_month_day d) {
    BROKER_ASSERT(d.ok());
    added_holidays_.insert(sys_days{d});
}

void market_calendar::add_early_close(year_month_day d) {
    BROKER_ASSERT(d.ok());
    added_early_closes_.insert(sys_days{d});
}

result<market_calendar, std::string> market_calendar::parse_holidays(std::string_view text) {
    market_calendar cal = nyse();
    std::map<sys_days, std::size_t> first_line;  // date -> line that listed it
    std::size_t line_no = 0;
    auto fail = [&](const std::string& what) {
        return unexpected{fmt::format("holidays line {}: {}", line_no, what)};
    };
    while (!text.empty()) {
        ++line_no;
        const std::size_t eol = text.find('\n');
        std::string_view line = text.substr(0, eol);
        text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
        if (const std::size_t hash = line.find('#'); hash != std::string_view::npos) {
            line = line.substr(0, hash);
        }
        std::array<std::string_view, 2> tok;
        const std::size_t n = split_tokens(line, tok);
        if (n == 0) continue;
        if (n != 2) {
            return fail(fmt::format(
                "expected \"YYYY-MM-DD holiday\" or \"YYYY-MM-DD early_close\", got \"{}\"",
                excerpt(line)));
        }
        const std::optional<year_month_day> ymd = parse_date(tok[0]);
        if (!ymd) return fail(fmt::format("\"{}\" is not a date YYYY-MM-DD", excerpt(tok[0])));
        if (ymd->year() < year{1970}) return fail(fmt::format("{} is before 1970", tok[0]));
        const bool holiday = tok[1] == "holiday";
        if (!holiday && tok[1] != "early_close") {
            return fail(fmt::format("unknown kind \"{}\"; expected holiday or early_close",
                                    excerpt(tok[1])));
        }
        const sys_days d{*ymd};
        if (is_weekend(d)) {
            return fail(fmt::format("{} is a {}; the market is closed on weekends anyway", tok[0],
                                    weekday{d} == Saturday ? "Saturday" : "Sunday"));
        }
        if (!holiday && is_rule_holiday(d)) {
            return fail(fmt::format("{} is an NYSE holiday; an early close there has no effect",
                                    tok[0]));
        }
        if (const auto [it, fresh] = first_line.emplace(d, line_no); !fresh) {
            return fail(fmt::format("{} is already listed on line {}", tok[0], it->second));
        }
        if (first_line.size() > holiday_file_entries_max) {
            return fail(fmt::format("more than {} entries", holiday_file_entries_max));
        }
        if (holiday) {
            cal.add_holiday(*ymd);
        } else {
            cal.add_early_close(*ymd);
        }
    }
    return cal;
}

}  // namespace broker
