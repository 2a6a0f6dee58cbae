// Journal and trade-store codecs.
//
// Record grammar: see codec.h. The payload of each event type is its fields in the declaration
// order of engine/events.h (all integers big-endian; `bytes` is u16 length + that many bytes):
//
//   customer_opened (1) := customer_id:bytes cash:i64 count:u16 position{count}
//       position        := symbol:u64 qty:i64
//   trade_placed (2)    := trade_id:u64 customer_id:bytes client_order_id:bytes symbol:u64
//                          side:u8 qty:i64 reference_price:i64 limit_price:i64 reserved_cash:i64
//   trade_refused (3)   := trade_id:u64 customer_id:bytes client_order_id:bytes symbol:u64
//                          side:u8 qty:i64 reference_price:i64 reason:u16
//   trade_submitted (4) := trade_id:u64
//   trade_filled (5)    := trade_id:u64 fill_price:i64 exec_id:bytes executed_at:i64
//   trade_rejected (6)  := trade_id:u64 reason:u16 exec_id:bytes
//   trade_canceled (7)  := trade_id:u64
//   trade_modified (8)  := trade_id:u64 qty:i64 reference_price:i64 limit_price:i64
//                          reserved_cash:i64
//
// Terminal trade (trade store value):
//
//   trade_record := version:u8 (= 3) trade placed_qty:i64 checksum:u32
//                                                             -- crc32 of all before it
//   trade        := trade_id:u64 customer_id:bytes client_order_id:bytes symbol:u64 side:u8
//                   qty:i64 status:u8 reason:u16 created_at:i64 updated_at:i64
//                   reference_price:i64 limit_price:i64 reserved_cash:i64
//                   has_fill:u8 (0|1) [fill_price:i64 when has_fill = 1] filled_at:i64
//                   exec_id:bytes
//   Version 1 had no placed_qty (read as qty). Version 2 is never a trade record: it marks an
//   update_group, which the first byte tells apart.
//
// Field constraints, checked when decoding and asserted when encoding so that every record we
// write can be read back:
//   trade_id     >= 1
//   customer_id  1..limits::customer_id_max bytes
//   client_order_id  0..limits::client_order_id_max bytes
//   exec_id      0..exec_id_max bytes
//   symbol       a packed ticker that parse_symbol(to_string(symbol)) gives back unchanged
//   side         1 (buy) | 2 (sell)
//   reason       a known errc; status: a known trade_status
//   positions    at most limits::positions_per_customer_max, strictly ascending by symbol
// Money, quantities and timestamps are not range-checked here: the checksum and the hash chain
// vouch for them, and the engine's rules decide what is legal.
#include "journal/codec.h"

#include <fmt/format.h>
#include <isa-l/crc.h>
#include <openssl/evp.h>

#include <concepts>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>

#include "engine/assert.h"
#include "journal/byte_io.h"

