// HS256 JWTs: see jwt.h for the checks and their order.
//
// Crypto is OpenSSL's (HMAC, CRYPTO_memcmp, EVP_EncodeBlock/EVP_DecodeBlock); JSON is simdjson's
// DOM parser through its error-code API, so no simdjson exception can escape. Everything a token
// carries is bounded by jwt_token_max before it is decoded.
#include "api/jwt.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <simdjson.h>

#include <array>
#include <climits>
#include <cmath>

#include "engine/assert.h"
#include "engine/types.h"

namespace broker::api {

namespace {

using digest = std::array<unsigned char, 32>;  // SHA-256 output

// False only for an empty or absurdly long key, or if OpenSSL itself fails; callers fail closed.
[[nodiscard]] bool hmac_sha256(std::string_view key, std::string_view data, digest& out) {
    if (key.empty() || key.size() > static_cast<std::size_t>(INT_MAX)) return false;
    unsigned int out_len = 0;
    const unsigned char* written = HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                                        reinterpret_cast<const unsigned char*>(data.data()),
                                        data.size(), out.data(), &out_len);
    return written != nullptr && out_len == out.size();
}

[[nodiscard]] bool is_base64url_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

// One parser per thread: reusing its buffers keeps verification allocation-light, and a thread
// never shares it, so verify_jwt stays thread-safe. Its capacity is bounded like the token.
[[nodiscard]] simdjson::dom::parser& json_parser() {
    thread_local simdjson::dom::parser parser{jwt_token_max};
    return parser;
}

struct token_parts {
    std::string_view header;
    std::string_view payload;
    std::string_view signature;
    std::string_view signing_input;  // "header.payload", the bytes the HMAC covers
};

// Exactly three parts: "a.b.c". An empty header or payload cannot be a JSON object, so it is
// malformed; an empty signature (what "alg":"none" tokens carry) is left to fail as a wrong one.
[[nodiscard]] std::optional<token_parts> split_token(std::string_view token) {
    const std::size_t first = token.find('.');
    if (first == std::string_view::npos) return std::nullopt;
    const std::size_t second = token.find('.', first + 1);
    if (second == std::string_view::npos) return std::nullopt;
    if (token.find('.', second + 1) != std::string_view::npos) return std::nullopt;
    token_parts parts{token.substr(0, first), token.substr(first + 1, second - first - 1),
                      token.substr(second + 1), token.substr(0, second)};
    if (parts.header.empty() || parts.payload.empty()) return std::nullopt;
    return parts;
}

// The header decides only whether we go on: nullopt means "alg is HS256 and nothing we do not
// understand is required of us".
[[nodiscard]] std::optional<jwt_error> check_header(std::string_view json) {
    simdjson::dom::element doc;
    if (json_parser().parse(json.data(), json.size()).get(doc)) return jwt_error::malformed;
    simdjson::dom::object object;
    if (doc.get_object().get(object)) return jwt_error::malformed;
    int alg_count = 0;
    bool alg_ok = false;
    for (const simdjson::dom::key_value_pair field : object) {
        // RFC 7515 4.1.11: a recipient must refuse a token whose "crit" names extensions it does
        // not implement; we implement none (e.g. RFC 7797's unencoded payloads).
        if (field.key == "crit") return jwt_error::malformed;
        if (field.key != "alg") continue;
        ++alg_count;
        std::string_view alg;
        alg_ok = !field.value.get_string().get(alg) && alg == "HS256";
    }
    // A duplicated "alg" could be read differently by another parser in front of us; RFC 7515
    // section 4 lets us refuse it.
    if (alg_count > 1) return jwt_error::malformed;
    if (!alg_ok) return jwt_error::unsupported_algorithm;
    return std::nullopt;
}

[[nodiscard]] bool signature_matches(std::string_view signing_input, std::string_view given,
                                     std::string_view secret) {
    digest expected{};
    if (given.size() != expected.size()) return false;
    if (!hmac_sha256(secret, signing_input, expected)) return false;
    // Constant time, so response timing does not reveal how many leading bytes were right.
    return CRYPTO_memcmp(given.data(), expected.data(), expected.size()) == 0;
}

// A NumericDate claim (RFC 7519 2: seconds since the epoch, "non-integer values can be
// represented"), as the whole second from which it has passed: now >= date exactly when
// now >= ceil(date), for the whole seconds brokerd compares with. False when it is not a number.
[[nodiscard]] bool numeric_date(simdjson::dom::element value, std::int64_t& out) {
    if (!value.get_int64().get(out)) return true;
    double seconds = 0;
    if (value.get_double().get(seconds)) return false;
    // Past the int64 range either way (a uint64 above INT64_MAX lands here too): the far future
    // or past, which is what such a date means.
    if (seconds >= 9.2e18) {
        out = INT64_MAX;
    } else if (seconds <= -9.2e18) {
        out = INT64_MIN;
    } else {
        out = static_cast<std::int64_t>(std::ceil(seconds));
    }
    return true;
}

// Reads the claims of an authenticated payload. Claim types are checked before claim values so
// that a token we cannot fully read is malformed, whatever its expiry or subject.
[[nodiscard]] result<claims, jwt_error> read_claims(std::string_view json, std::int64_t now) {
    simdjson::dom::element doc;
    if (json_parser().parse(json.data(), json.size()).get(doc)) {
        return unexpected{jwt_error::malformed};
    }
    simdjson::dom::object object;
    if (doc.get_object().get(object)) return unexpected{jwt_error::malformed};

    claims out;
    bool has_sub = false, sub_is_string = false, has_exp = false, has_iat = false, has_role = false;
    bool has_nbf = false;
    std::int64_t nbf = 0;
    for (const simdjson::dom::key_value_pair field : object) {
        // Duplicated claims are refused (RFC 7519 section 4 allows that or "last one wins"), so
        // that no other parser in front of us can read a different claim than we do.
        if (field.key == "sub") {
            if (has_sub) return unexpected{jwt_error::malformed};
            has_sub = true;
            std::string_view sub;
            sub_is_string = !field.value.get_string().get(sub);
            if (sub_is_string) out.sub = std::string{sub};
        } else if (field.key == "exp") {
            if (has_exp || !numeric_date(field.value, out.exp)) {
                return unexpected{jwt_error::malformed};
            }
            has_exp = true;
        } else if (field.key == "nbf") {
            if (has_nbf || !numeric_date(field.value, nbf)) {
                return unexpected{jwt_error::malformed};
            }
            has_nbf = true;
        } else if (field.key == "iat") {
            if (has_iat || !numeric_date(field.value, out.iat)) {
                return unexpected{jwt_error::malformed};
            }
            has_iat = true;
        } else if (field.key == "role") {
            std::string_view role;
            if (has_role || field.value.get_string().get(role)) {
                return unexpected{jwt_error::malformed};
            }
            has_role = true;
            out.role = std::string{role};
        }
    }
    if (has_exp && now >= out.exp) return unexpected{jwt_error::expired};
    if (has_nbf && now < nbf) return unexpected{jwt_error::not_yet_valid};
    if (!has_sub) return unexpected{jwt_error::missing_subject};
    if (!sub_is_string || !valid_customer_id(out.sub)) {
        return unexpected{jwt_error::invalid_subject};
    }
    return out;
}

// JSON string literal for claims we emit. Only '"', '\\' and control characters need escaping;
// other bytes are copied, so invalid UTF-8 in a claim yields a token verify_jwt refuses.
[[nodiscard]] std::string json_quote(std::string_view text) {
    std::string out;
    out.reserve(text.size() + 2);
    out += '"';
    for (const char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            out += fmt::format("\\u{:04x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
        } else {
            out += c;
        }
    }
    out += '"';
    return out;
}

}  // namespace

