// Command-line checks the binaries share, for what CLI11 2.1's own checks let through.
#pragma once

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdint>
#include <string>

namespace broker::cli {

// A number in [min, max]. CLI::Range passes NaN, since every comparison with it is false: a
// rate of `nan` would then silently mean something else (a rate limit that is off, say).
inline CLI::Validator finite_range(double min, double max) {
    return CLI::Validator(
        [min, max](std::string& input) -> std::string {
            double value = 0;
            if (!CLI::detail::lexical_cast(input, value) || !(value >= min && value <= max)) {
                return "Value " + input + " not in range [" + CLI::detail::to_string(min) + " - " +
                       CLI::detail::to_string(max) + "]";
            }
            return {};
        },
        "FLOAT in [" + CLI::detail::to_string(min) + " - " + CLI::detail::to_string(max) + "]");
}

// An unsigned 64-bit count in decimal digits. CLI11 2.1 reads such options with strtoull,
// which takes "-1" as 2^64 - 1 and a number past 2^64 as 2^64 - 1, both without a word.
inline CLI::Validator unsigned_64() {
    return CLI::Validator(
        [](std::string& input) -> std::string {
            std::uint64_t value = 0;
            const char* end = input.data() + input.size();
            const auto [at, ec] = std::from_chars(input.data(), end, value);
            if (input.empty() || ec != std::errc{} || at != end) {
                return "Value " + input + " is not a whole number from 0 to 18446744073709551615";
            }
            return {};
        },
        "UINT64");
}

}  // namespace broker::cli
