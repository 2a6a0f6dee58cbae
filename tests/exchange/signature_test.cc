// Exchange callback signatures: round trips, a vector computed with the openssl CLI, and every way
// a header can be wrong.
#include "exchange/signature.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

using broker::exchange::sign_callback;
using broker::exchange::signature_error;
using broker::exchange::verify_callback;

constexpr std::string_view secret = "exchange-secret";
constexpr std::int64_t now = 1'700'000'000;
constexpr std::string_view body = R"({"order_id":"0000000000000001","status":"FILLED"})";
// printf '%s' '1700000000.{"order_id":"0000000000000001","status":"FILLED"}' |
//     openssl dgst -sha256 -hmac 'exchange-secret'
constexpr std::string_view known_mac =
    "01d5ce7da7de36f17685e39c2855ce615475833d2eb94ce8c0ba536cb1714c16";

std::optional<signature_error> refusal(std::string_view header, std::string_view text = body,
                                       std::int64_t at = now, std::string_view key = secret) {
    const auto verified = verify_callback(key, header, text, at);
    if (verified.has_value()) return std::nullopt;
    return verified.error();
}

std::string with_t(std::string_view t) {
    return "t=" + std::string{t} + ",v1=" + std::string{known_mac};
}

}  // namespace

// Failed checks print the refusal ("signature_stale", or "accepted") instead of "{?}"; doctest
// prints the enum on the right-hand side as its number.
template <>
struct doctest::StringMaker<std::optional<signature_error>> {
    static doctest::String convert(const std::optional<signature_error>& e) {
        const std::string_view text = e ? to_string(*e) : "accepted";
        return doctest::String{text.data(), static_cast<unsigned>(text.size())};
    }
};

TEST_CASE("a signed callback verifies with the same secret, body and time") {
    const std::string header = sign_callback(secret, now, body);
    CHECK(verify_callback(secret, header, body, now).has_value());
}

TEST_CASE("sign_callback matches the HMAC computed independently with the openssl CLI") {
    const std::string expected = "t=1700000000,v1=" + std::string{known_mac};
    CHECK(sign_callback(secret, now, body) == expected);
    CHECK(verify_callback(secret, expected, body, now).has_value());
}

TEST_CASE("an empty body and a binary body with NUL bytes round-trip") {
    CHECK(verify_callback(secret, sign_callback(secret, now, ""), "", now).has_value());
    const std::string binary{"\x00\x01\xff{}\x00", 6};
    CHECK(verify_callback(secret, sign_callback(secret, now, binary), binary, now).has_value());
    CHECK(refusal(sign_callback(secret, now, binary), binary.substr(0, 5)) ==
          signature_error::mismatch);
}

TEST_CASE("a callback signed with another secret is refused as mismatch") {
    CHECK(refusal(sign_callback("another-secret", now, body)) == signature_error::mismatch);
    std::string changed{secret};
    changed.back() ^= 1;
    CHECK(refusal(sign_callback(changed, now, body)) == signature_error::mismatch);
    CHECK(refusal(sign_callback(secret.substr(1), now, body)) == signature_error::mismatch);
}

TEST_CASE("an empty secret verifies nothing") {
    CHECK(refusal(sign_callback(secret, now, body), body, now, "") == signature_error::mismatch);
}

TEST_CASE("an altered body is refused as mismatch") {
    const std::string header = sign_callback(secret, now, body);
    std::string altered{body};
    altered[altered.find("FILLED")] = 'f';
    CHECK(refusal(header, altered) == signature_error::mismatch);
    CHECK(refusal(header, std::string{body} + " ") == signature_error::mismatch);
    CHECK(refusal(header, body.substr(1)) == signature_error::mismatch);
    CHECK(refusal(header, "") == signature_error::mismatch);
}

TEST_CASE("moving the timestamp without re-signing is refused as mismatch") {
    // The MAC covers t: a replayer cannot refresh an old callback by editing the header.
    CHECK(refusal(with_t("1700000001")) == signature_error::mismatch);
    CHECK(refusal(with_t("1700000001"), body, now + 1) == signature_error::mismatch);
}

TEST_CASE("any single flipped hex digit of the MAC is refused as mismatch") {
    const std::string header = sign_callback(secret, now, body);
    const std::size_t mac_at = header.find("v1=") + 3;
    for (std::size_t i = mac_at; i < header.size(); ++i) {
        std::string flipped = header;
        flipped[i] = flipped[i] == '0' ? '1' : '0';
        CAPTURE(flipped);
        CHECK(refusal(flipped) == signature_error::mismatch);
    }
}