std::string_view to_string(jwt_error e) {
    switch (e) {
        case jwt_error::malformed:
            return "token_malformed";
        case jwt_error::unsupported_algorithm:
            return "token_unsupported_algorithm";
        case jwt_error::bad_signature:
            return "token_bad_signature";
        case jwt_error::expired:
            return "token_expired";
        case jwt_error::not_yet_valid:
            return "token_not_yet_valid";
        case jwt_error::missing_subject:
            return "token_missing_subject";
        case jwt_error::invalid_subject:
            return "token_invalid_subject";
    }
    return "token_invalid";  // unreachable for valid enumerators; keeps the function total
}

std::string base64url_encode(std::string_view bytes) {
    // EVP_EncodeBlock takes an int length; tokens and callback bodies are far below that.
    BROKER_ASSERT(bytes.size() <= static_cast<std::size_t>(INT_MAX / 4 * 3 - 3));
    std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');  // +1: EVP_EncodeBlock writes a NUL
    const int written = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                        reinterpret_cast<const unsigned char*>(bytes.data()),
                                        static_cast<int>(bytes.size()));
    BROKER_ASSERT(written >= 0);
    out.resize(static_cast<std::size_t>(written));
    while (!out.empty() && out.back() == '=') out.pop_back();
    for (char& c : out) {
        if (c == '+') c = '-';
        if (c == '/') c = '_';
    }
    return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
    // A remainder of one character would carry only 6 bits: not a whole byte, so never valid.
    if (text.size() % 4 == 1) return std::nullopt;
    if (text.size() > static_cast<std::size_t>(INT_MAX) - 3) return std::nullopt;
    // Validate first: EVP_DecodeBlock would otherwise skip leading/trailing whitespace and accept
    // the standard alphabet and '=' too.
    std::string padded;
    padded.reserve(text.size() + 3);
    for (const char c : text) {
        if (!is_base64url_char(c)) return std::nullopt;
        padded += c == '-' ? '+' : c == '_' ? '/' : c;
    }
    const std::size_t pad = (4 - text.size() % 4) % 4;
    padded.append(pad, '=');

    std::string out(padded.size() / 4 * 3, '\0');
    const int written = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                        reinterpret_cast<const unsigned char*>(padded.data()),
                                        static_cast<int>(padded.size()));
    // EVP_DecodeBlock counts the zero bytes that padding stands for: drop one per '=' we added.
    if (written < 0 || static_cast<std::size_t>(written) != out.size()) return std::nullopt;
    out.resize(out.size() - pad);
    // Canonical form only: unused low bits in the last character must be zero, otherwise several
    // texts (and so several signatures) would decode to the same bytes. Re-encoding is the
    // simplest exact test of that.
    if (base64url_encode(out) != text) return std::nullopt;
    return out;
}

