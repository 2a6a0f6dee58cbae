#include "journal/snapshot.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "engine/assert.h"
#include "journal/byte_io.h"

namespace broker::journal {

namespace {

constexpr std::string_view magic = "BKSN";
constexpr std::size_t header_size = 4 + 1 + 8;
constexpr std::size_t checksum_size = 32;

// The smallest encodings of repeated elements: a claimed count larger than the bytes left could
// hold is corruption before anything is allocated for it.
constexpr std::size_t customer_min_size = 2 + 1 + 8 * 4 + 4 * 4;
constexpr std::size_t position_size = 24;
constexpr std::size_t opening_size = 16;
constexpr std::size_t client_order_min_size = 2 + 1 + 8 + 8;
constexpr std::size_t open_trade_min_size = 4;

hash256 sha256(std::string_view bytes) {
    hash256 out{};
    unsigned int len = 0;
    const bool ok =
        EVP_Digest(bytes.data(), bytes.size(), out.data(), &len, EVP_sha256(), nullptr) == 1;
    BROKER_ASSERT(ok && len == out.size());
    return out;
}

// The order of customers in a snapshot: by this key, then by id. FNV-1a, 64-bit: written down
// here rather than std::hash so that the order does not depend on the standard library.
std::uint64_t customer_order_key(std::string_view id) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (const char c : id) {
        h ^= static_cast<std::uint8_t>(c);
        h *= 0x100000001b3ull;
    }
    return h;
}

class writer : public byte_writer {
  public:
    using byte_writer::byte_writer;

    void text(std::string_view v) {
        BROKER_ASSERT(v.size() <= std::numeric_limits<std::uint16_t>::max());
        u16(static_cast<std::uint16_t>(v.size()));
        raw(v);
    }
    void count32(std::size_t n) {
        BROKER_ASSERT(n <= std::numeric_limits<std::uint32_t>::max());
        u32(static_cast<std::uint32_t>(n));
    }
};

class reader : public byte_reader {
  public:
    using byte_reader::byte_reader;

    std::string text(std::size_t max, std::string_view name) {
        const std::size_t n = u16();
        if (!failed() && n > max) fail(fmt::format("{} of {} bytes", name, n));
        return std::string(take(n, name));
    }
    // A count of elements of at least `min_size` bytes each, checked against what is left.
    std::size_t count(std::uint64_t n, std::size_t min_size, std::size_t max, std::string_view what) {
        if (failed()) return 0;
        if (n > max || n > remaining() / min_size) {
            fail(fmt::format("{} {} claimed with {} bytes left", n, what, remaining()));
            return 0;
        }
        return static_cast<std::size_t>(n);
    }
    symbol sym() {
        const symbol s{u64()};
        if (!failed() && !valid_symbol(s)) fail(fmt::format("invalid symbol {:#018x}", s.packed));
        return s;
    }
};

void write_customer(writer& w, const customer& c) {
    w.text(c.id);
    w.i64(c.cash.ticks);
    w.i64(c.reserved_cash.ticks);
    w.i64(c.opening_cash.ticks);
    w.u64(c.update_sequence);
    w.count32(c.positions.size());
    for (const auto& p : c.positions) {
        w.u64(p.sym.packed);
        w.i64(p.shares);
        w.i64(p.reserved);
    }
    w.count32(c.opening_positions.size());
    for (const auto& p : c.opening_positions) {
        w.u64(p.sym.packed);
        w.i64(p.qty.shares);
    }
    w.count32(c.fifo.size());
    for (const auto id : c.fifo) w.u64(id.value);
    w.count32(c.client_orders.size());
    for (const auto& o : c.client_orders) {
        w.text(o.client_order_id);
        w.u64(o.id.value);
        w.i64(o.closed_at);
    }
}

customer read_customer(reader& r) {
    customer c;
    c.id = r.text(limits::customer_id_max, "customer id");
    if (!r.failed() && !valid_customer_id(c.id)) r.fail("invalid customer id");
    c.cash.ticks = r.i64();
    c.reserved_cash.ticks = r.i64();
    c.opening_cash.ticks = r.i64();
    c.update_sequence = r.u64();
    const auto positions =
        r.count(r.u32(), position_size, limits::positions_per_customer_max, "positions");
    c.positions.reserve(positions);
    for (std::size_t i = 0; i < positions && !r.failed(); ++i) {
        position p;
        p.sym = r.sym();
        p.shares = r.i64();
        p.reserved = r.i64();
        c.positions.push_back(p);
    }
    const auto openings =
        r.count(r.u32(), opening_size, limits::positions_per_customer_max, "opening positions");
    c.opening_positions.reserve(openings);
    for (std::size_t i = 0; i < openings && !r.failed(); ++i) {
        position_amount p;
        p.sym = r.sym();
        p.qty.shares = r.i64();
        if (!c.opening_positions.empty() && !(c.opening_positions.back().sym < p.sym)) {
            r.fail("opening positions out of order");
        }
        c.opening_positions.push_back(p);
    }
    const auto fifo = r.count(r.u32(), 8, limits::open_trades_per_customer_max, "queued trades");
    c.fifo.reserve(fifo);
    for (std::size_t i = 0; i < fifo && !r.failed(); ++i) c.fifo.push_back(trade_id{r.u64()});
    const auto orders = r.count(r.u32(), client_order_min_size,
                                std::numeric_limits<std::uint32_t>::max(), "client orders");
    c.client_orders.reserve(orders);
    for (std::size_t i = 0; i < orders && !r.failed(); ++i) {
        client_order o;
        o.client_order_id = r.text(limits::client_order_id_max, "client order id");
        o.id.value = r.u64();
        o.closed_at = r.i64();
        if (r.failed()) break;
        if (!valid_client_order_id(o.client_order_id)) r.fail("invalid client order id");
        c.client_orders.push_back(std::move(o));
    }
    // `apply` asserts that a client order id is remembered once; refuse a snapshot that would
    // make it.
    std::vector<std::string_view> ids;
    ids.reserve(c.client_orders.size());
    for (const auto& o : c.client_orders) ids.push_back(o.client_order_id);
    std::sort(ids.begin(), ids.end());
    if (std::adjacent_find(ids.begin(), ids.end()) != ids.end()) {
        r.fail(fmt::format("customer {} remembers a client order id twice", c.id));
    }
    return c;
}

}  // namespace