TEST_CASE("a callback older or newer than the tolerance is refused as stale") {
    const std::string header = sign_callback(secret, now, body);
    CHECK(verify_callback(secret, header, body, now + 300).has_value());
    CHECK(verify_callback(secret, header, body, now - 300).has_value());
    CHECK(refusal(header, body, now + 301) == signature_error::stale);  // replayed or delayed
    CHECK(refusal(header, body, now - 301) == signature_error::stale);  // exchange clock ahead
    CHECK(refusal(header, body, now + 86'400) == signature_error::stale);
    CHECK(refusal(header, body, 0) == signature_error::stale);
}

TEST_CASE("the tolerance is a parameter, and zero accepts only the exact second") {
    const std::string header = sign_callback(secret, now, body);
    CHECK(verify_callback(secret, header, body, now, 0).has_value());
    CHECK(verify_callback(secret, header, body, now + 1, 0).error() == signature_error::stale);
    CHECK(verify_callback(secret, header, body, now - 1, 0).error() == signature_error::stale);
    CHECK(verify_callback(secret, header, body, now + 3600, 3600).has_value());
}

TEST_CASE("extreme clocks on our side never overflow into acceptance") {
    const std::string header = sign_callback(secret, now, body);
    CHECK(refusal(header, body, std::numeric_limits<std::int64_t>::max()) ==
          signature_error::stale);
    CHECK(refusal(header, body, std::numeric_limits<std::int64_t>::min()) ==
          signature_error::stale);
}

TEST_CASE("a forged header with a stale time is reported as mismatch, not stale") {
    CHECK(refusal(with_t("1600000000")) == signature_error::mismatch);
}

TEST_CASE("an absent header is refused as missing") {
    CHECK(refusal("") == signature_error::missing);
}

TEST_CASE("headers that do not follow the grammar are refused as malformed") {
    const std::string mac{known_mac};
    const std::string upper_mac = [&] {
        std::string m = mac;
        for (char& c : m) {
            if (c >= 'a' && c <= 'f') c = static_cast<char>(c - 'a' + 'A');
        }
        return m;
    }();
    const std::vector<std::string> headers{
        " ",
        ",",
        "t=1700000000",
        "v1=" + mac,
        "v1=" + mac + ",t=1700000000",  // parts in the wrong order
        "t=1700000000,v1=",
        "t=,v1=" + mac,
        "t=1700000000,v1=" + upper_mac,
        "t=1700000000,v1=" + mac.substr(0, 63),
        "t=1700000000,v1=" + mac + "0",
        "t=1700000000,v1=" + mac.substr(0, 63) + "g",
        "t=1700000000,v1=" + mac.substr(0, 62) + "0x",
        "t=abc,v1=" + mac,
        "t=-1700000000,v1=" + mac,
        "t=+1700000000,v1=" + mac,
        "t=1700000000.5,v1=" + mac,
        "t=1.7e9,v1=" + mac,
        "t=0x6553f100,v1=" + mac,
        "t=01700000000,v1=" + mac,    // leading zero: one spelling per number
        "t=1700000000000,v1=" + mac,  // 13 digits
        "t=99999999999999999999,v1=" + mac,
        "t= 1700000000,v1=" + mac,
        "t=1700000000 ,v1=" + mac,
        "t=1700000000, v1=" + mac,
        " t=1700000000,v1=" + mac,
        "t=1700000000,v1=" + mac + " ",
        "t=1700000000;v1=" + mac,
        "t=1700000000,,v1=" + mac,
        "t=1700000000,v1=" + mac + ",",
        "t=1700000000,v1=" + mac + ",,",
        "t=1700000000,v1=" + mac + ",t=1700000000",  // a second t
        "t=1700000000,v1=" + mac + ",v1=" + mac,     // a second v1
        "t=1700000000,v1=" + mac + ",novalue",
        "t=1700000000,v1=" + mac + ",=value",
        "t=1700000000,v1=" + mac + ",k=v w",
        "T=1700000000,v1=" + mac,
        "V1=" + mac,
        "t=1700000000,V1=" + mac,
        "t==1700000000,v1=" + mac,
        "t=1700000000,v1==" + mac,
        "sha256=" + mac,
        "t=1700000000,v1=" + mac + "," + std::string(600, 'x') + "=1",  // over the length bound
        std::string{"t=1700000000\0,v1=", 17} + mac,
        std::string(100'000, ','),
    };
    for (const std::string& header : headers) {
        CAPTURE(header);
        CHECK(refusal(header) == signature_error::malformed);
    }
}

TEST_CASE("unknown key=value parts after v1 are ignored") {
    const std::string header = sign_callback(secret, now, body);
    CHECK(verify_callback(secret, header + ",v0=abc", body, now).has_value());
    CHECK(verify_callback(secret, header + ",scheme=hmac-sha256,kid=2", body, now).has_value());
    CHECK(verify_callback(secret, header + ",empty=", body, now).has_value());
}

TEST_CASE("random headers are refused without crashing") {
    std::mt19937 rng{11};
    const std::string valid = sign_callback(secret, now, body);
    for (int i = 0; i < 5000; ++i) {
        std::string header = valid;
        const int edits = 1 + static_cast<int>(rng() % 3);
        for (int e = 0; e < edits; ++e) {
            header[rng() % header.size()] = static_cast<char>(rng() % 256);
        }
        if (header == valid) continue;
        CHECK_FALSE(verify_callback(secret, header, body, now).has_value());
    }
}

TEST_CASE("signature error details are snake_case and distinct") {
    CHECK(to_string(signature_error::missing) == "signature_missing");
    CHECK(to_string(signature_error::malformed) == "signature_malformed");
    CHECK(to_string(signature_error::mismatch) == "signature_mismatch");
    CHECK(to_string(signature_error::stale) == "signature_stale");
}
