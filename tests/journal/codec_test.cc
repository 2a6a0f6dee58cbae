#include "journal/codec.h"

#include <doctest/doctest.h>
#include <zlib.h>

#include <limits>
#include <random>
#include <string>
#include <vector>

#include "tests/journal/fixtures.h"

namespace broker::journal {
namespace {

using testing::sym;
using testing::usd;

constexpr std::int64_t i64_max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t i64_min = std::numeric_limits<std::int64_t>::min();
constexpr std::size_t header_size = 55;  // version, type, sequence, timestamp, prev, payload_len

hash256 some_hash(std::uint8_t seed) {
    hash256 h{};
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<std::uint8_t>(seed + i * 13);
    return h;
}

std::string encoded(const event& e, const hash256& prev = {}) {
    std::string out;
    encode_record(e, prev, out);
    return out;
}

// Big-endian byte builders, written independently of the codec so that they pin the grammar.
void put_be(std::string& out, std::uint64_t v, int bytes) {
    for (int shift = (bytes - 1) * 8; shift >= 0; shift -= 8) {
        out.push_back(static_cast<char>((v >> shift) & 0xff));
    }
}
void put_str(std::string& out, std::string_view s) {
    put_be(out, s.size(), 2);
    out.append(s);
}
void put_crc(std::string& out) {
    const auto crc =
        ::crc32(0L, reinterpret_cast<const Bytef*>(out.data()), static_cast<uInt>(out.size()));
    put_be(out, crc, 4);
}

// A record with a correct checksum around an arbitrary payload, to reach the checks behind it.
std::string sealed_record(std::uint16_t type, std::uint64_t seq, std::string_view payload,
                          std::uint8_t version = record_version) {
    std::string out;
    put_be(out, version, 1);
    put_be(out, type, 2);
    put_be(out, seq, 8);
    put_be(out, 1234, 8);
    out.append(32, '\0');
    put_be(out, payload.size(), 4);
    out.append(payload);
    put_crc(out);
    return out;
}

// Re-computes the checksum after a test edited a record in place.
void reseal(std::string& rec) {
    rec.resize(rec.size() - 4);
    put_crc(rec);
}

void check_corruption(std::uint64_t seq, std::string_view bytes, std::string_view needle = "") {
    const auto r = decode_record(seq, bytes);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().sequence == seq);
    CHECK(r.error().what.find("record " + std::to_string(seq)) != std::string::npos);
    if (!needle.empty()) {
        INFO(r.error().what);
        CHECK(r.error().what.find(needle) != std::string::npos);
    }
}

std::vector<event> edge_events() {
    const std::string id64(64, 'z');
    std::vector<position_amount> many;
    for (int i = 0; i < static_cast<int>(limits::positions_per_customer_max); ++i) {
        const std::string ticker = "S" + std::to_string(100000 + i);
        many.push_back({sym(ticker), quantity{i64_max - i}});
    }
    return {
        event{1, 0, customer_opened{"x", money{i64_max}, {}}},
        event{2, i64_max, customer_opened{id64, money{i64_min}, many}},
        event{3, i64_min,
              trade_placed{trade_id{std::numeric_limits<std::uint64_t>::max()}, id64,
                           std::string(64, '~'), sym("ZZZZZZZZ"), side::sell, quantity{i64_max},
                           money{i64_max}, money{i64_min}, money{-1}}},
        event{4, -1,
              trade_refused{trade_id{1}, "a", "", sym("A"), side::buy, quantity{0}, money{0},
                            errc::expired}},
        event{5, 5, trade_filled{trade_id{9}, money{i64_max}, "", i64_min}},
        event{6, 6, trade_filled{trade_id{9}, money{1}, std::string(256, 'e'), 0}},
        event{7, 7, trade_rejected{trade_id{9}, errc::ok, std::string(64, 'r')}},
        event{std::numeric_limits<std::uint64_t>::max(), 8, trade_canceled{trade_id{1}}},
        event{9, 9, trade_modified{trade_id{3}, quantity{i64_max}, money{i64_min}, money{0}, money{-1}}},
    };
}

TEST_CASE("every event type survives an encode and decode round trip") {
    auto events = testing::sample_events();
    const auto edges = edge_events();
    events.insert(events.end(), edges.begin(), edges.end());
    bool seen[9] = {};
    for (const event& e : events) {
        CAPTURE(e.sequence);
        const hash256 prev = some_hash(static_cast<std::uint8_t>(e.sequence));
        const auto r = decode_record(e.sequence, encoded(e, prev));
        REQUIRE(r.has_value());
        CHECK(r->ev == e);
        CHECK(r->prev_hash == prev);
        seen[static_cast<int>(type_of(e.body))] = true;
    }
    for (int t = 1; t <= 8; ++t) CHECK(seen[t]);
}

TEST_CASE("a trade_filled record matches the grammar byte for byte") {
    const event e{42, 1'700'000'000'123, trade_filled{trade_id{7}, money{1'510'000}, "X-7", 99}};
    std::string want;
    put_be(want, 1, 1);                  // version
    put_be(want, 5, 2);                  // type: trade_filled
    put_be(want, 42, 8);                 // sequence
    put_be(want, 1'700'000'000'123, 8);  // timestamp
    const hash256 prev = some_hash(3);
    want.append(reinterpret_cast<const char*>(prev.data()), prev.size());
    put_be(want, 8 + 8 + 2 + 3 + 8, 4);  // payload_len
    put_be(want, 7, 8);
    put_be(want, 1'510'000, 8);
    put_str(want, "X-7");
    put_be(want, 99, 8);
    put_crc(want);
    CHECK(encoded(e, prev) == want);
}

TEST_CASE("encoding appends to what the buffer already holds") {
    const event e{1, 1, trade_submitted{trade_id{1}}};
    std::string out = "prefix";
    encode_record(e, {}, out);
    CHECK(out.substr(0, 6) == "prefix");
    CHECK(out.substr(6) == encoded(e));
}

TEST_CASE("a flipped byte in a record is reported as corruption naming its sequence") {
    auto events = testing::sample_events();
    const auto edges = edge_events();
    events.insert(events.end(), edges.begin(), edges.end());
    for (const event& e : events) {
        const std::string good = encoded(e, some_hash(1));
        for (std::size_t i = 0; i < good.size(); ++i) {
            for (const std::uint8_t mask : {0x01, 0x80, 0xff}) {
                std::string bad = good;
                bad[i] = static_cast<char>(bad[i] ^ mask);
                const auto r = decode_record(e.sequence, bad);
                if (r.has_value()) {
                    FAIL("byte ", i, " of record ", e.sequence, " flipped unnoticed");
                }
                CHECK(r.error().sequence == e.sequence);
            }
        }
    }
}

TEST_CASE("a record truncated at any length is reported as corruption") {
    for (const event& e : testing::sample_events()) {
        const std::string good = encoded(e);
        for (std::size_t len = 0; len < good.size(); ++len) {
            CAPTURE(len);
            check_corruption(e.sequence, std::string_view(good).substr(0, len));
        }
    }
}

TEST_CASE("a record followed by extra bytes is corruption") {
    const event e{3, 3, trade_canceled{trade_id{2}}};
    check_corruption(3, encoded(e) + '\0', "header implies");
}

TEST_CASE("a record stored under another sequence is corruption naming the expected sequence") {
    const event e{5, 5, trade_canceled{trade_id{2}}};
    check_corruption(6, encoded(e), "names sequence 5");
    check_corruption(4, encoded(e), "names sequence 5");
}

TEST_CASE("a record of another version is corruption even with a valid checksum") {
    std::string payload;
    put_be(payload, 1, 8);
    check_corruption(1, sealed_record(4, 1, payload, 2), "unsupported version 2");
    check_corruption(1, sealed_record(4, 1, payload, 0), "unsupported version 0");
}

TEST_CASE("an unknown event type is corruption even with a valid checksum") {
    std::string payload;
    put_be(payload, 1, 8);
    check_corruption(1, sealed_record(0, 1, payload), "unknown event type 0");
    check_corruption(1, sealed_record(9, 1, payload), "unknown event type 9");
    check_corruption(1, sealed_record(0xffff, 1, payload), "unknown event type 65535");
}

TEST_CASE("a payload_len that disagrees with the record size is corruption") {
    std::string rec = encoded(event{9, 9, trade_submitted{trade_id{3}}});
    SUBCASE("too large") {
        rec[54] = static_cast<char>(rec[54] + 1);
    }
    SUBCASE("too small") {
        rec[54] = static_cast<char>(rec[54] - 1);
    }
    SUBCASE("absurd") {
        rec[51] = static_cast<char>(0xff);
    }
    reseal(rec);
    check_corruption(9, rec);
}

TEST_CASE("a payload longer than its fields is corruption") {
    std::string payload;
    put_be(payload, 3, 8);
    payload.push_back('\0');
    check_corruption(9, sealed_record(7, 9, payload), "1 trailing payload bytes");
}

TEST_CASE("a payload shorter than its fields is corruption") {
    std::string payload;
    put_be(payload, 3, 7);
    check_corruption(9, sealed_record(7, 9, payload), "truncated");
    check_corruption(9, sealed_record(5, 9, ""), "truncated");
}

// trade_placed payload with the given customer id, side and symbol; the rest fixed.
std::string placed_payload(std::string_view customer, std::uint8_t side_raw,
                           std::uint64_t packed_symbol, std::uint64_t id = 1) {
    std::string p;
    put_be(p, id, 8);
    put_str(p, customer);
    put_str(p, "c-1");
    put_be(p, packed_symbol, 8);
    put_be(p, side_raw, 1);
    for (int i = 0; i < 4; ++i) put_be(p, 1, 8);
    return p;
}

TEST_CASE("a well-formed trade_placed payload from the test builder decodes") {
    const auto r =
        decode_record(1, sealed_record(2, 1, placed_payload("bob", 2, sym("IBM").packed)));
    REQUIRE(r.has_value());
    const auto& placed = std::get<trade_placed>(r->ev.body);
    CHECK(placed.customer_id == "bob");
    CHECK(placed.trade_side == side::sell);
    CHECK(placed.sym == sym("IBM"));
}

TEST_CASE("invalid field values are corruption even with a valid checksum") {
    const std::uint64_t ibm = sym("IBM").packed;
    check_corruption(1, sealed_record(2, 1, placed_payload("bob", 0, ibm)), "invalid side 0");
    check_corruption(1, sealed_record(2, 1, placed_payload("bob", 3, ibm)), "invalid side 3");
    check_corruption(1, sealed_record(2, 1, placed_payload(std::string(65, 'b'), 1, ibm)),
                     "customer_id is 65 bytes");
    check_corruption(1, sealed_record(2, 1, placed_payload("", 1, ibm)), "customer_id is 0 bytes");
    check_corruption(1, sealed_record(2, 1, placed_payload("bob", 1, 0)), "invalid symbol");
    check_corruption(1, sealed_record(2, 1, placed_payload("bob", 1, ibm | 1)), "invalid symbol");
    check_corruption(1, sealed_record(2, 1, placed_payload("bob", 1, ibm, 0)), "trade id 0");
}

TEST_CASE("an unknown reason code is corruption even with a valid checksum") {
    for (const std::uint16_t code : {1, 999, 1009, 5004, 65535}) {
        std::string p;
        put_be(p, 1, 8);
        put_be(p, code, 2);
        put_str(p, "");
        check_corruption(1, sealed_record(6, 1, p), "invalid reason code " + std::to_string(code));
    }
}

TEST_CASE("an over-long exec_id is corruption") {
    std::string p;
    put_be(p, 1, 8);
    put_be(p, 100, 8);
    put_str(p, std::string(257, 'e'));
    put_be(p, 0, 8);
    check_corruption(1, sealed_record(5, 1, p), "exec_id is 257 bytes");
}

TEST_CASE("a string length running past the payload is corruption") {
    std::string p;
    put_be(p, 1, 8);
    put_be(p, 100, 8);
    put_be(p, 50, 2);  // claims 50 bytes of exec_id, has 3
    p.append("abc");
    check_corruption(1, sealed_record(5, 1, p), "truncated");
}

TEST_CASE("unsorted, duplicate or too many opening positions are corruption") {
    auto opened = [](std::vector<std::uint64_t> symbols) {
        std::string p;
        put_str(p, "alice");
        put_be(p, 100, 8);
        put_be(p, symbols.size(), 2);
        for (const auto s : symbols) {
            put_be(p, s, 8);
            put_be(p, 1, 8);
        }
        return p;
    };
    const std::uint64_t a = sym("A").packed;
    const std::uint64_t b = sym("B").packed;
    check_corruption(1, sealed_record(1, 1, opened({b, a})), "sorted");
    check_corruption(1, sealed_record(1, 1, opened({a, a})), "sorted");
    check_corruption(1, sealed_record(1, 1, opened(std::vector<std::uint64_t>(1001, a))),
                     "1001 positions");
    std::string huge_count;
    put_str(huge_count, "alice");
    put_be(huge_count, 100, 8);
    put_be(huge_count, 900, 2);  // 900 positions announced, none present
    check_corruption(1, sealed_record(1, 1, huge_count), "truncated");
}

TEST_CASE("the checksum is zlib's CRC-32 at every length and alignment") {
    // Every record, run and snapshot ever written carries this CRC: a different function would
    // make every stored byte read as corruption. The standard check value first, then zlib itself
    // over lengths that cover the short tail, the 16- and 64-byte steps and the folding loop.
    CHECK(checksum("123456789") == 0xCBF43926u);
    CHECK(checksum("") == 0u);
    std::mt19937 rng(7);
    std::string bytes(4200, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    for (std::size_t offset = 0; offset < 8; ++offset) {
        for (std::size_t n = 0; n + offset <= bytes.size(); n += (n < 300 ? 1 : 97)) {
            const std::string_view part = std::string_view(bytes).substr(offset, n);
            const auto expected = ::crc32(0L, reinterpret_cast<const Bytef*>(part.data()),
                                          static_cast<uInt>(part.size()));
            REQUIRE_MESSAGE(checksum(part) == expected, "length ", n, " offset ", offset);
        }
    }
}

TEST_CASE("the chain hash is SHA-256 of the previous hash and the record bytes") {
    CHECK(to_hex(chain_hash(hash256{}, "")) ==
          "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925");
    CHECK(to_hex(chain_hash(hash256{}, "abc")) ==
          "365aa7d8f7f9402c4b9434502b4cc89ddb09fe50d7cd95b493b834c62d5a5370");
    CHECK(chain_hash(some_hash(1), "abc") != chain_hash(some_hash(2), "abc"));
}

TEST_CASE("to_hex renders lowercase hex, two digits a byte") {
    hash256 h{};
    h[0] = 0x0f;
    h[31] = 0xa0;
    const std::string hex = to_hex(h);
    CHECK(hex.size() == 64);
    CHECK(hex.substr(0, 2) == "0f");
    CHECK(hex.substr(62) == "a0");
    CHECK(hex.substr(2, 60) == std::string(60, '0'));
}

TEST_CASE("random edits behind a fixed-up checksum decode to the same bytes or to corruption") {
    // Past the checksum, only the field checks stand between bad bytes and the engine; whatever
    // they accept must be a record we would have written ourselves.
    std::mt19937_64 rng(20240601);
    const auto events = testing::sample_events();
    int accepted = 0;
    for (int round = 0; round < 20'000; ++round) {
        const event& e = events[rng() % events.size()];
        std::string rec = encoded(e);
        const int edits = 1 + static_cast<int>(rng() % 4);
        for (int i = 0; i < edits; ++i) {
            rec[rng() % (rec.size() - 4)] = static_cast<char>(rng());
        }
        reseal(rec);
        const auto r = decode_record(e.sequence, rec);
        if (!r) {
            CHECK(r.error().sequence == e.sequence);
            continue;
        }
        ++accepted;
        std::string again;
        encode_record(r->ev, r->prev_hash, again);
        CHECK(again == rec);
    }
    CHECK(accepted > 0);  // edits to money, timestamps and hashes are legal values
}

TEST_CASE("random bytes of any length are corruption, never a crash") {
    std::mt19937_64 rng(7);
    for (int round = 0; round < 20'000; ++round) {
        std::string junk(rng() % 200, '\0');
        for (char& c : junk) c = static_cast<char>(rng());
        if (!junk.empty() && rng() % 2 == 0) junk[0] = static_cast<char>(record_version);
        CHECK_FALSE(decode_record(1, junk).has_value());
        CHECK_FALSE(decode_trade(junk).has_value());
    }
}

// ---------------------------------------------------------------------------------------------
// Trade store codec.

trade filled_trade() {
    trade t;
    t.id = trade_id{12};
    t.customer_id = std::string(64, 'c');
    t.client_order_id = "order-12";
    t.sym = sym("BRK.B");
    t.trade_side = side::buy;
    t.qty = quantity{i64_max};
    t.placed_qty = quantity{i64_min};
    t.status = trade_status::filled;
    t.created_at = i64_min;
    t.updated_at = i64_max;
    t.reference_price = money{i64_max};
    t.limit_price = money{i64_min};
    t.reserved_cash = money{123};
    t.fill_price = money{i64_max};
    t.filled_at = 17;
    t.exec_id = "X-12";
    return t;
}

trade rejected_trade() {
    trade t;
    t.id = trade_id{3};
    t.customer_id = "bob";
    t.sym = sym("AAPL");
    t.trade_side = side::sell;
    t.qty = quantity{5};
    t.status = trade_status::rejected;
    t.reason = errc::insufficient_shares;
    return t;
}

std::string encoded_trade(const trade& t) {
    std::string out;
    encode_trade(t, out);
    return out;
}

TEST_CASE("terminal trades survive an encode and decode round trip") {
    trade zero_fill = filled_trade();
    zero_fill.fill_price = money{0};  // present but zero is not the same as absent
    for (const trade& t : {filled_trade(), rejected_trade(), zero_fill}) {
        const auto r = decode_trade(encoded_trade(t));
        REQUIRE(r.has_value());
        CHECK(*r == t);
    }
}

TEST_CASE("a trade record of version 1, without the placed quantity, reads as placed with qty") {
    trade t = rejected_trade();
    t.placed_qty = quantity{9};
    const std::string v3 = encoded_trade(t);
    REQUIRE(static_cast<std::uint8_t>(v3.front()) == trade_record_version);
    // Version 1: the same fields, no placed_qty (the 8 bytes before the checksum).
    std::string v1 = v3.substr(0, v3.size() - 12);
    v1[0] = static_cast<char>(trade_record_version_1);
    put_crc(v1);
    const auto r = decode_trade(v1);
    REQUIRE(r.has_value());
    CHECK(r->qty == t.qty);
    CHECK(r->placed_qty == t.qty);
    trade expected = t;
    expected.placed_qty = t.qty;
    CHECK(*r == expected);
    // Read within an update group too, and written back in the current version.
    std::string group;
    encode_update_group({v3, v3}, group);
    const auto both = decode_updates(group);
    REQUIRE(both.has_value());
    CHECK((*both)[1].placed_qty == quantity{9});
    const auto single = decode_updates(v1);
    REQUIRE(single.has_value());
    CHECK(single->front() == expected);
    CHECK(static_cast<std::uint8_t>(encoded_trade(*r).front()) == trade_record_version);
    // A version-2 first byte is an update group's, never a trade record's.
    std::string v2 = v3;
    v2[0] = 2;
    reseal(v2);
    CHECK_FALSE(decode_trade(v2).has_value());
}

TEST_CASE("a flipped byte in a trade record is reported as corruption") {
    for (const trade& t : {filled_trade(), rejected_trade()}) {
        const std::string good = encoded_trade(t);
        for (std::size_t i = 0; i < good.size(); ++i) {
            for (const std::uint8_t mask : {0x01, 0x80, 0xff}) {
                std::string bad = good;
                bad[i] = static_cast<char>(bad[i] ^ mask);
                const auto r = decode_trade(bad);
                if (r.has_value()) {
                    FAIL("byte ", i, " of trade ", t.id.value, " flipped unnoticed");
                }
                CHECK(r.error().sequence == 0);
            }
        }
    }
}

TEST_CASE("a trade record truncated at any length or extended is corruption") {
    const std::string good = encoded_trade(filled_trade());
    for (std::size_t len = 0; len < good.size(); ++len) {
        CAPTURE(len);
        CHECK_FALSE(decode_trade(std::string_view(good).substr(0, len)).has_value());
    }
    std::string longer = good;
    longer.insert(longer.size() - 4, 1, '\0');
    reseal(longer);
    const auto r = decode_trade(longer);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().what.find("trailing") != std::string::npos);
}

TEST_CASE("random edits to a trade behind a fixed-up checksum decode to the same bytes or fail") {
    std::mt19937_64 rng(99);
    for (int round = 0; round < 20'000; ++round) {
        std::string rec = encoded_trade(round % 2 == 0 ? filled_trade() : rejected_trade());
        rec[rng() % (rec.size() - 4)] = static_cast<char>(rng());
        reseal(rec);
        const auto r = decode_trade(rec);
        if (r) CHECK(encoded_trade(*r) == rec);
    }
}

TEST_CASE("a trade record with an invalid status or fill flag is corruption") {
    const std::string good = encoded_trade(rejected_trade());
    // version(1) id(8) customer(2+3) client_order_id(2+0) symbol(8) side(1) qty(8) -> status
    const std::size_t status_at = 1 + 8 + 5 + 2 + 8 + 1 + 8;
    const std::size_t fill_flag_at = status_at + 1 + 2 + 8 * 5;
    std::string bad_status = good;
    bad_status[status_at] = 6;
    reseal(bad_status);
    const auto r1 = decode_trade(bad_status);
    REQUIRE_FALSE(r1.has_value());
    CHECK(r1.error().what.find("invalid trade status 6") != std::string::npos);

    std::string bad_flag = good;
    REQUIRE(bad_flag[fill_flag_at] == 0);
    bad_flag[fill_flag_at] = 2;
    reseal(bad_flag);
    const auto r2 = decode_trade(bad_flag);
    REQUIRE_FALSE(r2.has_value());
    CHECK(r2.error().what.find("invalid fill flag 2") != std::string::npos);
}

std::string update_group(const std::vector<trade>& trades) {
    std::vector<std::string> records;
    for (const trade& t : trades) records.push_back(encoded_trade(t));
    std::vector<std::string_view> views(records.begin(), records.end());
    std::string out;
    encode_update_group(views, out);
    return out;
}

TEST_CASE("a run of updates decodes in order, and a lone trade record is a run of one") {
    const std::vector<trade> run{rejected_trade(), filled_trade(), rejected_trade()};
    const std::string group = update_group(run);
    CHECK(static_cast<std::uint8_t>(group.front()) == update_group_version);
    const auto r = decode_updates(group);
    REQUIRE(r.has_value());
    CHECK(*r == run);
    // The layout the grammar gives: version, count, then length-prefixed trade records.
    const std::string first = encoded_trade(run[0]);
    CHECK(group.substr(1, 4) == std::string("\0\0\0\3", 4));
    CHECK(group.substr(5, 4) == std::string({'\0', '\0', '\0', static_cast<char>(first.size())}));
    CHECK(group.substr(9, first.size()) == first);

    const auto lone = decode_updates(encoded_trade(filled_trade()));
    REQUIRE(lone.has_value());
    REQUIRE(lone->size() == 1);
    CHECK(lone->front() == filled_trade());
}

TEST_CASE("a damaged run of updates is corruption: any flipped byte, truncation or extension") {
    const std::string good = update_group({filled_trade(), rejected_trade()});
    for (std::size_t i = 0; i < good.size(); ++i) {
        for (const std::uint8_t mask : {0x01, 0x80, 0xff}) {
            std::string bad = good;
            bad[i] = static_cast<char>(bad[i] ^ mask);
            if (decode_updates(bad).has_value()) FAIL("byte ", i, " flipped unnoticed");
        }
    }
    for (std::size_t len = 0; len < good.size(); ++len) {
        CAPTURE(len);
        CHECK_FALSE(decode_updates(std::string_view(good).substr(0, len)).has_value());
    }
    const auto longer = decode_updates(good + '\0');
    REQUIRE_FALSE(longer.has_value());
    CHECK(longer.error().what.find("trailing") != std::string::npos);
    // A count that promises more records than the bytes could hold is refused before any are read.
    std::string huge = good;
    huge[1] = '\x7f';
    const auto r = decode_updates(huge);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().what.find("bad count") != std::string::npos);
}

