#include "journal/snapshot.h"

#include <doctest/doctest.h>
#include <openssl/evp.h>

#include <random>
#include <string>
#include <vector>

#include "journal/store.h"
#include "tests/engine/random_journal.h"
#include "tests/journal/fixtures.h"

namespace broker::journal {
namespace {

// Every field of two states, not only what the digest covers: a snapshot must resume exactly.
void check_same_state(const state& a, const state& b) {
    CHECK(a.last_sequence == b.last_sequence);
    CHECK(a.next_trade_id == b.next_trade_id);
    CHECK(a.trades_total == b.trades_total);
    REQUIRE(a.customers.size() == b.customers.size());
    for (const auto& [id, x] : a.customers) {
        CAPTURE(id);
        const auto found = b.customers.find(id);
        REQUIRE(found != b.customers.end());
        const customer& y = found->second;
        CHECK(x.id == y.id);
        CHECK(x.cash == y.cash);
        CHECK(x.reserved_cash == y.reserved_cash);
        CHECK(x.opening_cash == y.opening_cash);
        CHECK(x.opening_positions == y.opening_positions);
        CHECK(x.update_sequence == y.update_sequence);
        CHECK(x.fifo == y.fifo);
        CHECK(x.client_orders == y.client_orders);
        REQUIRE(x.positions.size() == y.positions.size());
        for (std::size_t i = 0; i < x.positions.size(); ++i) {
            CHECK(x.positions[i].sym == y.positions[i].sym);
            CHECK(x.positions[i].shares == y.positions[i].shares);
            CHECK(x.positions[i].reserved == y.positions[i].reserved);
        }
    }
    REQUIRE(a.open_trades.size() == b.open_trades.size());
    for (const auto& [id, t] : a.open_trades) {
        CAPTURE(id);
        const auto found = b.open_trades.find(id);
        REQUIRE(found != b.open_trades.end());
        CHECK(t == found->second);
    }
}

hash256 some_hash(std::uint64_t seed) {
    hash256 h{};
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<std::uint8_t>(seed * 31 + i);
    return h;
}

state apply_prefix(const std::vector<event>& events, std::size_t n) {
    state s;
    for (std::size_t i = 0; i < n; ++i) (void)apply(s, events[i]);
    return s;
}

// A snapshot whose bytes were edited and whose checksum was then recomputed, as a forger would.
void fix_checksum(std::string& bytes) {
    REQUIRE(bytes.size() >= 32);
    hash256 sum{};
    unsigned int len = 0;
    REQUIRE(EVP_Digest(bytes.data(), bytes.size() - 32, sum.data(), &len, EVP_sha256(), nullptr) ==
            1);
    std::copy(sum.begin(), sum.end(), bytes.end() - 32);
}

std::string sample_snapshot() {
    const auto events = testing::sample_events();
    return encode_snapshot(apply_prefix(events, events.size()), some_hash(1));
}

}  // namespace

TEST_CASE("a snapshot of random streams decodes to the same state in every field") {
    for (std::uint64_t seed = 1; seed <= 25; ++seed) {
        CAPTURE(seed);
        // Minutes between commands: client order ids are forgotten within the stream too.
        const broker::testing::random_journal run({seed, 300, 90'000});
        const auto& events = run.journal;
        REQUIRE(events.size() > 10);
        for (const std::size_t cut : {std::size_t{1}, events.size() / 4, events.size() / 2,
                                      events.size() * 3 / 4, events.size()}) {
            CAPTURE(cut);
            const state original = apply_prefix(events, cut);
            const std::string bytes = encode_snapshot(original, some_hash(cut));
            auto decoded = decode_snapshot(bytes);
            REQUIRE_MESSAGE(decoded.has_value(), decoded.error().what);
            CHECK(decoded->chain_hash == some_hash(cut));
            check_same_state(original, decoded->st);
            CHECK(encode_snapshot(decoded->st, some_hash(cut)) == bytes);
            // Resuming from the snapshot reaches the state a replay from genesis reaches.
            state resumed = std::move(decoded->st);
            for (std::size_t i = cut; i < events.size(); ++i) (void)apply(resumed, events[i]);
            check_same_state(run.s, resumed);
            CHECK(state_digest(resumed) == state_digest(run.s));
        }
    }
}

TEST_CASE("the empty state and the hand-built sample round-trip") {
    auto empty = decode_snapshot(encode_snapshot(state{}, hash256{}));
    REQUIRE(empty.has_value());
    check_same_state(state{}, empty->st);
    const auto events = testing::sample_events();
    const state full = apply_prefix(events, events.size());
    auto decoded = decode_snapshot(sample_snapshot());
    REQUIRE(decoded.has_value());
    check_same_state(full, decoded->st);
}

TEST_CASE("sealing an unsealed snapshot gives the one-step encoding") {
    const auto events = testing::sample_events();
    const state full = apply_prefix(events, events.size());
    std::string two_step = encode_unsealed_snapshot(full);
    CHECK(snapshot_sequence(two_step) == events.size());
    seal_snapshot(two_step, some_hash(7));
    CHECK(two_step == encode_snapshot(full, some_hash(7)));
    CHECK(snapshot_sequence(two_step) == events.size());
}

TEST_CASE("sealing piece by piece, cut anywhere, gives the one-step encoding") {
    const auto events = testing::sample_events();
    const state full = apply_prefix(events, events.size());
    const std::string unsealed = encode_unsealed_snapshot(full);
    const std::string whole = encode_snapshot(full, some_hash(7));
    // Two pieces cut at every byte (the chain hash field split or not), and one byte at a time.
    for (std::size_t cut = 0; cut <= unsealed.size(); ++cut) {
        std::string first = unsealed.substr(0, cut);
        std::string second = unsealed.substr(cut);
        snapshot_sealer sealer(some_hash(7));
        sealer.add(first);
        sealer.add(second);
        const auto sum = sealer.finish();
        CAPTURE(cut);
        REQUIRE(first + second + std::string(sum.data(), sum.size()) == whole);
    }
    std::string bytes = unsealed;
    snapshot_sealer sealer(some_hash(7));
    for (char& c : bytes) sealer.add(std::span<char>(&c, 1));
    const auto sum = sealer.finish();
    bytes.append(sum.data(), sum.size());
    CHECK(bytes == whole);
    // The decoder checks the checksum on its own: the sealed bytes verify and name the hash.
    const auto decoded = decode_snapshot(bytes);
    REQUIRE(decoded.has_value());
    CHECK(decoded->chain_hash == some_hash(7));
}

TEST_CASE("a snapshot with any byte flipped is corruption") {
    const std::string good = sample_snapshot();
    for (std::size_t i = 0; i < good.size(); ++i) {
        for (const std::uint8_t mask : {0x01, 0x80, 0xff}) {
            std::string bad = good;
            bad[i] = static_cast<char>(bad[i] ^ mask);
            const auto r = decode_snapshot(bad);
            CAPTURE(i);
            REQUIRE_FALSE(r.has_value());
            CHECK(r.error().what.starts_with("snapshot: "));
        }
    }
}

TEST_CASE("a snapshot truncated at any length or extended is corruption") {
    const std::string good = sample_snapshot();
    for (std::size_t n = 0; n < good.size(); ++n) {
        CAPTURE(n);
        CHECK_FALSE(decode_snapshot(std::string_view(good).substr(0, n)).has_value());
    }
    CHECK_FALSE(decode_snapshot(good + '\0').has_value());
}

TEST_CASE("edits behind a recomputed checksum decode to a sound state or to corruption") {
    // A forged checksum gets past the SHA-256; the field checks and check_invariants must still
    // refuse anything `apply` could trip over, and nothing may crash.
    const std::string good = sample_snapshot();
    std::mt19937_64 rng(42);
    std::size_t refused = 0;
    for (int round = 0; round < 20'000; ++round) {
        std::string bad = good;
        const auto edits = 1 + rng() % 3;
        for (std::uint64_t e = 0; e < edits; ++e) {
            bad[rng() % (bad.size() - 32)] = static_cast<char>(rng());
        }
        fix_checksum(bad);
        const auto r = decode_snapshot(bad);
        if (!r) {
            ++refused;
            continue;
        }
        CHECK_FALSE(check_invariants(r->st).has_value());
    }
    CHECK(refused > 10'000);
}

TEST_CASE("a snapshot claiming huge counts is refused without allocating them") {
    std::string bytes = encode_snapshot(state{}, hash256{});
    // The customer count sits after magic, version, body_len, sequence, hash and two counters.
    const std::size_t at = 4 + 1 + 8 + 8 + 32 + 8 + 8;
    for (std::size_t i = 0; i < 8; ++i) bytes[at + i] = static_cast<char>(0xff);
    fix_checksum(bytes);
    const auto r = decode_snapshot(bytes);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().what.find("customers claimed") != std::string::npos);
}

TEST_CASE("a snapshot of another version or without its magic is refused") {
    std::string bytes = sample_snapshot();
    bytes[4] = 2;
    fix_checksum(bytes);
    CHECK(decode_snapshot(bytes).error().what.find("unknown version 2") != std::string::npos);
    bytes = sample_snapshot();
    bytes[0] = 'X';
    fix_checksum(bytes);
    CHECK(decode_snapshot(bytes).error().what.find("bad magic") != std::string::npos);
}

}  // namespace broker::journal
