// The RocksDB event store: the journal, the store of terminal trades, and metadata.
//
// Column families:
//   "journal" -- key: sequence as u64 big-endian of the first record of a run; value: up to 64
//                consecutive records (codec.h) back to back, each delimited by its own header.
//                A run is records of one write set (stores written before runs hold one record
//                per key, which is a run of one)
//   "trades"  -- no longer written. Stores that had it held every terminal trade by id, a third
//                copy of what "closed_by_customer" and "updates" hold; the family stays so that
//                such stores still open (RocksDB opens a store only with all its families).
//   "meta"    -- "chain_tip": u64 sequence + hash256 of the last record
//   "closed_by_customer" -- key: customer_id 0x00 trade_id(u64 BE); value: the terminal trade
//                           and the update sequence of the change that closed it (codec.h
//                           closed_trade; older values hold the trade alone)
//   "client_orders"      -- key: customer_id 0x00 client_order_id; value: trade_id (u64 BE)
//   "updates"            -- key: customer_id 0x00 update sequence (u64 BE) of the first change
//                           of a run; value: the trade as each change of the run left it, and
//                           bounds on the ids of the customer's trades open at its end (codec.h
//                           update_run). A run is up to 16 consecutive changes of one customer
//                           in one write set (a placement and its submission are one key). The
//                           change that closes an open trade is not in a run: it is the trade's
//                           "closed_by_customer" value, which names its update sequence (one
//                           key less per trade; stores written before hold it in both). A trade
//                           created closed (refused) is in both. With "closed_by_customer", the
//                           WebSocket stream's durable backlog (updates_since).
//   "snapshots"          -- the engine state after a record (snapshot.h), in pieces:
//                           sequence(u64 BE) 'c' piece(u32 BE) -> at most snapshot_piece_size bytes
//                           sequence(u64 BE) 'h' -> pieces(u32 BE) bytes(u64 BE), after the pieces
//                           Derived data, written apart from the journal's batches and only once
//                           the records up to its sequence are durable; the newest
//                           `snapshots_kept` are kept. (Stores written before pieces held a
//                           snapshot as one value under the bare sequence; those are not read, and
//                           are deleted when the next snapshot is stored, as are headless pieces.)
// Customer ids never contain 0x00 (engine valid_customer_id), so prefixes cannot collide. All
// indexes are written in the same WriteBatch as the events they derive from.
//
// `append` is the group commit: all events and trade writes of one or more engine batches go into
// one WriteBatch written with sync=true, so thousands of events share one fsync. A failed write is
// returned as an error; the caller must treat it as fatal (DESIGN: fsync failure is never ignored).
//
// Threading: one thread (the engine thread) calls `append`; one thread at a time calls
// `put_snapshot`, possibly another one, concurrently with `append`; any thread may call
// `find_trade` and `read`
// concurrently (RocksDB reads are thread-safe). Open/recover run before the threads start.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/events.h"
#include "engine/result.h"
#include "engine/state.h"
#include "journal/codec.h"

namespace broker::journal {

// Snapshots kept: the newest is the one recovery tries first, the one before it is the fallback
// when the newest turns out bad.
inline constexpr std::size_t snapshots_kept = 2;
// The largest piece of a stored snapshot: RocksDB writes and reads a value as one block, so a
// snapshot in pieces is never more than a piece at a time in its memory (one whole value was
// ~100 MB at 1M customers, copied into the writer's block and read back at ingestion).
inline constexpr std::size_t snapshot_piece_size = 1 << 20;

struct store_error {
    std::string what;
    bool corruption = false;  // true: bytes on disk are bad; false: IO/RocksDB failure
    bool no_space = false;    // the failure was a full disk
};

// A page of a customer's closed trades: see store::closed_trades.
struct closed_listing {
    std::vector<trade> trades;
    trade_id scanned_to{0};  // nonzero: the read stopped at this trade, below it unread
};

// A trade change to index: `created` marks the change that created the trade. `open_from` and
// `next_trade` bound the ids of the customer's trades open after the change: every one is in
// [open_from, next_trade). Build it with index_change: the stream's backlog trusts the bounds,
// and append refuses a change without them.
struct indexed_change {
    trade_change change;
    bool created = false;
    trade_id open_from{0};
    trade_id next_trade{0};
};

// The indexed_change of `change`, which was just applied to `st`.
[[nodiscard]] indexed_change index_change(const state& st, trade_change change, bool created);

// One group commit's worth of writes.
struct write_set {
    std::vector<event> events;            // consecutive sequences, continuing the journal
    std::vector<indexed_change> changes;  // every trade change the events made, in order
};

class store {
public:
    // Opens (creating when missing) the store in `dir`. read_only: for broker-replay while the
    // files are not in use by a writer.
    [[nodiscard]] static result<std::unique_ptr<store>, store_error> open(const std::string& dir,
                                                                        bool read_only = false);
    ~store();
    store(const store&) = delete;
    store& operator=(const store&) = delete;

    // What open recovered around and the operator should know: a torn batch at the end of the
    // write-ahead log dropped (a write interrupted by a crash, never acknowledged).
    [[nodiscard]] const std::vector<std::string>& open_warnings() const;

    // Sequence and chain hash of the last record (0 and zeros for an empty journal).
    [[nodiscard]] std::uint64_t last_sequence() const;
    [[nodiscard]] const hash256& tip_hash() const;

