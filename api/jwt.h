// JSON Web Tokens signed with HS256 (RFC 7519 over RFC 7515 compact serialization).
//
// Customers authenticate to the client API with `Authorization: Bearer <JWT>` (or `?access_token=`
// on the WebSocket upgrade). The API's auth step calls `verify_jwt` once per request or upgrade
// with the node's secret and the current time; `brokerctl token` and `brokerd --demo` call
// `sign_jwt` to mint tokens. Only HS256 is accepted: the algorithm is fixed by the server, never
// chosen by the token, and no key is ever taken from the token header (`kid`, `jwk`, `jku` are
// ignored), which closes the classic "alg":"none" and algorithm-confusion attacks.
//
// What `verify_jwt` checks, in this order (the first failure is the result):
//   1. at most `jwt_token_max` bytes, three dot-separated parts         -> malformed
//   2. the header is unpadded, canonical base64url of a JSON object without
//      `crit` and without a repeated "alg"                             -> malformed
//      whose "alg" is exactly "HS256"                                   -> unsupported_algorithm
//   3. the signature is canonical base64url                             -> malformed
//      of HMAC-SHA256 over "header.payload", compared in constant time  -> bad_signature
//   4. only then the payload is read: canonical base64url of a JSON object;
//      `exp`, `nbf`, `iat` numbers (RFC 7519 NumericDate: a fraction is
//      rounded up to the next whole second) and `role` a string when
//      present; no claim given twice                                    -> malformed
//   5. `exp`, when present, is in the future (`now >= exp` is expired)  -> expired
//   6. `nbf`, when present, is not in the future (`now < nbf`)          -> not_yet_valid
//   7. `sub` is present                                                 -> missing_subject
//      and a valid customer id (engine/types.h)                         -> invalid_subject
// Tokens without `exp` are accepted because RFC 7519 makes it optional and only holders of the
// secret can mint them; `brokerctl token` always sets one (default TTL one hour). `nbf` is honoured
// as RFC 7519 4.1.5 requires, with no leeway (as for `exp`): an issuer whose clock runs ahead
// mints tokens that are refused until brokerd's clock reaches their `nbf`. `iss` and `aud` are not
// used by brokerd's tokens and are ignored.
//
// Thread-safety: both functions are pure (time comes in as an argument) and safe to call from any
// number of threads at once; the JSON parser they use is thread-local.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "engine/result.h"

namespace broker::api {

// A token longer than this is refused as malformed before any decoding, so a hostile header costs
// a bounded amount of work. Real tokens are ~200 bytes.
inline constexpr std::size_t jwt_token_max = 4096;

struct claims {
    std::string sub;       // the customer id
    std::string role;      // "" for a customer, "admin" for /admin/... (other values grant nothing)
    std::int64_t exp = 0;  // expiry, Unix seconds; 0 when the token has none
    std::int64_t iat = 0;  // issued at, Unix seconds; 0 when the token has none
};

enum class jwt_error {
    malformed,
    unsupported_algorithm,
    bad_signature,
    expired,
    not_yet_valid,
    missing_subject,
    invalid_subject,
};

// snake_case detail for API error messages, e.g. "token_expired".
[[nodiscard]] std::string_view to_string(jwt_error e);

// Verifies `token` with `secret` (arbitrary bytes) at `now_seconds` (Unix seconds) and returns its
// claims. An empty secret verifies nothing (every token is bad_signature) rather than accepting
// tokens signed with an empty key. Never throws and never asserts on any input.
[[nodiscard]] result<claims, jwt_error> verify_jwt(std::string_view token, std::string_view secret,
                                                   std::int64_t now_seconds);

// Mints a token with header {"alg":"HS256","typ":"JWT"} and payload, in this order, "sub", "exp"
// (omitted when 0), "iat" (omitted when 0), "role" (omitted when empty). Strings are JSON-escaped,
// so any claims can be signed; whether they verify is `verify_jwt`'s decision. Precondition: the
// secret is non-empty (asserted: minting with an empty key is a programmer error).
[[nodiscard]] std::string sign_jwt(const claims& c, std::string_view secret);

// Lower-level pieces, exposed for tests (which must craft tokens `sign_jwt` would never produce)
// and for other token-like formats. RFC 4648 section 5 alphabet, no padding.
[[nodiscard]] std::string base64url_encode(std::string_view bytes);
// Strict: refuses padding, whitespace, characters outside the alphabet, impossible lengths and
// non-canonical encodings (non-zero unused bits), so each byte string has exactly one text form.
[[nodiscard]] std::optional<std::string> base64url_decode(std::string_view text);
// base64url(header_json) "." base64url(payload_json) "." base64url(HMAC-SHA256), taking the JSON
// texts verbatim. Precondition: non-empty secret.
[[nodiscard]] std::string sign_jws_hs256(std::string_view header_json,
                                         std::string_view payload_json, std::string_view secret);

}  // namespace broker::api