std::string update_run_of(std::uint64_t open_from, std::uint64_t next_trade,
                          const std::vector<trade>& trades) {
    std::vector<std::string> records;
    for (const trade& t : trades) records.push_back(encoded_trade(t));
    std::string out;
    encode_update_run(open_from, next_trade,
                      std::vector<std::string_view>(records.begin(), records.end()), out);
    return out;
}

TEST_CASE("an update run carries its bounds, and older values decode as runs without them") {
    const std::vector<trade> run{rejected_trade(), filled_trade()};
    const std::string value = update_run_of(7, 12, run);
    CHECK(static_cast<std::uint8_t>(value.front()) == update_run_version);
    const auto r = decode_update_run(value);
    REQUIRE(r.has_value());
    CHECK(r->bounded);
    CHECK(r->open_from == 7);
    CHECK(r->next_trade == 12);
    CHECK(r->trades == run);
    const auto lone = decode_update_run(update_run_of(3, 4, {filled_trade()}));
    REQUIRE(lone.has_value());
    CHECK(lone->trades == std::vector<trade>{filled_trade()});
    // The layouts before: a group, or a trade record alone.
    const auto group = decode_update_run(update_group(run));
    REQUIRE(group.has_value());
    CHECK_FALSE(group->bounded);
    CHECK(group->trades == run);
    const auto record = decode_update_run(encoded_trade(filled_trade()));
    REQUIRE(record.has_value());
    CHECK_FALSE(record->bounded);
    CHECK(record->trades == std::vector<trade>{filled_trade()});
}

