#include "engine/time.h"

#include <chrono>

#include <fmt/format.h>

namespace broker {

namespace {
using namespace std::chrono;

// Floor division, so that instants before 1970 land in the right day.
std::int64_t floor_div(std::int64_t a, std::int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

bool digits(std::string_view s, std::size_t pos, std::size_t n, int& out) {
    if (pos + n > s.size()) return false;
    out = 0;
    for (std::size_t i = pos; i < pos + n; ++i) {
        if (s[i] < '0' || s[i] > '9') return false;
        out = out * 10 + (s[i] - '0');
    }
    return true;
}
}  // namespace

std::string format_rfc3339_ms(timestamp_ms t) {
    const std::int64_t day = floor_div(t, 86'400'000);
    const std::int64_t ms_of_day = t - day * 86'400'000;
    const year_month_day ymd{sys_days{days{day}}};
    const int year = static_cast<int>(ymd.year());
    if (year < 0 || year > 9999) {
        return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", year,
                           static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                           ms_of_day / 3'600'000, ms_of_day / 60'000 % 60, ms_of_day / 1000 % 60,
                           ms_of_day % 1000);
    }
    // Every trade JSON carries two of these: fixed-width digits by hand, not a format string.
    std::string out = "0000-00-00T00:00:00.000Z";
    const auto put = [&out](std::size_t at, std::int64_t v, int width) {
        for (int i = width - 1; i >= 0; --i, v /= 10) {
            out[at + static_cast<std::size_t>(i)] = static_cast<char>('0' + v % 10);
        }
    };
    put(0, year, 4);
    put(5, static_cast<unsigned>(ymd.month()), 2);
    put(8, static_cast<unsigned>(ymd.day()), 2);
    put(11, ms_of_day / 3'600'000, 2);
    put(14, ms_of_day / 60'000 % 60, 2);
    put(17, ms_of_day / 1000 % 60, 2);
    put(20, ms_of_day % 1000, 3);
    return out;
}

std::optional<timestamp_ms> parse_rfc3339_ms(std::string_view s) {
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0;
    if (s.size() < 20 || s.size() > 30) return std::nullopt;
    if (!digits(s, 0, 4, y) || s[4] != '-' || !digits(s, 5, 2, mo) || s[7] != '-' ||
        !digits(s, 8, 2, d) || s[10] != 'T' || !digits(s, 11, 2, h) || s[13] != ':' ||
        !digits(s, 14, 2, mi) || s[16] != ':' || !digits(s, 17, 2, se)) {
        return std::nullopt;
    }
    std::size_t pos = 19;
    int ms = 0;
    if (s[pos] == '.') {
        ++pos;
        std::size_t n = 0;
        while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
            if (n < 3) ms = ms * 10 + (s[pos] - '0');
            ++n;
            ++pos;
        }
        if (n == 0 || n > 9) return std::nullopt;
        for (; n < 3; ++n) ms *= 10;
    }
    if (pos + 1 != s.size() || s[pos] != 'Z') return std::nullopt;
    const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
    if (!ymd.ok() || h > 23 || mi > 59 || se > 59) return std::nullopt;
    const std::int64_t days_since_epoch = sys_days{ymd}.time_since_epoch().count();
    return days_since_epoch * 86'400'000 + h * 3'600'000LL + mi * 60'000LL + se * 1000LL + ms;
}

}  // namespace broker
