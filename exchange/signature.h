// The exchange callback signature: `X-Exchange-Signature: t=<unix seconds>,v1=<hex HMAC>`.
//
// A networked exchange POSTs fills to our callback URL and signs each one with the shared exchange
// secret, in the style of Stripe's webhook signatures:
//
//   header  = "t=" seconds "," "v1=" mac *( "," key "=" value )
//   seconds = 1..12 decimal digits, no sign, no leading zero        (Unix seconds)
//   mac     = 64 lowercase hex digits of HMAC-SHA256(secret, seconds "." body)
//
// The HMAC covers the timestamp exactly as written in the header, so the timestamp cannot be moved
// without the secret. Extra `key=value` parts after v1 are ignored so that the exchange can add
// fields later; a second `t` or `v1` is refused, as is any whitespace.
//
// `exchange-sim` and tests call `sign_callback`; the API's `POST /v1/exchange/callbacks` handler
// calls `verify_callback` with the raw header value (empty when absent), the raw body and the
// current time, and answers 401 on any error.
//
// Thread-safety: both functions are pure (time comes in as an argument) and safe to call from any
// number of threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/result.h"

namespace broker::exchange {

// A longer header is malformed before it is parsed; a real one is 80 bytes.
inline constexpr std::size_t signature_header_max = 512;
// The shortest secret brokerd and exchange-sim accept: RFC 2104 section 3 discourages HMAC keys
// shorter than the hash's output (32 bytes for SHA-256), and a guessable callback secret lets
// anyone forge fills. `openssl rand -hex 32` gives 64 characters.
inline constexpr std::size_t callback_secret_min_bytes = 32;
// Default window for clock skew and delivery delay between the exchange and us, as Stripe uses.
inline constexpr std::int64_t signature_tolerance_seconds_default = 300;

// Returns the header value for a callback `body` sent at `t_seconds`. Preconditions (asserted):
// non-empty secret, 0 <= t_seconds < 10^12.
[[nodiscard]] std::string sign_callback(std::string_view secret, std::int64_t t_seconds,
                                        std::string_view body);

enum class signature_error {
    missing,    // no header, or an empty one
    malformed,  // not the grammar above
    mismatch,   // well-formed, but not signed with our secret over this body and timestamp
    stale,      // genuinely signed, but |now - t| > tolerance: a replay or a badly skewed clock
};

// snake_case detail for logs and API error messages, e.g. "signature_stale".
[[nodiscard]] std::string_view to_string(signature_error e);

// Checks `header` against `body` at `now_seconds`. The MAC is checked before the time, so `stale`
// always means "really from the exchange, but too old or too new" (worth an alert about clocks),
// never "forged". An empty secret verifies nothing (mismatch). Precondition (asserted):
// 0 <= tolerance_seconds <= 10^12. Never throws and never asserts on any header or body.
[[nodiscard]] result<ok_t, signature_error> verify_callback(
    std::string_view secret, std::string_view header, std::string_view body,
    std::int64_t now_seconds, std::int64_t tolerance_seconds = signature_tolerance_seconds_default);

}  // namespace broker::exchange
