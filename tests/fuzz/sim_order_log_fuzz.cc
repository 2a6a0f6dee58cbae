// libFuzzer target: exchange-sim's order-log decoder (exchange/sim/order_log.h scan_log) and the
// recovery that replays what it decodes (exchange/sim/venue.h venue::apply).
//
// The log is read back after kill -9, torn appends, zero-filled blocks and bit rot; scan_log
// promises to tell a torn tail (truncated) from corruption (refused, with its offset), never to
// assert or read out of bounds, and the codec has one encoding per record.
//
// Input layout:
//
//   input := mode:u8 bytes
//
//   bit 0  prepend the 8-byte magic to `bytes` (so mutations are spent on records, not on it)
//   bit 1  first make every frame's CRC consistent: walk the frames by their length fields and
//          write the correct CRC-32 into each complete one. Without it nearly every mutation dies
//          at the checksum and the field decoders behind it would only ever see the seeds.
//
// In seed files the mode is a printable letter: '@' bytes as given, 'A' magic prepended, 'B' CRCs
// fixed, 'C' both.
//
// Properties (a violation traps):
//   - success: good_bytes <= |image|; torn_tail exactly when good_bytes < |image|; the records
//     re-encode (encode_record) to exactly image[0, good_bytes), magic included (decode -> encode
//     round trip); and image[0, good_bytes) scans to the same records with no torn tail;
//   - error: offset 0 only for a bad magic; otherwise image[0, offset) is a clean log that ends
//     exactly at the offset, which is where a record starts;
//   - the recovered records replay into a venue (as exchange-sim's start-up does) without a
//     crash: apply answers an error for contradictory facts, never asserts, and the venue's
//     views of unexecuted and unacknowledged orders are consistent with what was applied.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "exchange/sim/order_log.h"
#include "exchange/sim/venue.h"

namespace {

using namespace broker;
using namespace broker::exchange::sim;

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "sim_order_log_fuzz: property violated: %s\n", what);
    std::fflush(stderr);
    __builtin_trap();
}

constexpr std::size_t frame_header_size = 8;  // length:u32 crc:u32

std::uint32_t load_be32(const char* p) {
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
    return v;
}

void store_be32(char* p, std::uint32_t v) {
    for (std::size_t i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (24 - 8 * i)) & 0xff);
}

// Writes the right CRC (over the length bytes and the body) into every complete frame.
void fix_crcs(std::vector<char>& image) {
    std::size_t pos = order_log_magic.size();
    while (pos + frame_header_size <= image.size()) {
        const std::uint32_t length = load_be32(image.data() + pos);
        if (length > log_record_max || image.size() - pos - frame_header_size < length) return;
        uLong crc = ::crc32(0L, Z_NULL, 0);
        crc = ::crc32(crc, reinterpret_cast<const Bytef*>(image.data() + pos), 4);
        crc = ::crc32(crc, reinterpret_cast<const Bytef*>(image.data() + pos + frame_header_size),
                      static_cast<uInt>(length));
        store_be32(image.data() + pos + 4, static_cast<std::uint32_t>(crc));
        pos += frame_header_size + length;
    }
}

void check_success(std::string_view image, const scanned_log& log) {
    if (log.good_bytes > image.size()) fail("good_bytes past the end of the image");
    if (log.torn_tail != (log.good_bytes < image.size())) {
        fail("torn_tail disagrees with good_bytes");
    }
    if (log.good_bytes < order_log_magic.size()) {
        // Empty, or a torn magic: nothing recovered, and the image is a prefix of the magic.
        if (log.good_bytes != 0 || !log.records.empty()) fail("records without a whole magic");
        if (order_log_magic.substr(0, image.size()) != image) fail("torn magic is not a prefix");
        return;
    }
    std::string again(order_log_magic);
    for (const auto& r : log.records) encode_record(r, again);
    if (again != image.substr(0, log.good_bytes)) {
        fail("records do not re-encode to the bytes they were decoded from");
    }
    if (log.torn_tail) {
        const auto prefix = scan_log(image.substr(0, log.good_bytes));
        if (!prefix || prefix->torn_tail || prefix->records != log.records) {
            fail("the log without its torn tail does not scan to the same records");
        }
    }
}

void check_error(std::string_view image, const log_error& e) {
    if (e.what.empty()) fail("an error without a description");
    if (e.offset == 0) {
        if (image.substr(0, order_log_magic.size()) == order_log_magic) {
            fail("offset 0 for a log with a good magic");
        }
        return;
    }
    if (e.offset < order_log_magic.size() || e.offset >= image.size()) {
        fail("error offset outside the records");
    }
    const auto prefix = scan_log(image.substr(0, e.offset));
    if (!prefix || prefix->torn_tail || prefix->good_bytes != e.offset) {
        fail("the bytes before a corruption are not a clean log ending there");
    }
}

// exchange-sim's recovery: every record applied to a fresh venue, in order.
void replay(const std::vector<log_record>& records) {
    venue v{venue_config{}};
    std::size_t accepted = 0;
    for (const auto& r : records) {
        const bool is_accept = std::holds_alternative<order_accepted>(r);
        const auto applied = v.apply(r);
        if (applied && is_accept) ++accepted;
        if (!applied && applied.error().empty()) fail("apply error without a description");
    }
    if (v.size() != accepted) fail("venue holds another number of orders than were accepted");
    const auto waiting = v.unexecuted();
    const auto owed = v.unacknowledged();
    if (waiting.size() + owed.size() > v.size()) fail("more pending orders than orders");
    for (const order_entry* e : waiting) {
        if (e->execution || v.find(e->accepted.order_id) != e) fail("unexecuted view is wrong");
    }
    for (std::size_t i = 0; i < owed.size(); ++i) {
        if (!owed[i]->execution || owed[i]->acknowledged) fail("unacknowledged view is wrong");
        if (i > 0 && owed[i - 1]->execution->executed_at > owed[i]->execution->executed_at) {
            fail("unacknowledged orders out of execution order");
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return -1;  // no mode byte
    const std::uint8_t mode = data[0];
    // An exactly sized buffer, so that ASan catches a read one byte past the end.
    std::vector<char> image;
    if (mode & 1) image.assign(order_log_magic.begin(), order_log_magic.end());
    image.insert(image.end(), data + 1, data + size);
    if (mode & 2) fix_crcs(image);
    const std::string_view view(image.data(), image.size());

    const auto scanned = scan_log(view);
    if (!scanned) {
        check_error(view, scanned.error());
        return 0;
    }
    check_success(view, *scanned);
    replay(scanned->records);
    return 0;
}
