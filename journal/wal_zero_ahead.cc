#include "journal/wal_zero_ahead.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include <rocksdb/file_system.h>

namespace broker::journal {

namespace {

// RocksDB's write-ahead logs are <dir>/<number>.log (the info log is LOG, its tables .sst).
bool is_wal(std::string_view path) {
    const auto slash = path.find_last_of('/');
    const std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
    constexpr std::string_view suffix = ".log";
    if (name.size() <= suffix.size() || name.substr(name.size() - suffix.size()) != suffix) {
        return false;
    }
    const std::string_view number = name.substr(0, name.size() - suffix.size());
    return std::all_of(number.begin(), number.end(), [](char c) { return c >= '0' && c <= '9'; });
}

rocksdb::IOStatus io_error(const char* doing, int err) {
    const std::string what = std::string(doing) + ": " + std::strerror(err);
    return err == ENOSPC || err == EDQUOT ? rocksdb::IOStatus::NoSpace(what)
                                          : rocksdb::IOStatus::IOError(what);
}

// RocksDB's PosixWritableFile (opened without O_APPEND by NewWritableFile) appends with write()
// at its own file position, so zeros written past that position through a second descriptor are
// overwritten in place by the appends that follow.
class zero_ahead_file final : public rocksdb::FSWritableFileOwnerWrapper {
public:
    zero_ahead_file(std::unique_ptr<rocksdb::FSWritableFile> file, int fd)
        : rocksdb::FSWritableFileOwnerWrapper(std::move(file)), fd_(fd) {}

    ~zero_ahead_file() override {
        if (fd_ >= 0) ::close(fd_);
    }

    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
        zero_ahead_of(data.size());
        auto s = target()->Append(data, options, dbg);
        if (s.ok()) appended_ += data.size();
        return s;
    }

    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             const rocksdb::DataVerificationInfo& verification,
                             rocksdb::IODebugContext* dbg) override {
        zero_ahead_of(data.size());
        auto s = target()->Append(data, options, verification, dbg);
        if (s.ok()) appended_ += data.size();
        return s;
    }

    // Not used for WAL files; should that change, zero-filling stops rather than guess.
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, std::uint64_t offset,
                                       const rocksdb::IOOptions& options,
                                       rocksdb::IODebugContext* dbg) override {
        stop_zeroing();
        return target()->PositionedAppend(data, offset, options, dbg);
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, std::uint64_t offset,
                                       const rocksdb::IOOptions& options,
                                       const rocksdb::DataVerificationInfo& verification,
                                       rocksdb::IODebugContext* dbg) override {
        stop_zeroing();
        return target()->PositionedAppend(data, offset, options, verification, dbg);
    }
    rocksdb::IOStatus Truncate(std::uint64_t size, const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override {
        stop_zeroing();
        return target()->Truncate(size, options, dbg);
    }

    rocksdb::IOStatus Close(const rocksdb::IOOptions& options,
                            rocksdb::IODebugContext* dbg) override {
        auto s = target()->Close(options, dbg);
        // A WAL closed normally keeps only what was appended.
        const bool cut = fd_ < 0 || zeroed_ <= appended_ ||
                         ::ftruncate(fd_, static_cast<off_t>(appended_)) == 0;
        if (!cut && s.ok()) s = io_error("cutting the zero tail of a closed WAL", errno);
        stop_zeroing();
        return s;
    }

private:
    // Before an append of `n` bytes: when it would come within half a step of the zeroed end,
    // write zeros up to a whole step past it and start their write-back. Cannot fail: without
    // the zeros the append is only slower.
    void zero_ahead_of(std::size_t n) {
        if (fd_ < 0) return;
        const std::uint64_t end = appended_ + n;
        if (end + wal_zero_step / 2 <= zeroed_) return;
        // Never over bytes already appended, nor those about to be.
        const std::uint64_t from = std::max(zeroed_, end);
        const std::uint64_t to = (end / wal_zero_step + 2) * wal_zero_step;
        static const std::array<char, 64 * 1024> zeros{};
        for (std::uint64_t at = from; at < to;) {
            const auto len =
                static_cast<std::size_t>(std::min<std::uint64_t>(zeros.size(), to - at));
            const ssize_t done = ::pwrite(fd_, zeros.data(), len, static_cast<off_t>(at));
            if (done < 0 && errno == EINTR) continue;
            if (done <= 0) {
                // Out of space, most likely. The zeros are only a speed-up: the appends go on
                // without them and report their own errors.
                stop_zeroing();
                return;
            }
            at += static_cast<std::uint64_t>(done);
        }
        // Start writing them now, so that the commits' fdatasync rarely waits for them.
        (void)::sync_file_range(fd_, static_cast<off_t>(from), static_cast<off_t>(to - from),
                                SYNC_FILE_RANGE_WRITE);
        zeroed_ = to;
    }

    void stop_zeroing() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

    int fd_;                     // a second descriptor of the file, for the zeros
    std::uint64_t appended_ = 0;  // bytes appended through the WAL writer
    std::uint64_t zeroed_ = 0;    // end of the zeros written
};

class zero_ahead_fs final : public rocksdb::FileSystemWrapper {
public:
    zero_ahead_fs() : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}

    [[nodiscard]] const char* Name() const override { return "broker.wal_zero_ahead"; }

    rocksdb::IOStatus NewWritableFile(const std::string& path, const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override {
        auto s = target()->NewWritableFile(path, options, result, dbg);
        if (!s.ok() || !is_wal(path) || options.use_direct_writes || options.use_mmap_writes) {
            return s;
        }
        const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0) return s;  // the WAL works as before, only without zeros ahead
        *result = std::make_unique<zero_ahead_file>(std::move(*result), fd);
        return s;
    }
};

}  // namespace

rocksdb::Env* wal_zero_ahead_env() {
    // Never destroyed, like Env::Default(): a store still open when the process exits (a fatal
    // start-up error calls exit) keeps using it from RocksDB's background threads.
    static rocksdb::Env* const env =
        rocksdb::NewCompositeEnv(std::make_shared<zero_ahead_fs>()).release();
    return env;
}

}  // namespace broker::journal