std::string sign_jws_hs256(std::string_view header_json, std::string_view payload_json,
                           std::string_view secret) {
    BROKER_ASSERT(!secret.empty());
    std::string token = base64url_encode(header_json);
    token += '.';
    token += base64url_encode(payload_json);
    digest mac{};
    const bool signed_ok = hmac_sha256(secret, token, mac);
    BROKER_ASSERT(signed_ok);
    token += '.';
    token +=
        base64url_encode(std::string_view{reinterpret_cast<const char*>(mac.data()), mac.size()});
    return token;
}

std::string sign_jwt(const claims& c, std::string_view secret) {
    std::string payload = "{\"sub\":" + json_quote(c.sub);
    if (c.exp != 0) payload += fmt::format(",\"exp\":{}", c.exp);
    if (c.iat != 0) payload += fmt::format(",\"iat\":{}", c.iat);
    if (!c.role.empty()) payload += ",\"role\":" + json_quote(c.role);
    payload += '}';
    return sign_jws_hs256(R"({"alg":"HS256","typ":"JWT"})", payload, secret);
}

result<claims, jwt_error> verify_jwt(std::string_view token, std::string_view secret,
                                     std::int64_t now_seconds) {
    if (token.size() > jwt_token_max) return unexpected{jwt_error::malformed};
    const std::optional<token_parts> parts = split_token(token);
    if (!parts) return unexpected{jwt_error::malformed};

    const std::optional<std::string> header = base64url_decode(parts->header);
    if (!header) return unexpected{jwt_error::malformed};
    if (const std::optional<jwt_error> refused = check_header(*header)) {
        return unexpected{*refused};
    }
    // The signature's encoding is checked apart from its value so that garbage reads as malformed,
    // and a well-formed but wrong signature as bad_signature.
    const std::optional<std::string> signature = base64url_decode(parts->signature);
    if (!signature) return unexpected{jwt_error::malformed};
    if (!signature_matches(parts->signing_input, *signature, secret)) {
        return unexpected{jwt_error::bad_signature};
    }

    // Authenticated from here on: the payload was written by a holder of the secret.
    const std::optional<std::string> payload = base64url_decode(parts->payload);
    if (!payload) return unexpected{jwt_error::malformed};
    return read_claims(*payload, now_seconds);
}

}  // namespace broker::api
