#include "journal/wal_zero_ahead.h"

#include <doctest/doctest.h>
#include <rocksdb/file_system.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "journal/store.h"
#include "tests/journal/fixtures.h"
#include "tests/temp_dir.h"

namespace broker::journal {
namespace {

namespace fs = std::filesystem;

struct temp_dir : test_support::temp_dir {
    temp_dir() : test_support::temp_dir("wal-zero-test") {}
};

std::string contents(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Length of `bytes` without its trailing zero bytes.
std::size_t without_zero_tail(const std::string& bytes) {
    const auto last = std::find_if(bytes.rbegin(), bytes.rend(), [](char c) { return c != 0; });
    return static_cast<std::size_t>(bytes.rend() - last);
}

std::unique_ptr<rocksdb::FSWritableFile> new_file(const fs::path& p) {
    std::unique_ptr<rocksdb::FSWritableFile> f;
    const auto s = wal_zero_ahead_env()->GetFileSystem()->NewWritableFile(
        p.string(), rocksdb::FileOptions{}, &f, nullptr);
    REQUIRE(s.ok());
    return f;
}

void append(rocksdb::FSWritableFile& f, const std::string& bytes) {
    REQUIRE(f.Append(bytes, rocksdb::IOOptions{}, nullptr).ok());
    REQUIRE(f.Flush(rocksdb::IOOptions{}, nullptr).ok());
}

TEST_CASE("a WAL file is zero-filled ahead of its appends and cut back to them on close") {
    temp_dir dir;
    const auto wal = dir.path() / "000007.log";
    auto f = new_file(wal);
    // Non-zero bytes, spanning more than one step, in appends of uneven sizes.
    std::string written;
    std::mt19937 rng(7);
    while (written.size() < 3 * wal_zero_step) {
        std::string piece(1 + rng() % 9000, '\0');
        for (auto& c : piece) c = static_cast<char>('a' + rng() % 26);
        append(*f, piece);
        written += piece;
        // The appended bytes are intact, followed by at least half a step of zeros (none of
        // them written over appended bytes), up to a whole step.
        const std::string on_disk = contents(wal);
        REQUIRE(on_disk.size() >= written.size() + wal_zero_step / 2);
        CHECK(on_disk.size() % wal_zero_step == 0);
        REQUIRE(on_disk.substr(0, written.size()) == written);
        CHECK(without_zero_tail(on_disk) == written.size());
    }
    REQUIRE(f->Close(rocksdb::IOOptions{}, nullptr).ok());
    CHECK(contents(wal) == written);
}

TEST_CASE("files other than WAL files are written as they are") {
    temp_dir dir;
    for (const char* name : {"000008.sst", "LOG", "MANIFEST-000005", "x.log", "000009.log.tmp"}) {
        INFO(name);
        auto f = new_file(dir.path() / name);
        append(*f, "some bytes");
        CHECK(contents(dir.path() / name) == "some bytes");
        REQUIRE(f->Close(rocksdb::IOOptions{}, nullptr).ok());
    }
}

TEST_CASE("a store copied mid-write, as a crash leaves it, recovers every record past the zeros") {
    temp_dir dir;
    const auto live = dir.path() / "live";
    const auto crashed = dir.path() / "crashed";
    const auto events = testing::busy_events(20, 200);
    hash256 tip{};
    std::size_t wal_bytes = 0;
    {
        auto s = store::open(live.string());
        REQUIRE(s);
        for (std::size_t i = 0; i < events.size(); i += 8) {
            const std::vector<event> part(
                events.begin() + static_cast<std::ptrdiff_t>(i),
                events.begin() + static_cast<std::ptrdiff_t>(std::min(events.size(), i + 8)));
            REQUIRE((*s)->append(write_set{part, {}}));
        }
        tip = (*s)->tip_hash();
        // The files as they are on disk now, with the WAL still open: the state a crash (or a
        // power cut, once the synced appends are on disk) would leave.
        fs::copy(live, crashed, fs::copy_options::recursive);
        for (const auto& entry : fs::directory_iterator(crashed)) {
            if (entry.path().extension() != ".log") continue;
            const std::string bytes = contents(entry.path());
            if (bytes.empty()) continue;
            CHECK(bytes.size() % wal_zero_step == 0);
            CHECK(without_zero_tail(bytes) < bytes.size());
            wal_bytes += without_zero_tail(bytes);
        }
    }
    REQUIRE(wal_bytes > 2 * wal_zero_step);  // the appends crossed several steps
    auto s = store::open(crashed.string());
    REQUIRE(s);
    CHECK((*s)->last_sequence() == events.size());
    CHECK((*s)->tip_hash() == tip);
    std::vector<event> read;
    REQUIRE((*s)->read(1, 0, [&](const event& e) { read.push_back(e); }));
    CHECK(read == events);
}

}  // namespace
}  // namespace broker::journal
