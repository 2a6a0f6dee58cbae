// exchange-sim's order log: codec round trip, torn-tail recovery, corruption detection.
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "exchange/sim/order_log.h"
#include "tests/temp_dir.h"

using namespace broker;
using namespace broker::exchange::sim;

namespace {

namespace fs = std::filesystem;

class temp_dir : public broker::test_support::temp_dir {
  public:
    temp_dir() : broker::test_support::temp_dir("xsim-log-test") {}
    [[nodiscard]] std::string str() const { return path().string(); }
    [[nodiscard]] std::string log_path() const { return (path() / order_log_file_name).string(); }
};

order_accepted accepted(std::uint64_t id) {
    return order_accepted{id,
                          "BRK.B",
                          side::sell,
                          250,
                          1'905'000,
                          "http://127.0.0.1:8080/v1/exchange/callbacks",
                          1'700'000'000'000 + static_cast<std::int64_t>(id),
                          1'700'000'000'020 + static_cast<std::int64_t>(id)};
}

order_executed filled(std::uint64_t id) {
    return order_executed{id, "XS-" + std::to_string(id), order_outcome::filled, 1'899'999,
                          "", 1'700'000'000'050};
}

order_executed rejected(std::uint64_t id) {
    return order_executed{id, "XS-" + std::to_string(id), order_outcome::rejected,
                          0,  "limit_not_marketable",     1'700'000'000'051};
}

std::vector<log_record> sample() {
    return {accepted(1), filled(1), callback_acked{1}, accepted(2), rejected(2), accepted(3)};
}

std::string image_of(const std::vector<log_record>& records) {
    std::string out(order_log_magic);
    for (const auto& r : records) encode_record(r, out);
    return out;
}

// Offsets at which each record of image_of(records) starts.
std::vector<std::size_t> offsets_of(const std::vector<log_record>& records) {
    std::vector<std::size_t> out;
    std::string image(order_log_magic);
    for (const auto& r : records) {
        out.push_back(image.size());
        encode_record(r, image);
    }
    return out;
}

void write_file(const std::string& path, const std::string& bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("every record kind survives an encode and decode round trip") {
    const auto records = sample();
    const auto scanned = scan_log(image_of(records));
    REQUIRE(scanned.has_value());
    CHECK(scanned->records == records);
    CHECK_FALSE(scanned->torn_tail);
    CHECK(scanned->good_bytes == image_of(records).size());
}

TEST_CASE("records appended to the file are all there after reopening") {
    temp_dir dir;
    {
        auto opened = order_log::open(dir.str());
        REQUIRE(opened.has_value());
        CHECK(opened->records.empty());
        std::string batch;
        for (const auto& r : sample()) encode_record(r, batch);
        REQUIRE(opened->log->append(batch).has_value());
    }
    auto reopened = order_log::open(dir.str());
    REQUIRE(reopened.has_value());
    CHECK(reopened->records == sample());
    CHECK(reopened->truncated_bytes == 0);
    // Appending continues after the recovered records.
    std::string more;
    encode_record(callback_acked{2}, more);
    REQUIRE(reopened->log->append(more).has_value());
    reopened->log.reset();
    auto again = order_log::open(dir.str());
    REQUIRE(again.has_value());
    CHECK(again->records.size() == sample().size() + 1);
}

TEST_CASE("a log cut anywhere inside its last record recovers every earlier record") {
    const auto records = sample();
    const std::string full = image_of(records);
    const std::size_t last = offsets_of(records).back();
    for (std::size_t cut = last + 1; cut < full.size(); ++cut) {
        temp_dir dir;
        write_file(dir.log_path(), full.substr(0, cut));
        auto opened = order_log::open(dir.str());
        REQUIRE_MESSAGE(opened.has_value(), "cut at ", cut);
        CHECK(opened->records == std::vector<log_record>(records.begin(), records.end() - 1));
        CHECK(opened->truncated_bytes == cut - last);
        // The torn bytes are gone from the file, so the next append starts at a record boundary.
        std::string more;
        encode_record(callback_acked{2}, more);
        REQUIRE(opened->log->append(more).has_value());
        opened->log.reset();
        CHECK(read_file(dir.log_path()) == full.substr(0, last) + more);
    }
}

TEST_CASE("a zero-filled tail after a crash is truncated as torn") {
    temp_dir dir;
    const std::string full = image_of(sample());
    write_file(dir.log_path(), full + std::string(4096, '\0'));
    auto opened = order_log::open(dir.str());
    REQUIRE(opened.has_value());
    CHECK(opened->records == sample());
    CHECK(opened->truncated_bytes == 4096);
    opened->log.reset();
    CHECK(read_file(dir.log_path()) == full);
}

TEST_CASE("a last record with a bad checksum is a torn tail") {
    const auto records = sample();
    std::string image = image_of(records);
    image.back() = static_cast<char>(image.back() ^ 0x40);
    const auto scanned = scan_log(image);
    REQUIRE(scanned.has_value());
    CHECK(scanned->torn_tail);
    CHECK(scanned->records.size() == records.size() - 1);
    CHECK(scanned->good_bytes == offsets_of(records).back());
}

TEST_CASE("a file killed while its magic was written is an empty log") {
    temp_dir dir;
    write_file(dir.log_path(), std::string(order_log_magic.substr(0, 3)));
    auto opened = order_log::open(dir.str());
    REQUIRE(opened.has_value());
    CHECK(opened->records.empty());
    opened->log.reset();
    CHECK(read_file(dir.log_path()) == std::string(order_log_magic));
}

TEST_CASE("a flipped byte before the last record is corruption naming its offset") {
    const auto records = sample();
    const auto offsets = offsets_of(records);
    const std::string clean = image_of(records);
    // Every byte of every record but the last, one at a time: never silently skipped.
    for (std::size_t i = 1; i + 1 < records.size(); ++i) {
        for (std::size_t at = offsets[i]; at < offsets[i + 1]; ++at) {
            std::string image = clean;
            image[at] = static_cast<char>(image[at] ^ 0x01);
            const auto scanned = scan_log(image);
            // A length grown past the end of the file looks exactly like a torn append (see
            // order_log.cc); every other flip must be refused.
            if (scanned.has_value()) {
                CHECK_MESSAGE(scanned->torn_tail, "byte ", at);
                CHECK_MESSAGE(at < offsets[i] + 4, "byte ", at);
                continue;
            }
            CHECK_MESSAGE(scanned.error().offset == offsets[i], "byte ", at);
        }
    }
}

TEST_CASE("opening a corrupt log is a start-up error and leaves the file alone") {
    temp_dir dir;
    const auto records = sample();
    std::string image = image_of(records);
    image[offsets_of(records)[2] + 9] ^= 0x10;  // inside the third record's body
    write_file(dir.log_path(), image);
    const auto opened = order_log::open(dir.str());
    REQUIRE_FALSE(opened.has_value());
    CHECK(opened.error().what.find("checksum") != std::string::npos);
    CHECK(read_file(dir.log_path()) == image);
}

TEST_CASE("a file that is not an order log is refused") {
    temp_dir dir;
    write_file(dir.log_path(), "hello, this is not a log at all");
    const auto opened = order_log::open(dir.str());
    REQUIRE_FALSE(opened.has_value());
    CHECK(opened.error().what.find("magic") != std::string::npos);
}

TEST_CASE("a well-checksummed record of an unknown version is corruption, not skipped") {
    // A callback_acked frame with version byte 2 and a CRC that matches it.
    std::string good;
    encode_record(callback_acked{9}, good);
    const std::string length = good.substr(0, 4);
    std::string body = good.substr(8);
    body[0] = 2;
    uLong crc = ::crc32(0L, Z_NULL, 0);
    const std::string covered = length + body;
    crc = ::crc32(crc, reinterpret_cast<const Bytef*>(covered.data()),
                  static_cast<uInt>(covered.size()));
    std::string crc_bytes;
    for (int i = 3; i >= 0; --i) crc_bytes.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));

    std::string image = image_of({accepted(7)});
    const std::size_t bad_at = image.size();
    image += length + crc_bytes + body;
    const auto alone = scan_log(image);
    REQUIRE_FALSE(alone.has_value());  // even as the last record: its bytes are whole
    CHECK(alone.error().offset == bad_at);
    CHECK(alone.error().what == "malformed record");
}

TEST_CASE("a second process cannot open a log that is in use") {
    temp_dir dir;
    auto first = order_log::open(dir.str());
    REQUIRE(first.has_value());
    const auto second = order_log::open(dir.str());
    REQUIRE_FALSE(second.has_value());
    CHECK(second.error().what.find("in use") != std::string::npos);
}
