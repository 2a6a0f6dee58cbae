// HS256 JWT verification: what is accepted, and that everything else is refused with the right
// error. Known-answer vectors were computed outside this code base (openssl CLI, RFC 7515, jwt.io).
#include "api/jwt.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

using broker::api::base64url_decode;
using broker::api::base64url_encode;
using broker::api::claims;
using broker::api::jwt_error;
using broker::api::sign_jws_hs256;
using broker::api::sign_jwt;
using broker::api::verify_jwt;

constexpr std::string_view secret = "test-secret-with-enough-entropy-0123456789";
constexpr std::int64_t now = 1'700'000'000;
constexpr std::string_view hs256_header = R"({"alg":"HS256","typ":"JWT"})";

claims alice(std::int64_t exp = now + 3600) {
    claims c;
    c.sub = "alice";
    c.exp = exp;
    c.iat = now;
    return c;
}

// The error of a token that must be refused; fails the test if it was accepted.
std::optional<jwt_error> refusal(std::string_view token, std::string_view key = secret,
                                 std::int64_t at = now) {
    const auto verified = verify_jwt(token, key, at);
    if (verified.has_value()) return std::nullopt;
    return verified.error();
}

std::string signed_payload(std::string_view payload_json) {
    return sign_jws_hs256(hs256_header, payload_json, secret);
}

}  // namespace

// Failed checks print the refusal ("token_expired", or "accepted") instead of "{?}"; doctest
// prints the enum on the right-hand side as its number.
template <>
struct doctest::StringMaker<std::optional<jwt_error>> {
    static doctest::String convert(const std::optional<jwt_error>& e) {
        const std::string_view text = e ? to_string(*e) : "accepted";
        return doctest::String{text.data(), static_cast<unsigned>(text.size())};
    }
};

TEST_CASE("a token signed by sign_jwt verifies and yields its claims") {
    claims c = alice();
    c.role = "admin";
    const auto verified = verify_jwt(sign_jwt(c, secret), secret, now);
    REQUIRE(verified.has_value());
    CHECK(verified->sub == "alice");
    CHECK(verified->role == "admin");
    CHECK(verified->exp == now + 3600);
    CHECK(verified->iat == now);
}

TEST_CASE("a customer token without role verifies with an empty role") {
    const auto verified = verify_jwt(sign_jwt(alice(), secret), secret, now);
    REQUIRE(verified.has_value());
    CHECK(verified->role.empty());
}

TEST_CASE("sign_jwt produces exactly the token computed independently with the openssl CLI") {
    // printf '%s' "$H.$P" | openssl dgst -sha256 -hmac 'kat-secret-0123456789' -binary | base64url
    // with H = {"alg":"HS256","typ":"JWT"} and
    //      P = {"sub":"alice","exp":2000000000,"iat":1700000000,"role":"admin"}
    const std::string expected =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJzdWIiOiJhbGljZSIsImV4cCI6MjAwMDAwMDAwMCwiaWF0IjoxNzAwMDAwMDAwLCJyb2xlIjoiYWRtaW4ifQ."
        "c4gAOrOpIytDhfBBASTV9Ft3sEaHO8Edbn64f2jFSJg";
    claims c;
    c.sub = "alice";
    c.exp = 2'000'000'000;
    c.iat = 1'700'000'000;
    c.role = "admin";
    CHECK(sign_jwt(c, "kat-secret-0123456789") == expected);
    const auto verified = verify_jwt(expected, "kat-secret-0123456789", now);
    REQUIRE(verified.has_value());
    CHECK(verified->sub == "alice");
    CHECK(verified->role == "admin");
}

