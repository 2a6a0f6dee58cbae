#include "journal/wal_scan.h"

#include <rocksdb/file_checksum.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

namespace broker::journal {

namespace {

// RocksDB's log format (db/log_format.h): records never straddle a block; a batch longer than
// what is left of a block is cut into a first, middle and last fragment.
constexpr std::size_t block_size = 32768;
constexpr std::size_t header_size = 7;  // masked crc32c (4, little-endian), length (2), type (1)
constexpr std::uint8_t zero_type = 0;   // reserved for preallocated (here: zeroed ahead) space
constexpr std::uint8_t full_type = 1;
constexpr std::uint8_t first_type = 2;
constexpr std::uint8_t last_type = 4;
// Recyclable records (5-8) and compression records (9) are not written with the options this
// store uses (no WAL recycling, no WAL compression): here they are damage like any other type.

std::uint32_t crc32c(std::uint8_t type, std::string_view payload) {
    static const std::shared_ptr<rocksdb::FileChecksumGenFactory> factory =
        rocksdb::GetFileChecksumGenCrc32cFactory();
    auto gen = factory->CreateFileChecksumGenerator(rocksdb::FileChecksumGenContext{});
    const char t = static_cast<char>(type);
    gen->Update(&t, 1);
    if (!payload.empty()) gen->Update(payload.data(), payload.size());
    gen->Finalize();
    const std::string c = gen->GetChecksum();  // big-endian, as RocksDB's header says
    std::uint32_t v = 0;
    for (const char byte : c) v = (v << 8) | static_cast<unsigned char>(byte);
    return v;
}

std::uint32_t masked(std::uint32_t crc) {
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8U;
}

enum class record_kind { zeros, good, bad };

struct record {
    record_kind kind = record_kind::bad;
    std::uint8_t type = 0;
    std::size_t length = 0;  // of the payload, as the header says
};

// The record whose header starts at `pos` of `block` (pos + header_size <= block.size()).
record read_record(std::string_view block, std::size_t pos) {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(block[pos + i]); };
    const std::uint32_t stored = byte(0) | (std::uint32_t{byte(1)} << 8) |
                                 (std::uint32_t{byte(2)} << 16) | (std::uint32_t{byte(3)} << 24);
    const std::size_t length = byte(4) | (std::size_t{byte(5)} << 8);
    const std::uint8_t type = byte(6);
    if (type == zero_type && length == 0) return {record_kind::zeros, type, length};
    if (type < full_type || type > last_type || pos + header_size + length > block.size()) {
        return {record_kind::bad, type, length};
    }
    const auto payload = block.substr(pos + header_size, length);
    const bool good = masked(crc32c(type, payload)) == stored;
    return {good ? record_kind::good : record_kind::bad, type, length};
}

bool starts_batch(std::string_view block, std::size_t pos) {
    const auto type = static_cast<unsigned char>(block[pos + 6]);
    if (type != full_type && type != first_type) return false;  // cheap test first
    return read_record(block, pos).kind == record_kind::good;
}

class scanner {
  public:
    // One block of `file` at `offset`. Each block starts with a header: a record of its own or
    // the next fragment of a batch.
    void block(const std::string& file, std::uint64_t offset, std::string_view b) {
        std::size_t pos = 0;
        while (pos + header_size <= b.size()) {
            const record r = read_record(b, pos);
            if (r.kind == record_kind::zeros) return;  // the rest of the block was never written
            if (r.kind == record_kind::good) {
                if (damage_ && (r.type == full_type || r.type == first_type)) ++damage_->behind;
                pos += header_size + r.length;
                continue;
            }
            if (!damage_) damage_ = wal_damage{file, offset + pos, 0};
            // A damaged record's length cannot be trusted: look for the next batch byte by byte.
            for (++pos; pos + header_size <= b.size() && !starts_batch(b, pos); ++pos) {
            }
        }
    }

    [[nodiscard]] const std::optional<wal_damage>& damage() const { return damage_; }

  private:
    std::optional<wal_damage> damage_;
};

std::vector<std::pair<std::uint64_t, std::filesystem::path>> logs_of(const std::string& dir) {
    std::vector<std::pair<std::uint64_t, std::filesystem::path>> logs;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
        const std::string name = entry.path().filename().string();
        if (!name.ends_with(".log") || name.size() <= 4) continue;
        std::uint64_t number = 0;
        const char* end = name.data() + name.size() - 4;
        const auto [p, err] = std::from_chars(name.data(), end, number);
        if (err != std::errc{} || p != end) continue;
        logs.emplace_back(number, entry.path());
    }
    std::sort(logs.begin(), logs.end());
    return logs;
}

}  // namespace

std::uint32_t wal_record_checksum(std::uint8_t type, std::string_view payload) {
    return masked(crc32c(type, payload));
}

std::optional<wal_damage> find_wal_damage(const std::string& dir) {
    scanner scan;
    std::string buffer(block_size, '\0');
    for (const auto& [number, path] : logs_of(dir)) {
        std::ifstream in(path, std::ios::binary);
        if (!in) continue;
        for (std::uint64_t offset = 0;; offset += block_size) {
            in.read(buffer.data(), static_cast<std::streamsize>(block_size));
            const auto got = static_cast<std::size_t>(in.gcount());
            if (got == 0) break;
            scan.block(path.string(), offset, std::string_view(buffer.data(), got));
            if (got < block_size) break;
        }
    }
    return scan.damage();
}

}  // namespace broker::journal
