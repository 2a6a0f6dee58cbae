// Exchange callback signatures: see signature.h for the grammar.
//
// HMAC (EVP_MAC) and the constant-time comparison are OpenSSL's; parsing is a strict hand-written scanner of
// the small grammar in the header, bounded by signature_header_max.
#include "exchange/signature.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

#include <array>
#include <climits>
#include <memory>
#include <optional>

#include "engine/assert.h"

namespace broker::exchange {

namespace {

// 12 digits reach the year 33658 and keep every sum with the tolerance far from overflow.
constexpr std::size_t seconds_digits_max = 12;
constexpr std::int64_t seconds_bound = 1'000'000'000'000;  // 10^12
constexpr std::size_t mac_hex_size = 64;

// HMAC-SHA256 keyed once per thread: OpenSSL 3 looks the algorithm up by name on every
// one-shot HMAC() call and redoes the key schedule, which cost more than hashing a callback body.
// A thread keeps the fetched algorithm and a context already keyed with the last secret it used,
// and copies that context for each MAC.
class keyed_hmac {
public:
    keyed_hmac() = default;
    keyed_hmac(const keyed_hmac&) = delete;
    keyed_hmac& operator=(const keyed_hmac&) = delete;
    ~keyed_hmac() {
        EVP_MAC_CTX_free(keyed_);
        EVP_MAC_free(mac_);
    }

    // The context for `secret`, keyed; null only if OpenSSL fails.
    [[nodiscard]] EVP_MAC_CTX* for_secret(std::string_view secret) {
        if (keyed_ != nullptr && secret == secret_) return keyed_;
        if (mac_ == nullptr) mac_ = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
        if (mac_ == nullptr) return nullptr;
        EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac_);
        if (ctx == nullptr) return nullptr;
        char digest[] = "SHA256";
        const OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
            OSSL_PARAM_construct_end()};
        if (EVP_MAC_init(ctx, reinterpret_cast<const unsigned char*>(secret.data()),
                         secret.size(), params) != 1) {
            EVP_MAC_CTX_free(ctx);
            return nullptr;
        }
        EVP_MAC_CTX_free(keyed_);
        keyed_ = ctx;
        secret_.assign(secret);
        return keyed_;
    }

private:
    EVP_MAC* mac_ = nullptr;
    EVP_MAC_CTX* keyed_ = nullptr;
    std::string secret_;
};

// Lowercase hex of HMAC-SHA256(secret, t "." body); nullopt only for an empty or absurdly long
// secret, or if OpenSSL itself fails, so that callers can fail closed.
[[nodiscard]] std::optional<std::string> mac_hex(std::string_view secret, std::string_view t_text,
                                                 std::string_view body) {
    if (secret.empty() || secret.size() > static_cast<std::size_t>(INT_MAX)) return std::nullopt;
    thread_local keyed_hmac cache;
    EVP_MAC_CTX* keyed = cache.for_secret(secret);
    if (keyed == nullptr) return std::nullopt;
    std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> ctx(EVP_MAC_CTX_dup(keyed),
                                                                  &EVP_MAC_CTX_free);
    if (!ctx) return std::nullopt;
    const auto feed = [&](std::string_view part) {
        return EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(part.data()),
                              part.size()) == 1;
    };
    std::array<unsigned char, 32> mac{};
    std::size_t mac_len = 0;
    if (!feed(t_text) || !feed(".") || !feed(body) ||
        EVP_MAC_final(ctx.get(), mac.data(), &mac_len, mac.size()) != 1 || mac_len != mac.size()) {
        return std::nullopt;
    }
    static constexpr char digits[] = "0123456789abcdef";
    std::string hex(mac_hex_size, '\0');
    for (std::size_t i = 0; i < mac.size(); ++i) {
        hex[2 * i] = digits[mac[i] >> 4];
        hex[2 * i + 1] = digits[mac[i] & 0x0f];
    }
    return hex;
}

struct parsed_header {
    std::string_view t_text;
    std::int64_t t = 0;
    std::string_view mac;
};

// Takes the next comma-separated part off `rest`.
[[nodiscard]] std::string_view next_part(std::string_view& rest) {
    const std::size_t comma = rest.find(',');
    const std::string_view part = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    return part;
}