    // Encodes, chains and durably writes (sync=true) everything in `w` as one WriteBatch.
    // On failure the tip is unchanged and the store must not be written again: RocksDB keeps a
    // failed WAL writer in an error state (the caller stops; recovery replays what is durable).
    [[nodiscard]] result<ok_t, store_error> append(const write_set& w);

    // Reads records from `from` (inclusive) to `until` (inclusive; 0 = to the end) in order,
    // verifying each checksum and the hash chain from the first record; calls `fn` for each
    // event. Stops at the first corruption and returns it (naming the sequence). Verifies that
    // the chain ends at the stored tip when reading to the end.
    [[nodiscard]] result<std::uint64_t, store_error> read(
        std::uint64_t from, std::uint64_t until, const std::function<void(const event&)>& fn) const;

    // SHA-256 chain hash of record `sequence` (chain_hash(prev_hash, record bytes)), from the
    // record alone: the caller decides whether to trust its prev_hash.
    [[nodiscard]] result<hash256, store_error> chain_hash_at(std::uint64_t sequence) const;

    // Stores a sealed snapshot of the state after record `sequence` and deletes all but the
    // newest snapshots_kept. It writes a table file of its own and ingests it (no WAL, no
    // memtable), durable on return; a crash before that loses only this snapshot, a slower
    // start. The records up to `sequence` must already be durable (asserted against the tip).
    [[nodiscard]] result<ok_t, store_error> put_snapshot(std::uint64_t sequence,
                                                         std::string_view bytes);
    // The same for a snapshot that is never whole in memory: `next` puts the next piece (1 to
    // snapshot_piece_size bytes) in `piece` and returns true, or returns false after the last.
    using snapshot_source = std::function<result<bool, store_error>(std::string& piece)>;
    [[nodiscard]] result<ok_t, store_error> put_snapshot(std::uint64_t sequence,
                                                         const snapshot_source& next);
    // `bytes` as a snapshot_source of snapshot_piece_size pieces (`bytes` must outlive it).
    [[nodiscard]] static snapshot_source pieces_of(std::string_view bytes);
    // Sequences of the stored snapshots, newest first.
    [[nodiscard]] result<std::vector<std::uint64_t>, store_error> snapshot_sequences() const;

    // What RocksDB holds in memory, in bytes, for /metrics: memtables of every family, table
    // readers outside the block cache, and the shared block cache.
    struct memory_use {
        std::uint64_t memtables = 0;
        std::uint64_t table_readers = 0;
        std::uint64_t block_cache = 0;
    };
    [[nodiscard]] memory_use memory() const;
    // The bytes of one stored snapshot, unverified (decode_snapshot verifies).
    [[nodiscard]] result<std::string, store_error> read_snapshot(std::uint64_t sequence) const;

    // A terminal trade of `customer_id` (nothing when the trade is open, unknown, or another
    // customer's).
    [[nodiscard]] result<std::optional<trade>, store_error> find_trade(
        const std::string& customer_id, trade_id id) const;
    // A customer's terminal trades, newest first, with ids below `before` (0: no bound), of
    // symbol `sym` when given, at most `limit`. Reads at most `scan_max` trades: when it stops
    // there with trades left below, `scanned_to` is the id of the last one read (so that a
    // symbol the customer rarely trades cannot make one call read their whole history).
    [[nodiscard]] result<closed_listing, store_error> closed_trades(const std::string& customer_id,
                                                                    trade_id before,
                                                                    std::optional<symbol> sym,
                                                                    std::size_t limit,
                                                                    std::size_t scan_max) const;
    // The trade a customer created with `client_order_id`.
    [[nodiscard]] result<std::optional<trade_id>, store_error> find_client_order(
        const std::string& customer_id, std::string_view client_order_id) const;
    // A customer's trade changes with update sequence > after, in order, at most `limit`.
    [[nodiscard]] result<std::vector<trade_change>, store_error> updates_since(
        const std::string& customer_id, std::uint64_t after, std::size_t limit) const;

private:
    struct impl;
    explicit store(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

// Rebuilds engine state by applying every journaled event from record 1 (the same `apply` the
// live path uses), verifying the whole chain: the auditor's path. `after_each`, when given, sees
// the state after every event.
[[nodiscard]] result<state, store_error> replay(
    const store& s, std::uint64_t until = 0,
    const std::function<void(const state&)>& after_each = {});

// How recover() got its state, for the log.
struct recovery_report {
    std::uint64_t snapshot_sequence = 0;  // 0: replayed from record 1
    std::uint64_t events_applied = 0;     // events applied on top of the snapshot
    std::vector<std::string> warnings;    // snapshots tried and refused, and why
};

// Start-up recovery: the newest stored snapshot at or below the journal tip whose chain hash
// matches the journal's record at its sequence, then the events after it (chain verified from
// that record to the tip). A snapshot that is corrupt or does not match is skipped with a warning
// in `report`: the older one is tried, then a full replay.
[[nodiscard]] result<state, store_error> recover(const store& s,
                                                 recovery_report* report = nullptr);

// SHA-256 of the canonical state encoding (engine write_canonical), in hex: the state digest.
[[nodiscard]] std::string state_digest(const state& s);

}  // namespace broker::journal