TEST_CASE("the jwt.io example token verifies: no exp is accepted and unknown claims are ignored") {
    const std::string_view token =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    const auto verified = verify_jwt(token, "your-256-bit-secret", now);
    REQUIRE(verified.has_value());
    CHECK(verified->sub == "1234567890");
    CHECK(verified->exp == 0);
    CHECK(verified->iat == 1'516'239'022);
}

TEST_CASE("the RFC 7515 A.1 example passes its signature check and then lacks a subject") {
    // Header {"typ":"JWT",\r\n "alg":"HS256"}, a binary key, exp 1300819380 and no "sub": the
    // signature is accepted, so the refusal is about the claims, not bad_signature.
    const std::string_view token =
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
        "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0"
        "cnVlfQ."
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const std::optional<std::string> key = base64url_decode(
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow");
    REQUIRE(key.has_value());
    CHECK(key->size() == 64);
    CHECK(refusal(token, *key, 1'300'000'000) == jwt_error::missing_subject);
    CHECK(refusal(token, *key, 1'300'819'380) == jwt_error::expired);
    CHECK(refusal(token, "another key", 1'300'000'000) == jwt_error::bad_signature);
}

TEST_CASE("a token signed with another secret is refused as bad_signature") {
    const std::string token = sign_jwt(alice(), "another-secret");
    CHECK(refusal(token) == jwt_error::bad_signature);
    // Secrets are bytes: a prefix, an extension or a one-byte change is a different key.
    std::string changed{secret};
    changed.back() ^= 1;
    CHECK(refusal(sign_jwt(alice(), changed)) == jwt_error::bad_signature);
    CHECK(refusal(sign_jwt(alice(), secret.substr(0, secret.size() - 1))) ==
          jwt_error::bad_signature);
    CHECK(refusal(sign_jwt(alice(), std::string{secret} + 'x')) == jwt_error::bad_signature);
    // Not a different key: HMAC (RFC 2104) pads short keys with zero bytes, so trailing NULs do
    // not change it. Secrets come from flags and the environment, which cannot carry NUL.
    CHECK(verify_jwt(sign_jwt(alice(), std::string{secret} + '\0'), secret, now).has_value());
}

TEST_CASE("an empty secret verifies nothing") {
    CHECK(refusal(sign_jwt(alice(), secret), "") == jwt_error::bad_signature);
}

TEST_CASE("secrets are arbitrary bytes, including NUL and non-UTF-8") {
    const std::string binary_secret{"\x00\xff\x10 key \x80\x00", 10};
    const auto verified = verify_jwt(sign_jwt(alice(), binary_secret), binary_secret, now);
    CHECK(verified.has_value());
}

TEST_CASE("a tampered payload is refused as bad_signature") {
    const std::string token = sign_jwt(alice(), secret);
    const std::size_t first = token.find('.');
    const std::size_t second = token.find('.', first + 1);
    claims bob = alice();
    bob.sub = "bob";
    const std::string forged_payload = sign_jwt(bob, secret).substr(first + 1);  // "P.S" of bob
    const std::string forged = token.substr(0, first + 1) +
                               forged_payload.substr(0, forged_payload.find('.')) +
                               token.substr(second);
    CHECK(refusal(forged) == jwt_error::bad_signature);
}

TEST_CASE("every single-character change to a valid token is refused") {
    const std::string token = sign_jwt(alice(), secret);
    REQUIRE(verify_jwt(token, secret, now).has_value());
    static constexpr char replacements[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \x00\xff";
    const std::string_view alphabet{replacements, sizeof replacements - 1};
    std::mt19937 rng{20240501};
    for (std::size_t i = 0; i < token.size(); ++i) {
        for (int attempt = 0; attempt < 4; ++attempt) {
            std::string mutated = token;
            const char replacement = alphabet[rng() % (alphabet.size())];
            if (replacement == token[i]) continue;
            mutated[i] = replacement;
            CAPTURE(i);
            CAPTURE(mutated);
            CHECK_FALSE(verify_jwt(mutated, secret, now).has_value());
        }
    }
}

TEST_CASE("a header with alg none is refused as unsupported_algorithm, signed or not") {
    const std::string payload = base64url_encode(R"({"sub":"alice"})");
    const std::string none_header = base64url_encode(R"({"alg":"none","typ":"JWT"})");
    CHECK(refusal(none_header + "." + payload + ".") == jwt_error::unsupported_algorithm);
    CHECK(refusal(sign_jws_hs256(R"({"alg":"none"})", R"({"sub":"alice"})", secret)) ==
          jwt_error::unsupported_algorithm);
}

TEST_CASE("an empty signature on an HS256 header is refused as bad_signature") {
    const std::string token = sign_jwt(alice(), secret);
    CHECK(refusal(token.substr(0, token.rfind('.') + 1)) == jwt_error::bad_signature);
}

TEST_CASE("algorithms other than exactly HS256 are refused as unsupported_algorithm") {
    for (const std::string_view header :
         {R"({"alg":"HS512","typ":"JWT"})", R"({"alg":"HS384"})", R"({"alg":"RS256"})",
          R"({"alg":"hs256"})", R"({"alg":"HS256 "})", R"({"alg":""})", R"({"alg":null})",
          R"({"alg":256})", R"({"alg":["HS256"]})", R"({"typ":"JWT"})", R"({})"}) {
        CAPTURE(header);
        // Signed with HS256 and the right key, so only the header can be the reason.
        CHECK(refusal(sign_jws_hs256(header, R"({"sub":"alice"})", secret)) ==
              jwt_error::unsupported_algorithm);
    }
}

TEST_CASE("headers that are not a plain JSON object with one alg are refused as malformed") {
    for (const std::string_view header :
         {R"(["HS256"])", R"("HS256")", R"({"alg":"HS256")", R"({"alg":"HS256"} x)", "",
          R"({"alg":"HS256","alg":"HS256"})", R"({"alg":"none","alg":"HS256"})",
          R"({"alg":"HS256","crit":["b64"],"b64":false})", "\xff\xfe"}) {
        CAPTURE(header);
        CHECK(refusal(sign_jws_hs256(header, R"({"sub":"alice"})", secret)) ==
              jwt_error::malformed);
    }
}

TEST_CASE("a token at or past its exp is refused as expired, one second before it verifies") {
    const std::string token = sign_jwt(alice(now + 60), secret);
    CHECK(verify_jwt(token, secret, now + 59).has_value());
    CHECK(refusal(token, secret, now + 60) == jwt_error::expired);
    CHECK(refusal(token, secret, now + 1'000'000) == jwt_error::expired);
}

TEST_CASE("a token before its nbf is refused as not_yet_valid, from its nbf on it verifies") {
    const std::string token =
        signed_payload(R"({"sub":"alice","nbf":1700000060,"exp":1700003600})");
    CHECK(refusal(token, secret, 1'700'000'000) == jwt_error::not_yet_valid);
    CHECK(refusal(token, secret, 1'700'000'059) == jwt_error::not_yet_valid);
    CHECK(verify_jwt(token, secret, 1'700'000'060).has_value());
    CHECK(verify_jwt(token, secret, 1'700'003'599).has_value());
    // Past exp, expired wins: the token will never be good.
    CHECK(refusal(token, secret, 1'700'003'600) == jwt_error::expired);
    // An nbf in the past or at the epoch admits the token.
    CHECK(verify_jwt(signed_payload(R"({"sub":"alice","nbf":0})"), secret, now).has_value());
    CHECK(verify_jwt(signed_payload(R"({"sub":"alice","nbf":-5})"), secret, now).has_value());
}

TEST_CASE("a not-yet-valid token is refused before its subject is judged") {
    CHECK(refusal(signed_payload(R"({"sub":"not valid","nbf":9000000000})")) ==
          jwt_error::not_yet_valid);
}

TEST_CASE("exp and nbf may have fractions (RFC 7519 NumericDate), counted up to whole seconds") {
    // exp now+59.5: still good at now+59, expired from now+60 on.
    const std::string token = signed_payload(R"({"sub":"alice","exp":1700000059.5})");
    CHECK(verify_jwt(token, secret, now + 59).has_value());
    CHECK(refusal(token, secret, now + 60) == jwt_error::expired);
    // nbf now+0.5: not yet at now, good from now+1 on.
    const std::string later = signed_payload(R"({"sub":"alice","nbf":1700000000.5})");
    CHECK(refusal(later, secret, now) == jwt_error::not_yet_valid);
    CHECK(verify_jwt(later, secret, now + 1).has_value());
    // Exponent forms, and dates past the 64-bit range, mean what they say.
    CHECK(verify_jwt(signed_payload(R"({"sub":"alice","exp":1.8e9})"), secret, now).has_value());
    CHECK(verify_jwt(signed_payload(R"({"sub":"alice","exp":1e300,"iat":1.7e9})"), secret, now)
              .has_value());
    CHECK(refusal(signed_payload(R"({"sub":"alice","exp":-1e300})")) == jwt_error::expired);
    CHECK(refusal(signed_payload(R"({"sub":"alice","exp":-0.5})")) == jwt_error::expired);
    CHECK(refusal(signed_payload(R"({"sub":"alice","nbf":1e300})")) == jwt_error::not_yet_valid);
    CHECK(verify_jwt(signed_payload(R"({"sub":"alice","exp":18446744073709551615})"), secret, now)
              .has_value());
}

TEST_CASE("a token without exp is accepted at any time") {
    const std::string token = signed_payload(R"({"sub":"alice"})");
    CHECK(verify_jwt(token, secret, now).has_value());
    CHECK(verify_jwt(token, secret, std::numeric_limits<std::int64_t>::max()).has_value());
}

TEST_CASE("an explicit exp of zero or below is expired, not taken for no expiry") {
    CHECK(refusal(signed_payload(R"({"sub":"alice","exp":0})")) == jwt_error::expired);
    CHECK(refusal(signed_payload(R"({"sub":"alice","exp":-1})")) == jwt_error::expired);
}

TEST_CASE("a token without sub is refused as missing_subject") {
    CHECK(refusal(signed_payload(R"({"exp":1800000000})")) == jwt_error::missing_subject);
    CHECK(refusal(signed_payload(R"({})")) == jwt_error::missing_subject);
    CHECK(refusal(signed_payload(R"({"Sub":"alice"})")) == jwt_error::missing_subject);
}

TEST_CASE("a sub that is not a valid customer id is refused as invalid_subject") {
    for (const std::string_view payload :
         {R"({"sub":""})", R"({"sub":"al ice"})", R"({"sub":"alice/../bob"})",
          R"({"sub":"al\u0000ice"})", R"({"sub":"\u00e9lodie"})", R"({"sub":42})",
          R"({"sub":null})", R"({"sub":["alice"]})", R"({"sub":{"id":"alice"}})"}) {
        CAPTURE(payload);
        CHECK(refusal(signed_payload(payload)) == jwt_error::invalid_subject);
    }
    // 64 characters is the longest valid id.
    const auto sub_of_length = [](std::size_t n) {
        return signed_payload(R"({"sub":")" + std::string(n, 'a') + R"("})");
    };
    CHECK(verify_jwt(sub_of_length(64), secret, now).has_value());
    CHECK(refusal(sub_of_length(65)) == jwt_error::invalid_subject);
}

TEST_CASE("an expired token is refused as expired before its subject is judged") {
    CHECK(refusal(signed_payload(R"({"sub":"not valid","exp":1})")) == jwt_error::expired);
}

TEST_CASE("claims of the wrong type or given twice make a signed payload malformed") {
    for (const std::string_view payload :
         {R"({"sub":"alice","exp":"1800000000"})", R"({"sub":"alice","exp":null})",
          R"({"sub":"alice","exp":99999999999999999999})", R"({"sub":"alice","iat":"now"})",
          R"({"sub":"alice","nbf":"1700000000"})", R"({"sub":"alice","iat":true})",
          R"({"sub":"alice","nbf":null})", R"({"sub":"alice","nbf":1,"nbf":2})",
          R"({"sub":"alice","role":1})", R"({"sub":"alice","role":null})",
          R"({"sub":"alice","role":["admin"]})", R"({"sub":"alice","sub":"alice"})",
          R"({"sub":"alice","sub":"bob"})", R"({"sub":"alice","exp":1800000000,"exp":1})",
          R"({"sub":"alice","role":"","role":"admin"})", R"(["sub","alice"])", R"("alice")",
          R"({"sub":"alice")", R"({"sub":"alice"}{})", "", "\xc3\x28"}) {
        CAPTURE(payload);
        CHECK(refusal(signed_payload(payload)) == jwt_error::malformed);
    }
}

TEST_CASE("a role other than admin is returned as written and grants nothing by itself") {
    const auto verified =
        verify_jwt(signed_payload(R"({"sub":"alice","role":"Admin"})"), secret, now);
    REQUIRE(verified.has_value());
    CHECK(verified->role == "Admin");
}

TEST_CASE("claim strings are JSON-escaped when signing and unescaped when verifying") {
    claims c = alice();
    c.role = "quote\" backslash\\ newline\n";
    const auto verified = verify_jwt(sign_jwt(c, secret), secret, now);
    REQUIRE(verified.has_value());
    CHECK(verified->role == c.role);
}

TEST_CASE("garbage tokens are refused as malformed without crashing") {
    const std::string valid = sign_jwt(alice(), secret);
    for (const std::string_view token :
         {"", ".", "..", "...", "....", "abc", "a.b", "a.b.c.d", "a.b.c.d.e", ".b.c", "a..c",
          "Bearer x.y.z", "eyJ.eyJ.abc", "!!!.???.***", "a b.c d.e f",
          "=.=.=", "eyJhbGciOiJIUzI1NiJ9.e30.\xff"}) {
        CAPTURE(token);
        CHECK(refusal(token) == jwt_error::malformed);
    }
    CHECK(refusal(valid + ".") == jwt_error::malformed);
    CHECK(refusal("." + valid) == jwt_error::malformed);
    CHECK(refusal(valid + "." + valid) == jwt_error::malformed);
    CHECK(refusal(std::string{"a.b.c\0", 6}) == jwt_error::malformed);
    CHECK(refusal(std::string{"\0.\0.\0", 5}) == jwt_error::malformed);
}

TEST_CASE("base64 with padding, the standard alphabet or whitespace is refused as malformed") {
    const std::string token = sign_jwt(alice(), secret);
    const std::size_t first = token.find('.');
    const std::string header = token.substr(0, first);
    const std::string rest = token.substr(first);
    CHECK(refusal(header + "=" + rest) == jwt_error::malformed);
    CHECK(refusal(header + "==" + rest) == jwt_error::malformed);
    CHECK(refusal(" " + token) == jwt_error::malformed);
    CHECK(refusal(token + "\n") == jwt_error::malformed);
    CHECK(refusal(token + "=") == jwt_error::malformed);
    // Signature: 32 bytes are 43 characters; 42 or 44 cannot be a canonical 32-byte encoding.
    CHECK(refusal(token.substr(0, token.size() - 1)) != std::nullopt);
    CHECK(refusal(token + "A") != std::nullopt);
}

TEST_CASE("tokens are accepted up to 4096 bytes and refused as malformed beyond") {
    // Pad an unknown claim until the token is exactly at the limit, then one byte over it.
    std::optional<std::string> at_limit;
    std::optional<std::string> over_limit;
    for (std::size_t filler = 2900; filler < 3100; ++filler) {
        const std::string payload =
            R"({"sub":"alice","pad":")" + std::string(filler, 'x') + R"("})";
        const std::string token = signed_payload(payload);
        if (token.size() == broker::api::jwt_token_max) at_limit = token;
        if (token.size() == broker::api::jwt_token_max + 1) over_limit = token;
    }
    REQUIRE(at_limit.has_value());
    REQUIRE(over_limit.has_value());
    CHECK(verify_jwt(*at_limit, secret, now).has_value());
    CHECK(refusal(*over_limit) == jwt_error::malformed);
    CHECK(refusal(std::string(1'000'000, 'a')) == jwt_error::malformed);
    CHECK(refusal(std::string(100'000, '.')) == jwt_error::malformed);
}

TEST_CASE("a token that is only valid JSON after base64 decoding does not crash on deep nesting") {
    const std::string deep = std::string(1500, '[') + std::string(1500, ']');
    CHECK(refusal(signed_payload(deep)) == jwt_error::malformed);
    CHECK(refusal(sign_jws_hs256(deep, R"({"sub":"alice"})", secret)) == jwt_error::malformed);
}

TEST_CASE("random byte strings are refused without crashing") {
    std::mt19937 rng{7};
    for (int i = 0; i < 2000; ++i) {
        std::string token(rng() % 200, '\0');
        for (char& c : token) c = static_cast<char>(rng() % 256);
        // Sprinkle dots so that some inputs reach the base64 and JSON stages.
        if (!token.empty()) token[rng() % token.size()] = '.';
        if (!token.empty()) token[rng() % token.size()] = '.';
        CHECK_FALSE(verify_jwt(token, secret, now).has_value());
    }
}

TEST_CASE("base64url round-trips every length and refuses non-canonical text") {
    std::string bytes;
    for (int n = 0; n < 70; ++n) {
        const std::string text = base64url_encode(bytes);
        CHECK(text.find_first_of("+/=") == std::string::npos);
        const std::optional<std::string> back = base64url_decode(text);
        REQUIRE(back.has_value());
        CHECK(*back == bytes);
        bytes += static_cast<char>(n * 37 + 250);
    }
    CHECK(base64url_encode("\xfb\xff") == "-_8");
    CHECK(base64url_decode("-_8") == std::optional<std::string>{"\xfb\xff"});
    CHECK(base64url_decode("-_9") == std::nullopt);  // low bits set: non-canonical
    CHECK(base64url_decode("QQ") == std::optional<std::string>{"A"});
    CHECK(base64url_decode("QR") == std::nullopt);  // same byte "A" with unused bits set
    CHECK(base64url_decode("Q") == std::nullopt);   // 6 bits are not a byte
    CHECK(base64url_decode("QQ==") == std::nullopt);
    CHECK(base64url_decode("+/+/") == std::nullopt);
    CHECK(base64url_decode("QUJD\n") == std::nullopt);
    CHECK(base64url_decode(" QUJD") == std::nullopt);
}

TEST_CASE("error details are snake_case and distinct") {
    const std::vector<jwt_error> all{jwt_error::malformed,       jwt_error::unsupported_algorithm,
                                     jwt_error::bad_signature,   jwt_error::expired,
                                     jwt_error::not_yet_valid,   jwt_error::missing_subject,
                                     jwt_error::invalid_subject};
    CHECK(to_string(jwt_error::expired) == "token_expired");
    CHECK(to_string(jwt_error::not_yet_valid) == "token_not_yet_valid");
    for (std::size_t i = 0; i < all.size(); ++i) {
        for (const char c : to_string(all[i])) CHECK(((c >= 'a' && c <= 'z') || c == '_'));
        for (std::size_t j = i + 1; j < all.size(); ++j) {
            CHECK(to_string(all[i]) != to_string(all[j]));
        }
    }
}
