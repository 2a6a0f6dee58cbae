// libFuzzer target: the journal and trade-store codecs (journal/codec.h) on arbitrary bytes.
//
// Journal bytes come back from disk after crashes, torn writes and bit rot, and a standby reads
// them from the network; the codec promises to answer `corruption` for bad bytes, never to assert
// or read out of bounds. It also promises one encoding per value, which the hash chain relies on:
// anything that decodes must re-encode to exactly the input.
//
// Input layout:
//
//   input := mode:u8 bytes
//
//   bit 0  decode `bytes` as a trade-store record (decode_trade) instead of a journal record
//   bit 1  journal records: pass a sequence other than the one the header names, which must fail
//   bit 2  first make the frame consistent: payload_len from the size, and a correct CRC-32
//   bit 3  `bytes` as a stored value that holds several: a journal run (records back to back,
//          delimited by next_record), a value of the updates family (decode_updates and
//          decode_update_run) and a closed trade (decode_closed_trade)
//
// Without bit 2 nearly every mutation dies at the checksum, so the field readers behind it would
// only ever see the seed inputs; with it the fuzzer reaches them, as a bug in our own encoder or a
// record that was corrupted before its checksum was computed would.
// The expected sequence is otherwise the one in the header, so that the fuzzer does not have to
// guess it; a header naming 0 is asked for as 1, because the store's keys start at 1.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "journal/codec.h"

namespace {

using namespace broker;
using namespace broker::journal;

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "journal_fuzz: property violated: %s\n", what);
    std::fflush(stderr);
    __builtin_trap();
}

// The sequence at offset 3 of the record header (after version:u8 and type:u16), big-endian.
std::uint64_t header_sequence(std::string_view bytes) {
    constexpr std::size_t at = 3;
    if (bytes.size() < at + 8) return 1;
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<std::uint8_t>(bytes[at + i]);
    return v;
}

// The record header's payload_len field: after version, type, sequence, timestamp and prev_hash.
constexpr std::size_t payload_len_at = 1 + 2 + 8 + 8 + 32;
constexpr std::size_t header_size = payload_len_at + 4;
constexpr std::size_t checksum_size = 4;

void put_u32(std::vector<char>& bytes, std::size_t at, std::uint32_t v) {
    for (std::size_t i = 0; i < 4; ++i) {
        bytes[at + i] = static_cast<char>((v >> (24 - 8 * i)) & 0xff);
    }
}

void fix_frame(std::vector<char>& bytes, bool record) {
    if (bytes.size() < checksum_size + 1) return;
    if (record && bytes.size() >= header_size + checksum_size) {
        put_u32(bytes, payload_len_at,
                static_cast<std::uint32_t>(bytes.size() - header_size - checksum_size));
    }
    const std::size_t body = bytes.size() - checksum_size;
    const auto crc =
        ::crc32(0L, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(body));
    put_u32(bytes, body, static_cast<std::uint32_t>(crc));
}

void fuzz_record(std::string_view bytes, bool wrong_sequence) {
    std::uint64_t seq = header_sequence(bytes);
    if (seq == 0) seq = 1;
    if (wrong_sequence) seq = seq == UINT64_MAX ? seq - 1 : seq + 1;
    const auto decoded = decode_record(seq, bytes);
    if (!decoded) {
        if (decoded.error().sequence != seq) fail("corruption names another sequence");
        return;
    }
    if (wrong_sequence) fail("record under the wrong sequence decoded");
    if (decoded->ev.sequence != seq) fail("decoded event has another sequence");
    std::string again;
    encode_record(decoded->ev, decoded->prev_hash, again);
    if (again != bytes) fail("record does not re-encode to the same bytes");
}

void fuzz_trade(std::string_view bytes) {
    const auto decoded = decode_trade(bytes);
    if (!decoded) return;
    std::string again;
    encode_trade(*decoded, again);
    if (static_cast<std::uint8_t>(bytes.front()) == trade_record_version) {
        if (again != bytes) fail("trade does not re-encode to the same bytes");
        return;
    }
    // A version-1 record (no placed quantity) is written back in the current version and must
    // read back as the same trade, placed with its quantity.
    if (decoded->placed_qty != decoded->qty) fail("a version-1 trade has a placed quantity");
    const auto back = decode_trade(again);
    if (!back || !(*back == *decoded)) fail("a version-1 trade reads back differently");
}

void fuzz_run(std::string_view bytes) {
    std::uint64_t previous = 0;
    for (std::string_view rest = bytes; !rest.empty();) {
        const auto extent = next_record(rest, previous);
        if (!extent) break;
        if (extent->size == 0 || extent->size > rest.size()) {
            fail("record extent outside the value");
        }
        fuzz_record(rest.substr(0, extent->size), false);
        previous = extent->sequence;
        rest.remove_prefix(extent->size);
    }
    const auto updates = decode_updates(bytes);
    if (!updates) return;
    if (updates->empty()) fail("updates decoded to nothing");
    std::vector<std::string> records;
    for (const trade& t : *updates) encode_trade(t, records.emplace_back());
    std::string again;
    if (records.size() == 1) {
        again = records.front();
    } else {
        encode_update_group(std::vector<std::string_view>(records.begin(), records.end()), again);
    }
    if (again == bytes) return;
    // Only version-1 records (8 bytes shorter each) may re-encode differently, to the same trades.
    const auto back = decode_updates(again);
    if (again.size() <= bytes.size() || (again.size() - bytes.size()) % 8 != 0 || !back ||
        *back != *updates) {
        fail("updates do not re-encode to the same bytes");
    }
}

// The values with a checked header: a bounded run of "updates" and a closed trade. What decodes
// re-encodes to the same bytes, or (version-1 trade records inside) to the same values.
void fuzz_checked_values(std::string_view bytes) {
    if (const auto run = decode_update_run(bytes); run && run->bounded) {
        if (run->trades.empty()) fail("update run decoded to nothing");
        std::vector<std::string> records;
        for (const trade& t : run->trades) encode_trade(t, records.emplace_back());
        std::string again;
        encode_update_run(run->open_from, run->next_trade,
                          std::vector<std::string_view>(records.begin(), records.end()), again);
        const auto back = decode_update_run(again);
        if (again != bytes &&
            (!back || back->trades != run->trades || back->open_from != run->open_from ||
             back->next_trade != run->next_trade)) {
            fail("an update run does not re-encode to the same values");
        }
    }
    if (const auto closed = decode_closed_trade(bytes); closed && closed->update_sequence != 0) {
        std::string record;
        encode_trade(closed->t, record);
        std::string again;
        encode_closed_trade(closed->update_sequence, record, again);
        const auto back = decode_closed_trade(again);
        if (again != bytes && (!back || !(back->t == closed->t) ||
                               back->update_sequence != closed->update_sequence)) {
            fail("a closed trade does not re-encode to the same values");
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return -1;  // no mode byte
    const std::uint8_t mode = data[0];
    // An exactly sized copy, so that ASan still catches a read one byte past the end (a
    // std::string would have its terminator there).
    std::vector<char> bytes(data + 1, data + size);
    if (mode & 4) fix_frame(bytes, (mode & 1) == 0);
    const std::string_view view(bytes.data(), bytes.size());
    if (mode & 8) {
        fuzz_run(view);
        fuzz_checked_values(view);
    } else if (mode & 1) {
        fuzz_trade(view);
    } else {
        fuzz_record(view, (mode & 2) != 0);
    }
    return 0;
}
