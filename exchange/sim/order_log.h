// exchange-sim's order log: the durable, append-only file that makes the simulated exchange
// remember every order, execution and acknowledged callback across a kill -9.
//
// Three kinds of record, all facts: an order was accepted (written before the 202), an order was
// executed (written before its callback is owed), a callback was acknowledged (so that a restart
// does not deliver it again; losing one of these only costs a duplicate delivery, which
// at-least-once allows). The byte grammar is at the top of order_log.cc.
//
// Recovery (`order_log::open`) reads the whole file: a torn tail, which is what a crash during the
// last append leaves, is truncated away; bad bytes anywhere else are a corruption error that the
// caller reports at start-up, never silently skipped.
//
// Who calls it: the codec functions are pure and thread-safe; an `order_log` object is used by
// one thread at a time (exchange-sim's log writer thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/result.h"
#include "engine/types.h"

namespace broker::exchange::sim {

inline constexpr std::uint8_t order_log_version = 1;
// "XSIMLOG" and a format generation byte: refuses to "recover" some other file.
inline constexpr std::string_view order_log_magic{"XSIMLOG\x01", 8};
inline constexpr std::string_view order_log_file_name = "orders.log";
// No valid record comes near this (the longest field is a callback URL); a longer length field is
// bad bytes, not a big record.
inline constexpr std::size_t log_record_max = 4096;
inline constexpr std::size_t callback_url_max = 512;
inline constexpr std::size_t log_text_max = 64;  // symbols, exec ids, reasons

enum class order_outcome : std::uint8_t { filled = 1, rejected = 2 };

struct order_accepted {
    std::uint64_t order_id = 0;
    std::string symbol;  // ticker syntax checked; may be unlisted (then rejected at execution)
    side order_side = side::buy;
    std::int64_t quantity = 0;
    std::int64_t limit_price_ticks = 0;  // 0: no limit (a market order)
    std::string callback_url;
    timestamp_ms accepted_at = 0;
    timestamp_ms execute_at = 0;  // wall clock, so that a restart keeps the schedule
    friend bool operator==(const order_accepted&, const order_accepted&) = default;
};

struct order_executed {
    std::uint64_t order_id = 0;
    std::string exec_id;
    order_outcome outcome = order_outcome::filled;
    std::int64_t fill_price_ticks = 0;  // FILLED only
    std::string reason;                 // REJECTED only
    timestamp_ms executed_at = 0;
    friend bool operator==(const order_executed&, const order_executed&) = default;
};

struct callback_acked {
    std::uint64_t order_id = 0;
    friend bool operator==(const callback_acked&, const callback_acked&) = default;
};

using log_record = std::variant<order_accepted, order_executed, callback_acked>;

struct log_error {
    std::uint64_t offset = 0;  // file offset of the bad record (0 when not about one)
    std::string what;
};

// Appends one framed record to `out`. Precondition (asserted): fields within the limits above.
void encode_record(const log_record& r, std::string& out);

// A whole log image as read from disk.
struct scanned_log {
    std::vector<log_record> records;
    std::size_t good_bytes = 0;  // the length of the valid prefix (magic included)
    bool torn_tail = false;      // bytes after good_bytes are an interrupted append
};

// Decodes every record of `image`. Empty or a torn magic (a crash while creating the file) is an
// empty log. Errors: wrong magic, or a bad record that is not the torn tail (see order_log.cc).
[[nodiscard]] result<scanned_log, log_error> scan_log(std::string_view image);

class order_log {
  public:
    struct opened {
        std::unique_ptr<order_log> log;
        std::vector<log_record> records;
        std::size_t truncated_bytes = 0;  // a torn tail that was cut off
    };

    // Opens (creating `dir` and the file when missing) and recovers the log, holding an exclusive
    // lock on it so that two processes cannot append to one log.
    [[nodiscard]] static result<opened, log_error> open(const std::string& dir);

    ~order_log();
    order_log(const order_log&) = delete;
    order_log& operator=(const order_log&) = delete;

    // Writes framed records (from encode_record) and makes them durable (fdatasync) before
    // returning. On error the file's tail is unknown: the caller must stop and recover.
    [[nodiscard]] result<ok_t, log_error> append(std::string_view framed);

    [[nodiscard]] std::uint64_t size_bytes() const { return size_; }

  private:
    order_log(int fd, std::uint64_t size) : fd_(fd), size_(size) {}
    int fd_ = -1;
    std::uint64_t size_ = 0;
};

}  // namespace broker::exchange::sim