std::string encode_unsealed_snapshot(const state& s) {
    std::string out;
    writer w(out);
    w.raw(magic);
    w.u8(snapshot_version);
    w.u64(0);  // body_len, patched below
    w.u64(s.last_sequence);
    w.raw(std::string_view(reinterpret_cast<const char*>(hash256{}.data()), sizeof(hash256)));
    w.u64(s.next_trade_id);
    w.u64(s.trades_total);

    // Ordered so that equal states give equal bytes whatever order the hash maps iterate in. By
    // (FNV-1a of the id, id) rather than by id: sorting a million integer keys is several times
    // faster than sorting a million strings, and this runs while the engine thread waits.
    std::vector<std::pair<std::uint64_t, const customer*>> customers;
    customers.reserve(s.customers.size());
    for (const auto& [id, c] : s.customers) customers.emplace_back(customer_order_key(id), &c);
    std::sort(customers.begin(), customers.end(), [](const auto& a, const auto& b) {
        return a.first != b.first ? a.first < b.first : a.second->id < b.second->id;
    });
    out.reserve(out.size() + s.customers.size() * 96 + s.open_trades.size() * 128);
    w.u64(customers.size());
    for (const auto& [key, c] : customers) write_customer(w, *c);

    std::vector<std::pair<std::uint64_t, const trade*>> trades;
    trades.reserve(s.open_trades.size());
    for (const auto& [id, t] : s.open_trades) trades.emplace_back(id, &t);
    std::sort(trades.begin(), trades.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    w.u64(trades.size());
    std::string record;
    for (const auto& [id, t] : trades) {
        record.clear();
        encode_trade(*t, record);
        w.count32(record.size());
        w.raw(record);
    }

    const std::uint64_t body_len = out.size() - header_size;
    for (std::size_t i = 0; i < 8; ++i) {
        out[header_size - 8 + i] = static_cast<char>((body_len >> (56 - 8 * i)) & 0xff);
    }
    return out;
}

snapshot_sealer::snapshot_sealer(const hash256& chain_hash)
    : chain_hash_(chain_hash), digest_(EVP_MD_CTX_new()) {
    static_assert(snapshot_checksum_size == checksum_size);
    const bool ok = digest_ != nullptr && EVP_DigestInit_ex(digest_, EVP_sha256(), nullptr) == 1;
    BROKER_ASSERT(ok);
}

snapshot_sealer::~snapshot_sealer() { EVP_MD_CTX_free(digest_); }

void snapshot_sealer::add(std::span<char> piece) {
    // The chain hash field follows the header and the sequence.
    constexpr std::uint64_t field_begin = header_size + 8;
    const std::uint64_t field_end = field_begin + chain_hash_.size();
    const std::uint64_t piece_end = added_ + piece.size();
    for (std::uint64_t at = std::max(added_, field_begin); at < std::min(piece_end, field_end); ++at) {
        piece[at - added_] = static_cast<char>(chain_hash_[at - field_begin]);
    }
    const bool ok = EVP_DigestUpdate(digest_, piece.data(), piece.size()) == 1;
    BROKER_ASSERT(ok);
    added_ = piece_end;
}

std::array<char, snapshot_checksum_size> snapshot_sealer::finish() {
    BROKER_ASSERT(added_ >= header_size + 8 + chain_hash_.size());
    hash256 sum{};
    unsigned int len = 0;
    const bool ok = EVP_DigestFinal_ex(digest_, sum.data(), &len) == 1;
    BROKER_ASSERT(ok && len == sum.size());
    std::array<char, snapshot_checksum_size> out{};
    std::copy(sum.begin(), sum.end(), out.begin());
    return out;
}

void seal_snapshot(std::string& unsealed, const hash256& chain_hash) {
    BROKER_ASSERT(snapshot_sequence(unsealed) != 0 || chain_hash == hash256{});
    snapshot_sealer sealer(chain_hash);
    sealer.add(unsealed);
    const auto sum = sealer.finish();
    unsealed.append(sum.data(), sum.size());
}

std::string encode_snapshot(const state& s, const hash256& chain_hash) {
    std::string out = encode_unsealed_snapshot(s);
    seal_snapshot(out, chain_hash);
    return out;
}

std::uint64_t snapshot_sequence(std::string_view bytes) {
    if (bytes.size() < header_size + 8) return 0;
    std::uint64_t v = 0;
    for (const char c : bytes.substr(header_size, 8)) v = (v << 8) | static_cast<std::uint8_t>(c);
    return v;
}

result<decoded_snapshot, corruption> decode_snapshot(std::string_view bytes) {
    auto bad = [](std::string what) {
        return unexpected{corruption{0, fmt::format("snapshot: {}", what)}};
    };
    if (bytes.size() < header_size + checksum_size) {
        return bad(fmt::format("{} bytes is too short", bytes.size()));
    }
    if (bytes.substr(0, 4) != magic) return bad("bad magic");
    const auto version = static_cast<std::uint8_t>(bytes[4]);
    if (version != snapshot_version) return bad(fmt::format("unknown version {}", version));
    const std::string_view signed_part = bytes.substr(0, bytes.size() - checksum_size);
    const hash256 sum = sha256(signed_part);
    if (!std::equal(sum.begin(), sum.end(), bytes.end() - checksum_size,
                    [](std::uint8_t a, char b) { return a == static_cast<std::uint8_t>(b); })) {
        return bad("checksum mismatch");
    }
    reader r(signed_part.substr(5));
    const std::uint64_t body_len = r.u64();
    if (body_len != r.remaining()) {
        return bad(fmt::format("body_len {} but {} bytes follow", body_len, r.remaining()));
    }

    decoded_snapshot out;
    state& s = out.st;
    s.last_sequence = r.u64();
    const auto hash = r.take(out.chain_hash.size(), "chain hash");
    std::copy(hash.begin(), hash.end(), out.chain_hash.begin());
    s.next_trade_id = r.u64();
    s.trades_total = r.u64();

    const auto customers = r.count(r.u64(), customer_min_size,
                                   std::numeric_limits<std::size_t>::max(), "customers");
    s.customers.reserve(customers);
    const customer* previous = nullptr;
    std::uint64_t previous_key = 0;
    for (std::size_t i = 0; i < customers && !r.failed(); ++i) {
        customer c = read_customer(r);
        if (r.failed()) break;
        const std::uint64_t key = customer_order_key(c.id);
        if (previous != nullptr &&
            !(previous_key < key || (previous_key == key && previous->id < c.id))) {
            r.fail("customers out of order");
        }
        previous_key = key;
        auto id = c.id;
        previous = &s.customers.emplace(std::move(id), std::move(c)).first->second;
    }

    const auto trades = r.count(r.u64(), open_trade_min_size,
                                std::numeric_limits<std::size_t>::max(), "open trades");
    s.open_trades.reserve(trades);
    std::uint64_t previous_trade = 0;
    for (std::size_t i = 0; i < trades && !r.failed(); ++i) {
        const auto record = r.take(r.u32(), "open trade");
        if (r.failed()) break;
        auto t = decode_trade(record);
        if (!t) {
            r.fail(fmt::format("open trade: {}", t.error().what));
            break;
        }
        if (is_terminal(t->status)) r.fail(fmt::format("terminal trade {} kept open", t->id.value));
        if (t->id.value <= previous_trade) r.fail("open trades out of order");
        previous_trade = t->id.value;
        s.open_trades.emplace(t->id.value, std::move(t.value()));
    }
    if (!r.failed() && r.remaining() != 0) r.fail(fmt::format("{} bytes after the state", r.remaining()));
    if (r.failed()) return bad(r.error());
    if (s.last_sequence == 0 && out.chain_hash != hash256{}) return bad("chain hash before record 1");
    if (auto broken = check_invariants(s)) return bad(fmt::format("invariant: {}", *broken));
    return out;
}

}  // namespace broker::journal
