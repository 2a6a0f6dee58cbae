// Big-endian fields for the journal's binary formats (records, trade rows, snapshots).
//
// byte_writer appends fields. byte_reader reads them bounds-checked: its first failure sticks and
// every later read yields zeros, so a decoder checks failed() once at the end. Bytes from disk are
// untrusted: a short or bad field is an error, never an assertion.
#pragma once

#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace broker::journal {

class byte_writer {
public:
    explicit byte_writer(std::string& out) : out_(out) {}

    void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
    void u16(std::uint16_t v) { put_be(v, 2); }
    void u32(std::uint32_t v) { put_be(v, 4); }
    void u64(std::uint64_t v) { put_be(v, 8); }
    void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
    void raw(std::string_view v) { out_.append(v); }

private:
    // One append per field, not one push_back per byte.
    void put_be(std::uint64_t v, int n) {
        char buf[8];
        for (int i = 0; i < n; ++i) buf[i] = static_cast<char>((v >> (8 * (n - 1 - i))) & 0xff);
        out_.append(buf, static_cast<std::size_t>(n));
    }

    std::string& out_;
};

class byte_reader {
public:
    explicit byte_reader(std::string_view bytes) : bytes_(bytes) {}

    [[nodiscard]] bool failed() const { return !error_.empty(); }
    [[nodiscard]] const std::string& error() const { return error_; }
    [[nodiscard]] std::size_t remaining() const { return bytes_.size() - pos_; }

    std::uint8_t u8() { return static_cast<std::uint8_t>(get_be(1, "integer")); }
    std::uint16_t u16() { return static_cast<std::uint16_t>(get_be(2, "integer")); }
    std::uint32_t u32() { return static_cast<std::uint32_t>(get_be(4, "integer")); }
    std::uint64_t u64() { return get_be(8, "integer"); }
    std::int64_t i64() { return static_cast<std::int64_t>(u64()); }

    // The next `n` bytes; empty, and failed, when fewer remain. `what` names them in the error.
    std::string_view take(std::size_t n, std::string_view what) {
        if (failed()) return {};
        if (remaining() < n) {
            fail(fmt::format("truncated: {} needs {} bytes, {} left", what, n, remaining()));
            return {};
        }
        const std::string_view out = bytes_.substr(pos_, n);
        pos_ += n;
        return out;
    }

    // Records the first failure; later ones are consequences and are dropped.
    void fail(std::string what) {
        if (error_.empty()) error_ = std::move(what);
    }

private:
    std::uint64_t get_be(std::size_t n, std::string_view what) {
        std::uint64_t v = 0;
        for (const char c : take(n, what)) v = (v << 8) | static_cast<std::uint8_t>(c);
        return v;
    }

    std::string_view bytes_;
    std::size_t pos_ = 0;
    std::string error_;
};

}  // namespace broker::journal
