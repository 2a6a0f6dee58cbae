// JSON for the client API: rendering with fmt, parsing with simdjson (DOM, which validates the
// whole document and its UTF-8 before we look at a field).
//
// Rendering follows the contract in DESIGN.md: money as decimal strings with four places, times as
// RFC 3339 UTC with milliseconds, nulls where a value is not known yet. Thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/services.h"
#include "engine/result.h"
#include "engine/state.h"

namespace broker::api {

[[nodiscard]] std::string json_escape(std::string_view text);
// Appends `text` JSON-escaped (without quotes) to `out`.
void append_json_escaped(std::string& out, std::string_view text);
[[nodiscard]] std::string error_json(std::string_view code, std::string_view message);
// Client text (a field, parameter or symbol name) as an error message quotes it: at most
// echo_max bytes, cut where no UTF-8 sequence is split, with "..." when cut. Not escaped here:
// error_json escapes the whole message.
inline constexpr std::size_t echo_max = 64;
[[nodiscard]] std::string echoed(std::string_view text);
[[nodiscard]] std::string trade_json(const trade& t);
// Appends the trade JSON object to `out` (what trade_json returns).
void append_trade_json(std::string& out, const trade& t);
[[nodiscard]] std::string account_json(const account_view& a);
[[nodiscard]] std::string positions_json(const account_view& a);

// One field of a flat JSON object, as parsed.
struct json_value {
    // User-provided so that clang (the fuzz build) can instantiate the vector of pairs of
    // json_value below without asking whether the type is still incomplete.
    json_value();

    enum class kind : std::uint8_t { null, boolean, integer, number, string, object, array };
    kind type = kind::null;
    std::int64_t integer = 0;   // kind::integer (fits in int64)
    bool out_of_range = false;  // an integer literal too large for int64
    std::string text;           // kind::string
    std::vector<std::pair<std::string, json_value>> members;  // kind::object (one level deep)
};

struct json_error {
    std::string code;  // invalid_json, duplicate_field, ...
    std::string message;
};

// Parses a JSON object of scalar fields (and, where `allow_nested` is set, objects of scalars one
// level down, e.g. "positions":{"AAPL":10}). Rejects invalid JSON and UTF-8, non-objects,
// duplicate keys, deeper nesting and more than 32 fields.
[[nodiscard]] result<std::vector<std::pair<std::string, json_value>>, json_error> parse_object(
    std::string_view body, bool allow_nested = false);

}  // namespace broker::api
