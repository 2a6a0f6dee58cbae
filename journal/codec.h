// Journal record codec: the bytes of every event brokerd has ever journaled.
//
// Grammar (all integers big-endian; `bytes` is a u16 length followed by that many bytes):
//
//   record       := header payload checksum
//   header       := version:u8 (= 1)
//                   type:u16            -- event_type, engine/events.h; codes are never reused
//                   sequence:u64        -- 1, 2, 3, ... without gaps
//                   timestamp_ms:i64    -- when the engine decided the event (UTC ms)
//                   prev_hash:u8[32]    -- chain hash of the previous record (zeros before #1)
//                   payload_len:u32
//   payload      := the fields of the event type, in declaration order (see codec.cc), e.g.
//                   trade_filled := trade_id:u64 fill_price:i64 exec_id:bytes executed_at:i64
//   checksum     := crc32:u32           -- CRC-32 (zlib's and gzip's) of header and payload
//
//   chain_hash(n) := SHA-256(chain_hash(n-1) || record(n) bytes)
//
// The checksum catches torn or flipped bytes in one record; the chain proves to an auditor that no
// record was removed, reordered or altered, and the store keeps the last chain hash so that the
// tip can be checked too. Decoding never asserts: bad bytes give a `corruption` naming the
// sequence. Pure functions; safe on any thread.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/events.h"
#include "engine/result.h"
#include "engine/state.h"

namespace broker::journal {

inline constexpr std::uint8_t record_version = 1;
inline constexpr std::uint8_t trade_record_version = 3;
inline constexpr std::uint8_t trade_record_version_1 = 1;  // still read: no placed_qty

using hash256 = std::array<std::uint8_t, 32>;

struct corruption {
    std::uint64_t sequence = 0;  // the record that failed (0 when not a journal record)
    std::string what;
};

struct decoded_record {
    event ev;
    hash256 prev_hash{};
};

// The CRC-32 every checksum in this grammar uses: the one of zlib and gzip (reflected, polynomial
// 0x04C11DB7), so `crc32(0, bytes)` of zlib computes the same value. It is ISA-L's folding
// implementation (PCLMULQDQ where the CPU has it, chosen at run time): on a record of 150-400
// bytes about 14 ns, against 150-220 ns for Debian's zlib.
[[nodiscard]] std::uint32_t checksum(std::string_view bytes);

// Appends the record of `e`, chained to `prev_hash`, to `out`.
void encode_record(const event& e, const hash256& prev_hash, std::string& out);

// Decodes one record. `expected_sequence` is the key it was stored under: a record that names
// another sequence is corruption too.
[[nodiscard]] result<decoded_record, corruption> decode_record(std::uint64_t expected_sequence,
                                                               std::string_view bytes);

// The store keeps a run of consecutive records back to back under one key (store.h); each
// record's header says how long it is. next_record reads the sequence and size of the record at
// the front of `bytes` from its header alone: corruption when the header is cut short, or its
// payload_len is too large or runs past `bytes`. The record itself is not checked (decode_record
// does that). `after` names the previous record's sequence in the error, for the log.
struct record_extent {
    std::uint64_t sequence = 0;
    std::size_t size = 0;
};
[[nodiscard]] result<record_extent, corruption> next_record(std::string_view bytes,
                                                            std::uint64_t after);

// SHA-256(prev || record_bytes): the chain hash of a record.
[[nodiscard]] hash256 chain_hash(const hash256& prev, std::string_view record_bytes);

// Lowercase hex of a hash, for logs and the digest endpoint.
[[nodiscard]] std::string to_hex(const hash256& h);

// A trade as the per-customer indexes keep it (same conventions: version byte, fields, crc32).
void encode_trade(const trade& t, std::string& out);
[[nodiscard]] result<trade, corruption> decode_trade(std::string_view bytes);

// A value of the "updates" family as stores wrote it before update_run (below), still read: the
// trade as each of a run of one customer's consecutive changes left it, in order (closes too).
// A run of one is its trade record alone; a longer one
//   update_group := version:u8 (= 2) count:u32 (>= 2) { length:u32 trade_record }*count
// (each trade record carries its own checksum; a damaged count or length leaves bytes over or
// short, or lands a record on the wrong bytes, and so fails too).
inline constexpr std::uint8_t update_group_version = 2;
// Appends the update_group of at least two trade records (encode_trade's bytes).
void encode_update_group(const std::vector<std::string_view>& trade_records, std::string& out);
[[nodiscard]] result<std::vector<trade>, corruption> decode_updates(std::string_view bytes);

// The "updates" value written now: a run of one customer's consecutive changes, none of them
// the close of an open trade (those are in "closed_by_customer" alone, store.h), with bounds on
// the customer's trades that are open when the run ends:
//   update_run := version:u8 (= 4) open_from:u64 next_trade:u64 count:u32 (>= 1)
//                 crc32:u32 (of the bytes before it) { length:u32 trade_record }*count
// Every trade of the customer open at the run's end has an id in [open_from, next_trade).
inline constexpr std::uint8_t update_run_version = 4;
struct update_run {
    std::vector<trade> trades;
    bool bounded = false;  // false: a value of an older layout, which carries no bounds
    std::uint64_t open_from = 0;
    std::uint64_t next_trade = 0;
};
void encode_update_run(std::uint64_t open_from, std::uint64_t next_trade,
                       const std::vector<std::string_view>& trade_records, std::string& out);
// Any "updates" value: an update_run, an update_group or a trade record alone.
[[nodiscard]] result<update_run, corruption> decode_update_run(std::string_view bytes);

// The "closed_by_customer" value written now: the trade and the update sequence of the change
// that closed it.
//   closed_trade := version:u8 (= 5) update_sequence:u64 crc32:u32 (of the bytes before it)
//                   trade_record
// Older stores hold the trade record alone (the closing change is then in "updates" too).
inline constexpr std::uint8_t closed_trade_version = 5;
struct closed_trade {
    trade t;
    std::uint64_t update_sequence = 0;  // 0: an older value, without it
};
void encode_closed_trade(std::uint64_t update_sequence, std::string_view trade_record,
                         std::string& out);
[[nodiscard]] result<closed_trade, corruption> decode_closed_trade(std::string_view bytes);

}  // namespace broker::journal
