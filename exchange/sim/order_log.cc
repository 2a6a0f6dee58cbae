// exchange-sim order log codec and file.
//
// Grammar (all integers big-endian; `str` is a u16 length followed by that many bytes):
//
//   file      := magic record*
//   magic     := "XSIMLOG" 0x01                       -- 8 bytes
//   record    := length:u32 crc:u32 body
//                  length = |body|, 2 .. log_record_max
//                  crc    = zlib CRC-32 of the 4 length bytes followed by body
//   body      := version:u8 (= 1) type:u8 fields
//   type 1    := order_accepted
//                  order_id:u64 symbol:str side:u8 (1 BUY, 2 SELL) quantity:i64
//                  limit_price_ticks:i64 (0 = none) callback_url:str accepted_at_ms:i64
//                  execute_at_ms:i64
//   type 2    := order_executed
//                  order_id:u64 exec_id:str outcome:u8 (1 FILLED, 2 REJECTED)
//                  fill_price_ticks:i64 reason:str executed_at_ms:i64
//   type 3    := callback_acked
//                  order_id:u64
//
// The CRC covers the length too, so a flipped length is caught rather than trusted. A body must be
// consumed exactly; every field is range-checked (ticker syntax, side, 1..quantity_max, prices up
// to price_max, text lengths).
//
// Torn tail versus corruption. Records are only ever appended, one group at a time, each group
// followed by fdatasync; so a crash can damage only the last group, and only by leaving it short
// (the file ends inside it) or, on some file systems, zero-filled. A bad record at offset X is
// therefore a torn tail, truncated at X, when
//   - the file ends inside its 8-byte frame header or inside the body its length announces, or
//   - every byte from X to the end of the file is zero, or
//   - its checksum fails and it is the last record (it ends exactly at the end of the file).
// Any other bad record -- a checksum failure with good-looking records after it, a length above
// log_record_max, an unknown version or type, a field out of range -- is corruption, reported
// with its offset. (A length field corrupted into pointing past the end of the file is
// indistinguishable from a torn append and is truncated; the CRC cannot help, since the bytes it
// covers are missing.)
#include "exchange/sim/order_log.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>

#include "engine/assert.h"
#include "engine/limits.h"

namespace broker::exchange::sim {

namespace {

constexpr std::size_t frame_header_size = 8;  // length:u32 crc:u32
constexpr std::size_t body_min = 2;           // version:u8 type:u8

enum class record_type : std::uint8_t {
    order_accepted = 1,
    order_executed = 2,
    callback_acked = 3
};

std::uint32_t crc32_of(std::string_view a, std::string_view b) {
    uLong crc = ::crc32(0L, Z_NULL, 0);
    crc = ::crc32(crc, reinterpret_cast<const Bytef*>(a.data()), static_cast<uInt>(a.size()));
    crc = ::crc32(crc, reinterpret_cast<const Bytef*>(b.data()), static_cast<uInt>(b.size()));
    return static_cast<std::uint32_t>(crc);
}

class writer {
  public:
    explicit writer(std::string& out) : out_(out) {}
    void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
    void u16(std::uint16_t v) { be(v, 2); }
    void u32(std::uint32_t v) { be(v, 4); }
    void u64(std::uint64_t v) { be(v, 8); }
    void i64(std::int64_t v) { be(static_cast<std::uint64_t>(v), 8); }
    void str(std::string_view s) {
        BROKER_ASSERT(s.size() <= 0xffff);
        u16(static_cast<std::uint16_t>(s.size()));
        out_.append(s);
    }

  private:
    void be(std::uint64_t v, int bytes) {
        for (int i = bytes - 1; i >= 0; --i)
            out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    }
    std::string& out_;
};

class reader {
  public:
    explicit reader(std::string_view in) : in_(in) {}
    [[nodiscard]] bool done() const { return pos_ == in_.size(); }
    std::optional<std::uint8_t> u8() {
        auto v = be(1);
        if (!v) return std::nullopt;
        return static_cast<std::uint8_t>(*v);
    }
    std::optional<std::uint16_t> u16() {
        auto v = be(2);
        if (!v) return std::nullopt;
        return static_cast<std::uint16_t>(*v);
    }
    std::optional<std::uint32_t> u32() {
        auto v = be(4);
        if (!v) return std::nullopt;
        return static_cast<std::uint32_t>(*v);
    }
    std::optional<std::uint64_t> u64() { return be(8); }
    std::optional<std::int64_t> i64() {
        auto v = be(8);
        if (!v) return std::nullopt;
        return static_cast<std::int64_t>(*v);
    }
    std::optional<std::string> str(std::size_t max) {
        const auto n = u16();
        if (!n || *n > max || in_.size() - pos_ < *n) return std::nullopt;
        std::string s(in_.substr(pos_, *n));
        pos_ += *n;
        return s;
    }