TEST_CASE("a damaged update run or closed trade is corruption: any flipped byte or truncation") {
    std::string closed;
    encode_closed_trade(41, encoded_trade(filled_trade()), closed);
    const auto good_closed = decode_closed_trade(closed);
    REQUIRE(good_closed.has_value());
    CHECK(good_closed->update_sequence == 41);
    CHECK(good_closed->t == filled_trade());
    const auto older = decode_closed_trade(encoded_trade(filled_trade()));
    REQUIRE(older.has_value());
    CHECK(older->update_sequence == 0);
    CHECK(older->t == filled_trade());

    const std::string run = update_run_of(7, 12, {rejected_trade(), filled_trade()});
    for (std::size_t i = 0; i < run.size(); ++i) {
        for (const std::uint8_t mask : {0x01, 0x80, 0xff}) {
            std::string bad = run;
            bad[i] = static_cast<char>(bad[i] ^ mask);
            const auto r = decode_update_run(bad);
            // The version byte flipped may name an older layout, which fails in its own way.
            if (r.has_value()) FAIL("run byte ", i, " flipped unnoticed");
        }
    }
    for (std::size_t i = 0; i < closed.size(); ++i) {
        std::string bad = closed;
        bad[i] = static_cast<char>(bad[i] ^ 0x01);
        if (decode_closed_trade(bad).has_value()) FAIL("closed byte ", i, " flipped unnoticed");
    }
    for (std::size_t len = 0; len < run.size(); ++len) {
        CHECK_FALSE(decode_update_run(std::string_view(run).substr(0, len)).has_value());
    }
    for (std::size_t len = 0; len < closed.size(); ++len) {
        CHECK_FALSE(decode_closed_trade(std::string_view(closed).substr(0, len)).has_value());
    }
    CHECK_FALSE(decode_update_run(run + '\0').has_value());
}

}  // namespace
}  // namespace broker::journal