[[nodiscard]] std::optional<std::int64_t> parse_seconds(std::string_view digits) {
    if (digits.empty() || digits.size() > seconds_digits_max) return std::nullopt;
    // One spelling per number: the MAC covers the text, and the log should show what was checked.
    if (digits.size() > 1 && digits.front() == '0') return std::nullopt;
    std::int64_t value = 0;
    for (const char c : digits) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + (c - '0');
    }
    return value;
}

[[nodiscard]] bool is_lower_hex(std::string_view text) {
    for (const char c : text) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

[[nodiscard]] std::optional<parsed_header> parse_header(std::string_view header) {
    if (header.empty() || header.size() > signature_header_max) return std::nullopt;
    // next_part cannot tell "a," from "a", so a trailing comma is refused here.
    if (header.back() == ',') return std::nullopt;
    std::string_view rest = header;
    parsed_header out;

    const std::string_view t_part = next_part(rest);
    if (!t_part.starts_with("t=")) return std::nullopt;
    out.t_text = t_part.substr(2);
    const std::optional<std::int64_t> t = parse_seconds(out.t_text);
    if (!t) return std::nullopt;
    out.t = *t;

    const std::string_view v1_part = next_part(rest);
    if (!v1_part.starts_with("v1=")) return std::nullopt;
    out.mac = v1_part.substr(3);
    if (out.mac.size() != mac_hex_size || !is_lower_hex(out.mac)) return std::nullopt;

    // Trailing parts: "key=value" with a non-empty key and visible ASCII only, never another t or
    // v1 (which copy counts would depend on the reader), never an empty part from a stray comma.
    while (!rest.empty()) {
        const std::string_view part = next_part(rest);
        const std::size_t eq = part.find('=');
        if (eq == std::string_view::npos || eq == 0) return std::nullopt;
        const std::string_view key = part.substr(0, eq);
        if (key == "t" || key == "v1") return std::nullopt;
        for (const char c : part) {
            if (c < '!' || c > '~') return std::nullopt;
        }
    }
    return out;
}

}  // namespace

std::string_view to_string(signature_error e) {
    switch (e) {
        case signature_error::missing:
            return "signature_missing";
        case signature_error::malformed:
            return "signature_malformed";
        case signature_error::mismatch:
            return "signature_mismatch";
        case signature_error::stale:
            return "signature_stale";
    }
    return "signature_invalid";  // unreachable for valid enumerators; keeps the function total
}

std::string sign_callback(std::string_view secret, std::int64_t t_seconds, std::string_view body) {
    BROKER_ASSERT(!secret.empty());
    BROKER_ASSERT(t_seconds >= 0 && t_seconds < seconds_bound);
    const std::string t_text = fmt::format("{}", t_seconds);
    const std::optional<std::string> mac = mac_hex(secret, t_text, body);
    BROKER_ASSERT(mac.has_value());
    return fmt::format("t={},v1={}", t_text, *mac);
}

result<ok_t, signature_error> verify_callback(std::string_view secret, std::string_view header,
                                              std::string_view body, std::int64_t now_seconds,
                                              std::int64_t tolerance_seconds) {
    BROKER_ASSERT(tolerance_seconds >= 0 && tolerance_seconds <= seconds_bound);
    if (header.empty()) return unexpected{signature_error::missing};
    const std::optional<parsed_header> parsed = parse_header(header);
    if (!parsed) return unexpected{signature_error::malformed};

    const std::optional<std::string> expected = mac_hex(secret, parsed->t_text, body);
    // Constant time over the hex text: both sides are 64 lowercase hex digits, so comparing text
    // is comparing MACs, and timing does not reveal how many leading digits were right.
    if (!expected || CRYPTO_memcmp(expected->data(), parsed->mac.data(), mac_hex_size) != 0) {
        return unexpected{signature_error::mismatch};
    }
    // t < 10^12 and tolerance <= 10^12, so neither bound can overflow, whatever now_seconds is.
    if (now_seconds < parsed->t - tolerance_seconds ||
        now_seconds > parsed->t + tolerance_seconds) {
        return unexpected{signature_error::stale};
    }
    return ok_v;
}

}  // namespace broker::exchange
