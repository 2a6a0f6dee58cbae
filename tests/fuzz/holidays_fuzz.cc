// libFuzzer target: the holidays file parser (engine/market_calendar.h
// market_calendar::parse_holidays) and the calendar it builds.
//
// brokerd reads the holidays file at start-up (--holidays); it is operator-edited text, pasted from
// NYSE's notices, so it gets typos, CRLF line ends, stray bytes and dates far from today. The
// parser promises an error naming the line for anything malformed, never an assertion, and a
// calendar that only ever closes more than NYSE's rules do.
//
// Input layout: the whole input is the file's text (no mode byte).
//
// Properties (a violation traps):
//   - an error reads "holidays line N: ..." with 1 <= N <= the number of lines, and stays short
//     (the offending text is cut, so a garbage file cannot produce a huge message);
//   - a file that parses parses the same with a trailing newline added (one more, empty line);
//   - the calendar agrees with an independent reading of every entry: on each listed date (an
//     Eastern date), a `holiday` is closed all session long, an `early_close` is open at 10:00
//     and 12:59 and closed at 13:00 and 15:00 Eastern;
//   - around each listed date and at the instants the input's first bytes name, the calendar
//     never opens where nyse() is closed, and next_open answers an open instant, not before the
//     one asked about and within next_open_search_days_max + 1 days of it.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/market_calendar.h"

namespace {

using namespace broker;
using namespace std::chrono;

[[noreturn]] void fail(const char* what, std::string_view detail = {}) {
    std::fprintf(stderr, "holidays_fuzz: property violated: %s\n", what);
    if (!detail.empty()) {
        std::fprintf(stderr, "  %.*s\n", static_cast<int>(detail.size()), detail.data());
    }
    std::fflush(stderr);
    __builtin_trap();
}

constexpr std::int64_t minute_ms = 60'000;
constexpr std::int64_t hour_ms = 60 * minute_ms;
constexpr std::int64_t day_ms = 24 * hour_ms;

struct entry {
    year_month_day date;
    bool holiday = false;
};

bool blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// An independent reading of a file that parse_holidays accepted: every non-blank line, its
// comment removed, is "DATE KIND". Returns nullopt when a line does not have that shape, which
// after a successful parse is itself a violation.
std::optional<std::vector<entry>> entries_of(std::string_view text) {
    std::vector<entry> out;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t eol = text.find('\n', start);
        if (eol == std::string_view::npos) eol = text.size();
        std::string_view line = text.substr(start, eol - start);
        start = eol + 1;
        line = line.substr(0, line.find('#'));
        std::vector<std::string_view> words;
        std::size_t i = 0;
        while (i < line.size()) {
            while (i < line.size() && blank(line[i])) ++i;
            const std::size_t w = i;
            while (i < line.size() && !blank(line[i])) ++i;
            if (i > w) words.push_back(line.substr(w, i - w));
        }
        if (words.empty()) continue;
        if (words.size() != 2 || words[0].size() != 10) return std::nullopt;
        int y = 0, m = 0, d = 0;
        if (std::sscanf(std::string(words[0]).c_str(), "%4d-%2d-%2d", &y, &m, &d) != 3) {
            return std::nullopt;
        }
        const year_month_day ymd{year{y}, month{static_cast<unsigned>(m)},
                                 day{static_cast<unsigned>(d)}};
        if (!ymd.ok()) return std::nullopt;
        if (words[1] != "holiday" && words[1] != "early_close") return std::nullopt;
        out.push_back(entry{ymd, words[1] == "holiday"});
    }
    return out;
}

// The UTC instant of `local_ms` after midnight Eastern on `d` (for times away from 01:00-03:00,
// where DST switches).
timestamp_ms eastern(year_month_day d, std::int64_t local_ms) {
    const timestamp_ms local = sys_days{d}.time_since_epoch().count() * day_ms + local_ms;
    const timestamp_ms if_dst = local + 4 * hour_ms;
    return eastern_utc_offset_ms(if_dst) == -4 * hour_ms ? if_dst : local + 5 * hour_ms;
}

void check_instant(const market_calendar& cal, const market_calendar& rules, timestamp_ms t) {
    const bool open = cal.is_open(t);
    if (open && !rules.is_open(t)) fail("the holidays file opened the market");
    const auto next = cal.next_open(t);
    if (!next) return;
    if (*next < t) fail("next_open before the instant asked about");
    if (!cal.is_open(*next)) fail("next_open is not open");
    if (open && *next != t) fail("next_open of an open instant is not itself");
    if (*next - t > (next_open_search_days_max + 2) * day_ms) fail("next_open too far ahead");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // An exactly sized copy, so that ASan catches a read one byte past the end.
    const std::vector<char> bytes(data, data + size);
    const std::string_view text(bytes.data(), bytes.size());
    const auto parsed = market_calendar::parse_holidays(text);
    if (!parsed) {
        const std::string& e = parsed.error();
        unsigned long line = 0;
        int consumed = 0;
        if (std::sscanf(e.c_str(), "holidays line %lu: %n", &line, &consumed) != 1 ||
            consumed == 0) {
            fail("error does not name its line", e);
        }
        const std::size_t lines = static_cast<std::size_t>(
            std::count(text.begin(), text.end(), '\n') + (text.empty() || text.back() != '\n'));
        if (line < 1 || line > lines) fail("error names a line the file does not have", e);
        if (e.size() > 300) fail("error message is not cut short", e);
        return 0;
    }

    const market_calendar& cal = *parsed;
    static const market_calendar rules = market_calendar::nyse();
    if (!market_calendar::parse_holidays(std::string(text) + "\n")) {
        fail("a trailing newline turned a good file bad");
    }
    const auto entries = entries_of(text);
    if (!entries) fail("accepted a line that is not \"DATE KIND\"");
    if (entries->size() > holiday_file_entries_max) fail("accepted too many entries");

    for (const entry& x : *entries) {
        if (x.date.year() < year{1970}) fail("accepted a date before 1970");
        const weekday wd{sys_days{x.date}};
        if (wd == Saturday || wd == Sunday) fail("accepted a weekend date");
        const auto at = [&](int h, int m) { return eastern(x.date, h * hour_ms + m * minute_ms); };
        if (x.holiday) {
            for (const auto t : {at(9, 30), at(10, 0), at(12, 59), at(15, 59)}) {
                if (cal.is_open(t)) fail("open on a listed holiday");
            }
        } else {
            if (!cal.is_open(at(10, 0)) || !cal.is_open(at(12, 59))) {
                fail("closed in the morning of a listed early close");
            }
            if (cal.is_open(at(13, 0)) || cal.is_open(at(15, 0))) {
                fail("open after 13:00 on a listed early close");
            }
        }
        for (const int h : {0, 9, 13, 16, 23}) check_instant(cal, rules, at(h, 30));
    }
    // A few instants named by the input itself, anywhere in (and around) the calendar's range.
    for (std::size_t i = 0; i + 8 <= size && i < 64; i += 8) {
        std::int64_t t = 0;
        std::memcpy(&t, data + i, sizeof t);
        check_instant(cal, rules, t % (calendar_end_ms + day_ms));
    }
    return 0;
}
