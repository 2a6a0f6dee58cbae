// RFC 3339 timestamps with millisecond precision, UTC: "2026-11-22T14:30:05.123Z".
//
// Pure conversions between timestamp_ms and text (the engine never reads a clock). Used by the API
// for trade JSON and by the exchange protocol for executed_at. Thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "engine/types.h"

namespace broker {

[[nodiscard]] std::string format_rfc3339_ms(timestamp_ms t);
// Accepts "YYYY-MM-DDTHH:MM:SSZ" and "YYYY-MM-DDTHH:MM:SS.fffZ" (1 to 9 fraction digits,
// truncated to milliseconds). Anything else, including offsets other than Z, is nullopt.
[[nodiscard]] std::optional<timestamp_ms> parse_rfc3339_ms(std::string_view text);

}  // namespace broker