namespace broker::journal {

namespace {

// Exchange execution ids have no engine limit; this bound keeps a hostile or broken record from
// claiming an arbitrarily large string, while leaving room for any real exchange's ids.
constexpr std::size_t exec_id_max = 256;

constexpr std::size_t header_size = 1 + 2 + 8 + 8 + 32 + 4;
constexpr std::size_t checksum_size = 4;
// A record larger than this is corruption, not an event: the largest legal payload (an account
// opened with the maximum number of positions) is about 16 KiB.
constexpr std::uint32_t payload_max = 1U << 20;

static_assert(limits::positions_per_customer_max <= std::numeric_limits<std::uint16_t>::max());
static_assert(exec_id_max <= std::numeric_limits<std::uint16_t>::max());

struct text_field {
    std::string_view name;
    std::size_t min;
    std::size_t max;
};
constexpr text_field customer_id_field{"customer_id", 1, limits::customer_id_max};
constexpr text_field client_order_id_field{"client_order_id", 0, limits::client_order_id_max};
constexpr text_field exec_id_field{"exec_id", 0, exec_id_max};

bool valid_side(std::uint8_t raw) {
    return raw == static_cast<std::uint8_t>(side::buy) ||
           raw == static_cast<std::uint8_t>(side::sell);
}

bool valid_errc(std::uint16_t raw) {
    const auto e = static_cast<errc>(raw);
    return parse_errc(to_string(e)) == e;
}

bool valid_status(std::uint8_t raw) {
    return raw >= static_cast<std::uint8_t>(trade_status::placed) &&
           raw <= static_cast<std::uint8_t>(trade_status::canceled);
}

bool positions_sorted(const std::vector<position_amount>& ps) {
    for (std::size_t i = 1; i < ps.size(); ++i) {
        if (!(ps[i - 1].sym < ps[i].sym)) return false;
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// writer: appends fields; asserts the constraints that reader checks.

class writer : public byte_writer {
  public:
    using byte_writer::byte_writer;

    void operator()(trade_id v) {
        BROKER_ASSERT(v.value >= 1);
        u64(v.value);
    }
    void operator()(money v) { i64(v.ticks); }
    void operator()(quantity v) { i64(v.shares); }
    void operator()(std::int64_t v) { i64(v); }
    void operator()(symbol v) {
        BROKER_ASSERT(valid_symbol(v));
        u64(v.packed);
    }
    void operator()(side v) {
        BROKER_ASSERT(valid_side(static_cast<std::uint8_t>(v)));
        u8(static_cast<std::uint8_t>(v));
    }
    void operator()(errc v) {
        BROKER_ASSERT(valid_errc(static_cast<std::uint16_t>(v)));
        u16(static_cast<std::uint16_t>(v));
    }
    void operator()(trade_status v) {
        BROKER_ASSERT(valid_status(static_cast<std::uint8_t>(v)));
        u8(static_cast<std::uint8_t>(v));
    }
    void operator()(const std::optional<money>& v) {
        u8(v.has_value() ? 1 : 0);
        if (v) i64(v->ticks);
    }
    void operator()(const std::vector<position_amount>& ps) {
        BROKER_ASSERT(ps.size() <= limits::positions_per_customer_max);
        BROKER_ASSERT(positions_sorted(ps));
        u16(static_cast<std::uint16_t>(ps.size()));
        for (const auto& p : ps) {
            (*this)(p.sym);
            (*this)(p.qty);
        }
    }
    void text(const std::string& v, const text_field& f) {
        BROKER_ASSERT(v.size() >= f.min && v.size() <= f.max);
        u16(static_cast<std::uint16_t>(v.size()));
        raw(v);
    }
};

// ---------------------------------------------------------------------------------------------
// reader: bounds-checked; the first failure is remembered and every later read yields zeros, so
// callers check `failed()` once at the end instead of after every field.

class reader : public byte_reader {
  public:
    using byte_reader::byte_reader;

    void raw(std::uint8_t* out, std::size_t n) {
        const std::string_view bytes = take(n, "bytes");
        std::copy(bytes.begin(), bytes.end(), out);
    }

    void operator()(trade_id& v) {
        v.value = u64();
        if (!failed() && v.value == 0) fail("trade id 0");
    }
    void operator()(money& v) { v.ticks = i64(); }
    void operator()(quantity& v) { v.shares = i64(); }
    void operator()(std::int64_t& v) { v = i64(); }
    void operator()(symbol& v) {
        v.packed = u64();
        if (!failed() && !valid_symbol(v)) fail(fmt::format("invalid symbol {:#018x}", v.packed));
    }
    void operator()(side& v) {
        const std::uint8_t raw = u8();
        if (!failed() && !valid_side(raw)) fail(fmt::format("invalid side {}", raw));
        v = static_cast<side>(raw);
    }
    void operator()(errc& v) {
        const std::uint16_t raw = u16();
        if (!failed() && !valid_errc(raw)) fail(fmt::format("invalid reason code {}", raw));
        v = static_cast<errc>(raw);
    }
    void operator()(trade_status& v) {
        const std::uint8_t raw = u8();
        if (!failed() && !valid_status(raw)) fail(fmt::format("invalid trade status {}", raw));
        v = static_cast<trade_status>(raw);
    }
    void operator()(std::optional<money>& v);
    void operator()(std::vector<position_amount>& ps);
    void text(std::string& v, const text_field& f);
};

void reader::operator()(std::optional<money>& v) {
    const std::uint8_t has = u8();
    if (failed()) return;
    if (has > 1) return fail(fmt::format("invalid fill flag {}", has));
    v.reset();
    if (has == 1) v = money{i64()};
}

void reader::operator()(std::vector<position_amount>& ps) {
    const std::uint16_t count = u16();
    if (failed()) return;
    if (count > limits::positions_per_customer_max) {
        return fail(
            fmt::format("{} positions, limit {}", count, limits::positions_per_customer_max));
    }
    ps.resize(count);
    for (auto& p : ps) {
        (*this)(p.sym);
        (*this)(p.qty);
    }
    if (!failed() && !positions_sorted(ps)) fail("positions not strictly sorted by symbol");
}

void reader::text(std::string& v, const text_field& f) {
    const std::uint16_t len = u16();
    if (failed()) return;
    if (len < f.min || len > f.max) {
        return fail(fmt::format("{} is {} bytes, allowed {}..{}", f.name, len, f.min, f.max));
    }
    const std::string_view bytes = take(len, f.name);
    if (!failed()) v.assign(bytes);
}

// ---------------------------------------------------------------------------------------------
// Field lists, shared by writer and reader so that encoding and decoding cannot disagree.
// `E` is the event type, const when encoding.

template <class E, class T>
concept is = std::same_as<std::remove_const_t<E>, T>;

template <class IO, is<customer_opened> E>
void fields(IO& io, E& e) {
    io.text(e.customer_id, customer_id_field);
    io(e.cash);
    io(e.positions);
}

template <class IO, is<trade_placed> E>
void fields(IO& io, E& e) {
    io(e.id);
    io.text(e.customer_id, customer_id_field);
    io.text(e.client_order_id, client_order_id_field);
    io(e.sym);
    io(e.trade_side);
    io(e.qty);
    io(e.reference_price);
    io(e.limit_price);
    io(e.reserved_cash);
}

template <class IO, is<trade_refused> E>
void fields(IO& io, E& e) {
    io(e.id);
    io.text(e.customer_id, customer_id_field);
    io.text(e.client_order_id, client_order_id_field);
    io(e.sym);
    io(e.trade_side);
    io(e.qty);
    io(e.reference_price);
    io(e.reason);
}

template <class IO, class E>
requires is<E, trade_submitted> || is<E, trade_canceled>
void fields(IO& io, E& e) {
    io(e.id);
}

template <class IO, is<trade_filled> E>
void fields(IO& io, E& e) {
    io(e.id);
    io(e.fill_price);
    io.text(e.exec_id, exec_id_field);
    io(e.executed_at);
}

template <class IO, is<trade_rejected> E>
void fields(IO& io, E& e) {
    io(e.id);
    io(e.reason);
    io.text(e.exec_id, exec_id_field);
}

template <class IO, is<trade_modified> E>
void fields(IO& io, E& e) {
    io(e.id);
    io(e.qty);
    io(e.reference_price);
    io(e.limit_price);
    io(e.reserved_cash);
}

template <class IO, is<trade> E>
void fields(IO& io, E& t) {
    io(t.id);
    io.text(t.customer_id, customer_id_field);
    io.text(t.client_order_id, client_order_id_field);
    io(t.sym);
    io(t.trade_side);
    io(t.qty);
    io(t.status);
    io(t.reason);
    io(t.created_at);
    io(t.updated_at);
    io(t.reference_price);
    io(t.limit_price);
    io(t.reserved_cash);
    io(t.fill_price);
    io(t.filled_at);
    io.text(t.exec_id, exec_id_field);
}

// ---------------------------------------------------------------------------------------------

template <class E>
event_body read_body(reader& r) {
    E e{};
    fields(r, e);
    return e;
}

std::optional<event_body> read_payload(event_type type, reader& r) {
    switch (type) {
        case event_type::customer_opened:
            return read_body<customer_opened>(r);
        case event_type::trade_placed:
            return read_body<trade_placed>(r);
        case event_type::trade_refused:
            return read_body<trade_refused>(r);
        case event_type::trade_submitted:
            return read_body<trade_submitted>(r);
        case event_type::trade_filled:
            return read_body<trade_filled>(r);
        case event_type::trade_rejected:
            return read_body<trade_rejected>(r);
        case event_type::trade_canceled:
            return read_body<trade_canceled>(r);
        case event_type::trade_modified:
            return read_body<trade_modified>(r);
    }
    return std::nullopt;
}

struct header {
    std::uint8_t version = 0;
    std::uint16_t type = 0;
    std::uint64_t sequence = 0;
    std::int64_t timestamp = 0;
    hash256 prev{};
    std::uint32_t payload_len = 0;
};

header read_header(reader& r) {
    header h;
    h.version = r.u8();
    h.type = r.u16();
    h.sequence = r.u64();
    h.timestamp = r.i64();
    r.raw(h.prev.data(), h.prev.size());
    h.payload_len = r.u32();
    return h;
}

// The frame checks that need no payload parsing: size, version, length, checksum, sequence.
std::optional<std::string> check_frame(std::uint64_t expected, std::string_view bytes,
                                       const header& h) {
    if (h.version != record_version) return fmt::format("unsupported version {}", h.version);
    if (h.payload_len > payload_max) return fmt::format("payload_len {} too large", h.payload_len);
    const std::size_t want = header_size + h.payload_len + checksum_size;
    if (bytes.size() != want) {
        return fmt::format("record is {} bytes but its header implies {}", bytes.size(), want);
    }
    reader tail(bytes.substr(bytes.size() - checksum_size));
    const std::uint32_t stored = tail.u32();
    const std::uint32_t actual = checksum(bytes.substr(0, bytes.size() - checksum_size));
    if (stored != actual) return fmt::format("checksum {:08x}, expected {:08x}", stored, actual);
    if (h.sequence != expected) return fmt::format("names sequence {}", h.sequence);
    return std::nullopt;
}

unexpected<corruption> record_error(std::uint64_t sequence, std::string_view what) {
    return unexpected{corruption{sequence, fmt::format("record {}: {}", sequence, what)}};
}

}  // namespace

result<record_extent, corruption> next_record(std::string_view bytes, std::uint64_t after) {
    auto error = [after](std::string what) {
        return unexpected{corruption{after + 1, fmt::format("record {}: {}", after + 1, what)}};
    };
    if (bytes.size() < header_size + checksum_size) {
        return error(fmt::format("truncated: {} bytes left for a record", bytes.size()));
    }
    reader r(bytes.substr(0, header_size));
    const header h = read_header(r);
    if (h.payload_len > payload_max) {
        return error(fmt::format("payload_len {} too large", h.payload_len));
    }
    const std::size_t size = header_size + h.payload_len + checksum_size;
    if (size > bytes.size()) {
        return error(fmt::format("header implies {} bytes, {} left", size, bytes.size()));
    }
    return record_extent{h.sequence, size};
}

std::uint32_t checksum(std::string_view bytes) {
    // ISA-L's gzip CRC takes the CRC so far (0 to start) and does the pre- and post-inversion
    // itself, as zlib's crc32 does.
    return crc32_gzip_refl(0, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

void encode_record(const event& e, const hash256& prev_hash, std::string& out) {
    BROKER_ASSERT(e.sequence >= 1);
    const std::size_t start = out.size();
    writer w(out);
    w.u8(record_version);
    w.u16(static_cast<std::uint16_t>(type_of(e.body)));
    w.u64(e.sequence);
    w.i64(e.at);
    out.append(reinterpret_cast<const char*>(prev_hash.data()), prev_hash.size());
    const std::size_t len_at = out.size();
    w.u32(0);  // payload_len, patched below once the payload is written
    std::visit([&](const auto& body) { fields(w, body); }, e.body);
    const std::size_t payload_len = out.size() - len_at - 4;
    BROKER_ASSERT(payload_len <= payload_max);
    for (int i = 0; i < 4; ++i) {
        out[len_at + static_cast<std::size_t>(i)] =
            static_cast<char>((payload_len >> (24 - 8 * i)) & 0xff);
    }
    w.u32(checksum(std::string_view(out).substr(start)));
}

result<decoded_record, corruption> decode_record(std::uint64_t expected_sequence,
                                                 std::string_view bytes) {
    // Sequences start at 1; a record claiming 0 could be decoded but never written back.
    if (expected_sequence == 0) return record_error(0, "sequence 0 does not exist");
    if (bytes.size() < header_size + checksum_size) {
        return record_error(expected_sequence,
                            fmt::format("truncated: {} bytes, a record has at least {}",
                                        bytes.size(), header_size + checksum_size));
    }
    reader r(bytes.substr(0, bytes.size() - checksum_size));
    const header h = read_header(r);
    if (auto bad = check_frame(expected_sequence, bytes, h)) {
        return record_error(expected_sequence, *bad);
    }
    auto body = read_payload(static_cast<event_type>(h.type), r);
    if (!body) return record_error(expected_sequence, fmt::format("unknown event type {}", h.type));
    if (r.failed()) {
        return record_error(expected_sequence,
                            fmt::format("{} payload: {}", to_string(type_of(*body)), r.error()));
    }
    if (r.remaining() != 0) {
        return record_error(expected_sequence,
                            fmt::format("{} trailing payload bytes", r.remaining()));
    }
    return decoded_record{event{h.sequence, h.timestamp, std::move(*body)}, h.prev};
}

hash256 chain_hash(const hash256& prev, std::string_view record_bytes) {
    // The algorithm is fetched once and the context kept per thread: OpenSSL 3 otherwise looks
    // SHA-256 up by name and allocates a context for every record.
    static EVP_MD* const sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    struct ctx_holder {
        EVP_MD_CTX* ctx = EVP_MD_CTX_new();
        ~ctx_holder() { EVP_MD_CTX_free(ctx); }
    };
    thread_local ctx_holder holder;
    BROKER_ASSERT(sha256 != nullptr && holder.ctx != nullptr);
    hash256 out{};
    unsigned int len = 0;
    const bool ok = EVP_DigestInit_ex2(holder.ctx, sha256, nullptr) == 1 &&
                    EVP_DigestUpdate(holder.ctx, prev.data(), prev.size()) == 1 &&
                    EVP_DigestUpdate(holder.ctx, record_bytes.data(), record_bytes.size()) == 1 &&
                    EVP_DigestFinal_ex(holder.ctx, out.data(), &len) == 1;
    // SHA-256 in memory fails only if OpenSSL itself is broken; a wrong hash would be journaled.
    BROKER_ASSERT(ok && len == out.size());
    return out;
}

std::string to_hex(const hash256& h) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(h.size() * 2);
    for (const std::uint8_t b : h) {
        out.push_back(digits[b >> 4]);
        out.push_back(digits[b & 0x0f]);
    }
    return out;
}

void encode_trade(const trade& t, std::string& out) {
    const std::size_t start = out.size();
    writer w(out);
    w.u8(trade_record_version);
    fields(w, t);
    w(t.placed_qty);
    w.u32(checksum(std::string_view(out).substr(start)));
}

result<trade, corruption> decode_trade(std::string_view bytes) {
    auto error = [](std::string_view what) {
        return unexpected{corruption{0, fmt::format("trade record: {}", what)}};
    };
    if (bytes.size() < 1 + checksum_size) {
        return error(fmt::format("truncated: {} bytes", bytes.size()));
    }
    const std::string_view body = bytes.substr(0, bytes.size() - checksum_size);
    reader tail(bytes.substr(body.size()));
    const std::uint32_t stored = tail.u32();
    reader r(body);
    const std::uint8_t version = r.u8();
    if (version != trade_record_version && version != trade_record_version_1) {
        return error(fmt::format("unsupported version {}", version));
    }
    if (stored != checksum(body)) return error("checksum mismatch");
    trade t;
    fields(r, t);
    if (version == trade_record_version) {
        r(t.placed_qty);
    } else {
        t.placed_qty = t.qty;
    }
    if (r.failed()) return error(r.error());
    if (r.remaining() != 0) return error(fmt::format("{} trailing bytes", r.remaining()));
    return t;
}

void encode_update_group(const std::vector<std::string_view>& trade_records, std::string& out) {
    BROKER_ASSERT(trade_records.size() >= 2);
    writer w(out);
    w.u8(update_group_version);
    w.u32(static_cast<std::uint32_t>(trade_records.size()));
    for (const std::string_view record : trade_records) {
        BROKER_ASSERT(!record.empty() &&
                      static_cast<std::uint8_t>(record.front()) == trade_record_version);
        w.u32(static_cast<std::uint32_t>(record.size()));
        w.raw(record);
    }
}

namespace {

// Reads the rest of `r`: `count` trade records, each after its u32 length, into `out`. Empty when
// they all decode and nothing is left over, else why not.
std::string read_trade_records(reader& r, std::uint32_t count, std::vector<trade>& out) {
    out.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) {
        const std::uint32_t length = r.u32();
        const std::string_view record = r.take(length, "trade record");
        if (r.failed()) return r.error();
        auto t = decode_trade(record);
        if (!t) return fmt::format("change {} of {}: {}", i + 1, count, t.error().what);
        out.push_back(std::move(*t));
    }
    if (r.remaining() != 0) return fmt::format("{} trailing bytes", r.remaining());
    return {};
}

}  // namespace

result<std::vector<trade>, corruption> decode_updates(std::string_view bytes) {
    std::vector<trade> out;
    if (bytes.empty() || static_cast<std::uint8_t>(bytes.front()) != update_group_version) {
        auto t = decode_trade(bytes);
        if (!t) return unexpected{std::move(t.error())};
        out.push_back(std::move(*t));
        return out;
    }
    auto error = [](std::string_view what) {
        return unexpected{corruption{0, fmt::format("update group: {}", what)}};
    };
    reader r(bytes.substr(1));
    const std::uint32_t count = r.u32();
    if (r.failed()) return error(r.error());
    // Every record takes at least a length and a version byte: a count beyond that is damage,
    // not a reason to reserve memory.
    if (count < 2 || count > r.remaining() / 5) return error(fmt::format("bad count {}", count));
    if (auto bad = read_trade_records(r, count, out); !bad.empty()) return error(bad);
    return out;
}

namespace {

// A value written before its layout got a version of its own: `older` decodes it into T's first
// member.
template <class T, class Older>
result<T, corruption> older_layout(std::string_view bytes, Older older) {
    auto decoded = older(bytes);
    if (!decoded) return unexpected{std::move(decoded.error())};
    return T{std::move(*decoded)};
}

// Takes `n` header bytes and the crc32 after them from `r`: empty when they match, else why not.
std::string take_checked(reader& r, std::size_t n, std::string_view what,
                         std::string_view& header) {
    header = r.take(n, what);
    const std::uint32_t stored = r.u32();
    if (r.failed()) return r.error();
    if (stored != checksum(header)) return fmt::format("{} checksum mismatch", what);
    return {};
}

}  // namespace

void encode_update_run(std::uint64_t open_from, std::uint64_t next_trade,
                       const std::vector<std::string_view>& trade_records, std::string& out) {
    BROKER_ASSERT(!trade_records.empty());
    const std::size_t start = out.size();
    writer w(out);
    w.u8(update_run_version);
    w.u64(open_from);
    w.u64(next_trade);
    w.u32(static_cast<std::uint32_t>(trade_records.size()));
    w.u32(checksum(std::string_view(out).substr(start)));
    for (const std::string_view record : trade_records) {
        BROKER_ASSERT(!record.empty() &&
                      static_cast<std::uint8_t>(record.front()) == trade_record_version);
        w.u32(static_cast<std::uint32_t>(record.size()));
        w.raw(record);
    }
}

result<update_run, corruption> decode_update_run(std::string_view bytes) {
    if (bytes.empty() || static_cast<std::uint8_t>(bytes.front()) != update_run_version) {
        return older_layout<update_run>(bytes, decode_updates);  // without bounds
    }
    update_run out;
    auto error = [](std::string_view what) {
        return unexpected{corruption{0, fmt::format("update run: {}", what)}};
    };
    reader r(bytes);
    std::string_view header;
    if (auto bad = take_checked(r, 1 + 8 + 8 + 4, "header", header); !bad.empty()) {
        return error(bad);
    }
    reader h(header.substr(1));
    out.bounded = true;
    out.open_from = h.u64();
    out.next_trade = h.u64();
    const std::uint32_t count = h.u32();
    // Every record takes at least a length and a version byte.
    if (count < 1 || count > r.remaining() / 5) return error(fmt::format("bad count {}", count));
    if (auto bad = read_trade_records(r, count, out.trades); !bad.empty()) return error(bad);
    return out;
}

void encode_closed_trade(std::uint64_t update_sequence, std::string_view trade_record,
                         std::string& out) {
    BROKER_ASSERT(!trade_record.empty() &&
                  static_cast<std::uint8_t>(trade_record.front()) == trade_record_version);
    const std::size_t start = out.size();
    writer w(out);
    w.u8(closed_trade_version);
    w.u64(update_sequence);
    w.u32(checksum(std::string_view(out).substr(start)));
    w.raw(trade_record);
}

result<closed_trade, corruption> decode_closed_trade(std::string_view bytes) {
    if (bytes.empty() || static_cast<std::uint8_t>(bytes.front()) != closed_trade_version) {
        return older_layout<closed_trade>(bytes, decode_trade);  // the trade record alone
    }
    closed_trade out;
    reader r(bytes);
    std::string_view header;
    if (auto bad = take_checked(r, 1 + 8, "closed trade header", header); !bad.empty()) {
        return unexpected{corruption{0, fmt::format("trade record: {}", bad)}};
    }
    out.update_sequence = reader(header.substr(1)).u64();
    if (out.update_sequence == 0) {
        return unexpected{corruption{0, "trade record: closed by update sequence 0"}};
    }
    auto t = decode_trade(bytes.substr(header.size() + 4));
    if (!t) return unexpected{std::move(t.error())};
    out.t = std::move(*t);
    return out;
}

}  // namespace broker::journal
