// What lies behind the first damaged record of a store's RocksDB write-ahead logs.
//
// When a WAL batch fails its checksum at open, the store must tell a torn tail (the write in
// progress when the machine stopped: never synced, never acknowledged) from damage with synced
// batches behind it. RocksDB's own reader cannot say: even when told to skip corrupted records, it
// drops the rest of the 32 KiB block the damage is in, batches and all, so damage in the last
// block of a log would pass for a torn tail and the batches after it would be lost quietly.
//
// This reads the logs' physical records itself (RocksDB's log format: 32 KiB blocks of records,
// each a 7-byte header of masked CRC32C, length and type, then the payload; a block's last bytes,
// too few for a header, are zeros). It finds the first record that fails its checksum or whose
// header cannot be one, then counts the records behind it that start a batch (full or first
// fragment) and pass their checksum, resynchronizing byte by byte inside a block when the damage
// hid where the next header starts. The engine writes a batch only after the one before it was
// synced, so one such record proves the damaged batch was synced: it is damage, not a torn write.
// The fragments that continue the damaged batch itself do not count.
//
// It reads only, and only on the open that found damage. The checksums are computed with
// RocksDB's own CRC32C (its public file checksum generator), not a copy of it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace broker::journal {

struct wal_damage {
    std::string file;          // the log holding the first damaged record
    std::uint64_t offset = 0;  // where that record's header starts
    std::uint64_t behind = 0;  // batches that start after it with a good checksum
};

// Scans the NNNNNN.log files of `dir` in the order of their numbers. nullopt: no damaged record
// (or no log could be read), so the damage RocksDB reported is elsewhere.
[[nodiscard]] std::optional<wal_damage> find_wal_damage(const std::string& dir);

// RocksDB's masked CRC32C of a record of `type` with `payload`, as its header stores it; exposed
// for the tests that build logs by hand.
[[nodiscard]] std::uint32_t wal_record_checksum(std::uint8_t type, std::string_view payload);

}  // namespace broker::journal