  private:
    std::optional<std::uint64_t> be(std::size_t bytes) {
        if (in_.size() - pos_ < bytes) return std::nullopt;
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < bytes; ++i) {
            v = (v << 8) | static_cast<unsigned char>(in_[pos_ + i]);
        }
        pos_ += bytes;
        return v;
    }
    std::string_view in_;
    std::size_t pos_ = 0;
};

void encode_body(const order_accepted& r, writer& w) {
    BROKER_ASSERT(r.symbol.size() <= log_text_max && r.callback_url.size() <= callback_url_max);
    w.u8(static_cast<std::uint8_t>(record_type::order_accepted));
    w.u64(r.order_id);
    w.str(r.symbol);
    w.u8(static_cast<std::uint8_t>(r.order_side));
    w.i64(r.quantity);
    w.i64(r.limit_price_ticks);
    w.str(r.callback_url);
    w.i64(r.accepted_at);
    w.i64(r.execute_at);
}

void encode_body(const order_executed& r, writer& w) {
    BROKER_ASSERT(r.exec_id.size() <= log_text_max && r.reason.size() <= log_text_max);
    w.u8(static_cast<std::uint8_t>(record_type::order_executed));
    w.u64(r.order_id);
    w.str(r.exec_id);
    w.u8(static_cast<std::uint8_t>(r.outcome));
    w.i64(r.fill_price_ticks);
    w.str(r.reason);
    w.i64(r.executed_at);
}

void encode_body(const callback_acked& r, writer& w) {
    w.u8(static_cast<std::uint8_t>(record_type::callback_acked));
    w.u64(r.order_id);
}

[[nodiscard]] bool valid_price(std::int64_t ticks) {
    return ticks >= 0 && ticks <= limits::price_max_ticks;
}

std::optional<log_record> decode_accepted(reader& r) {
    order_accepted a;
    const auto id = r.u64();
    auto sym = r.str(log_text_max);
    const auto sd = r.u8();
    const auto qty = r.i64();
    const auto limit = r.i64();
    auto url = r.str(callback_url_max);
    const auto at = r.i64();
    const auto exec_at = r.i64();
    if (!id || !sym || !sd || !qty || !limit || !url || !at || !exec_at) return std::nullopt;
    if (!parse_symbol(*sym) || (*sd != 1 && *sd != 2)) return std::nullopt;
    if (*qty < 1 || *qty > limits::quantity_max || !valid_price(*limit)) return std::nullopt;
    if (url->empty()) return std::nullopt;
    a.order_id = *id;
    a.symbol = std::move(*sym);
    a.order_side = static_cast<side>(*sd);
    a.quantity = *qty;
    a.limit_price_ticks = *limit;
    a.callback_url = std::move(*url);
    a.accepted_at = *at;
    a.execute_at = *exec_at;
    return a;
}

std::optional<log_record> decode_executed(reader& r) {
    order_executed e;
    const auto id = r.u64();
    auto exec_id = r.str(log_text_max);
    const auto outcome = r.u8();
    const auto fill = r.i64();
    auto reason = r.str(log_text_max);
    const auto at = r.i64();
    if (!id || !exec_id || !outcome || !fill || !reason || !at) return std::nullopt;
    if (exec_id->empty() || !valid_price(*fill)) return std::nullopt;
    if (*outcome == static_cast<std::uint8_t>(order_outcome::filled)) {
        if (*fill == 0 || !reason->empty()) return std::nullopt;
    } else if (*outcome == static_cast<std::uint8_t>(order_outcome::rejected)) {
        if (*fill != 0 || reason->empty()) return std::nullopt;
    } else {
        return std::nullopt;
    }
    e.order_id = *id;
    e.exec_id = std::move(*exec_id);
    e.outcome = static_cast<order_outcome>(*outcome);
    e.fill_price_ticks = *fill;
    e.reason = std::move(*reason);
    e.executed_at = *at;
    return e;
}

// Decodes a body whose checksum already matched; nullopt means "well framed, but not a record we
// could have written".
std::optional<log_record> decode_body(std::string_view body) {
    reader r(body);
    const auto version = r.u8();
    const auto type = r.u8();
    if (!version || !type || *version != order_log_version) return std::nullopt;
    std::optional<log_record> out;
    switch (static_cast<record_type>(*type)) {
        case record_type::order_accepted:
            out = decode_accepted(r);
            break;
        case record_type::order_executed:
            out = decode_executed(r);
            break;
        case record_type::callback_acked: {
            const auto id = r.u64();
            if (id) out = callback_acked{*id};
            break;
        }
    }
    if (!out || !r.done()) return std::nullopt;
    return out;
}

[[nodiscard]] bool all_zero(std::string_view bytes) {
    return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

std::uint32_t load_be32(std::string_view b) {
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(b[i]);
    return v;
}

std::string errno_text(const char* what, const std::string& path) {
    return fmt::format("{} {}: {}", what, path, std::strerror(errno));
}

// fsync of the directory, so that a newly created file's name is durable too.
[[nodiscard]] bool sync_dir(const std::string& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = ::fsync(fd) == 0;
    ::close(fd);
    return ok;
}

[[nodiscard]] bool write_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
        const ssize_t n = ::write(fd, bytes.data(), bytes.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

[[nodiscard]] bool read_all(int fd, std::string& out) {
    char buf[1 << 16];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        if (n == 0) return true;
        out.append(buf, static_cast<std::size_t>(n));
    }
}

}  // namespace

void encode_record(const log_record& r, std::string& out) {
    std::string body;
    writer w(body);
    w.u8(order_log_version);
    std::visit([&w](const auto& rec) { encode_body(rec, w); }, r);
    BROKER_ASSERT(body.size() >= body_min && body.size() <= log_record_max);
    std::string length;
    writer(length).u32(static_cast<std::uint32_t>(body.size()));
    out.append(length);
    writer(out).u32(crc32_of(length, body));
    out.append(body);
}

result<scanned_log, log_error> scan_log(std::string_view image) {
    scanned_log out;
    if (image.size() < order_log_magic.size() && order_log_magic.substr(0, image.size()) == image) {
        out.torn_tail = !image.empty();  // created, then killed before the magic was whole
        return out;
    }
    if (image.substr(0, order_log_magic.size()) != order_log_magic) {
        return unexpected{log_error{0, "not an exchange-sim order log (bad magic)"}};
    }
    std::size_t pos = order_log_magic.size();
    while (pos < image.size()) {
        const std::string_view rest = image.substr(pos);
        const auto torn = [&] {
            out.torn_tail = true;
            out.good_bytes = pos;
            return out;
        };
        if (all_zero(rest)) return torn();
        if (rest.size() < frame_header_size) return torn();
        const std::uint32_t length = load_be32(rest);
        if (length < body_min || length > log_record_max) {
            return unexpected{log_error{pos, fmt::format("bad record length {}", length)}};
        }
        if (rest.size() - frame_header_size < length) return torn();
        const std::string_view body = rest.substr(frame_header_size, length);
        const std::size_t end = pos + frame_header_size + length;
        if (load_be32(rest.substr(4)) != crc32_of(rest.substr(0, 4), body)) {
            if (end == image.size()) return torn();
            return unexpected{log_error{pos, "checksum mismatch"}};
        }
        auto rec = decode_body(body);
        if (!rec) return unexpected{log_error{pos, "malformed record"}};
        out.records.push_back(std::move(*rec));
        pos = end;
    }
    out.good_bytes = pos;
    return out;
}

result<order_log::opened, log_error> order_log::open(const std::string& dir) {
    std::error_code fs_ec;
    std::filesystem::create_directories(dir, fs_ec);
    if (fs_ec) return unexpected{log_error{0, fmt::format("create {}: {}", dir, fs_ec.message())}};
    const std::string path = (std::filesystem::path(dir) / order_log_file_name).string();
    const bool existed = std::filesystem::exists(path, fs_ec);
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return unexpected{log_error{0, errno_text("open", path)}};
    std::unique_ptr<order_log> log(new order_log(fd, 0));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        return unexpected{log_error{0, fmt::format("{} is in use by another process", path)}};
    }
    std::string image;
    if (!read_all(fd, image)) return unexpected{log_error{0, errno_text("read", path)}};
    auto scanned = scan_log(image);
    if (!scanned) {
        return unexpected{log_error{scanned.error().offset,
                                    fmt::format("{} at offset {}: {}", path, scanned.error().offset,
                                                scanned.error().what)}};
    }
    opened out;
    std::size_t good = scanned->good_bytes;
    if (good < order_log_magic.size()) {
        // Empty (or a torn magic): start the file afresh.
        if (::ftruncate(fd, 0) != 0 || ::lseek(fd, 0, SEEK_SET) != 0 ||
            !write_all(fd, order_log_magic) || ::fsync(fd) != 0) {
            return unexpected{log_error{0, errno_text("initialise", path)}};
        }
        if (!existed && !sync_dir(dir)) return unexpected{log_error{0, errno_text("fsync", dir)}};
        out.truncated_bytes = image.size();
        good = order_log_magic.size();
    } else if (good < image.size()) {
        if (::ftruncate(fd, static_cast<off_t>(good)) != 0 || ::fsync(fd) != 0) {
            return unexpected{log_error{good, errno_text("truncate", path)}};
        }
        out.truncated_bytes = image.size() - good;
    }
    if (::lseek(fd, static_cast<off_t>(good), SEEK_SET) < 0) {
        return unexpected{log_error{good, errno_text("seek", path)}};
    }
    log->size_ = good;
    out.log = std::move(log);
    out.records = std::move(scanned->records);
    return out;
}

order_log::~order_log() {
    if (fd_ >= 0) ::close(fd_);
}

result<ok_t, log_error> order_log::append(std::string_view framed) {
    if (framed.empty()) return ok_v;
    // fdatasync suffices: it flushes the data and the file size that finding the data needs.
    if (!write_all(fd_, framed) || ::fdatasync(fd_) != 0) {
        return unexpected{log_error{size_, fmt::format("append: {}", std::strerror(errno))}};
    }
    size_ += framed.size();
    return ok_v;
}

}  // namespace broker::exchange::sim
