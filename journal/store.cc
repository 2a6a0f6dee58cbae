#include "journal/store.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/snapshot.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>

#include "engine/assert.h"
#include "journal/snapshot.h"
#include "journal/wal_scan.h"
#include "journal/wal_zero_ahead.h"

namespace broker::journal {

namespace {

// Column family indexes in the handle vector; RocksDB requires "default" to be opened too.
enum cf_index : std::size_t {
    cf_default = 0,
    cf_journal = 1,
    cf_trades = 2,
    cf_meta = 3,
    cf_closed_by_customer = 4,
    cf_client_orders = 5,
    cf_updates = 6,
    cf_snapshots = 7,
};

// customer_id 0x00 suffix: the key of every per-customer index.
std::string customer_key(std::string_view customer_id, std::string_view suffix) {
    std::string k;
    k.reserve(customer_id.size() + 1 + suffix.size());
    k.append(customer_id);
    k.push_back('\0');
    k.append(suffix);
    return k;
}
constexpr std::string_view chain_tip_key = "chain_tip";
// The most changes one "updates" key holds: a commit that changes many of one customer's trades
// (an expiry sweep, say) writes several keys rather than one large value that every resumed
// stream would read whole.
constexpr std::size_t update_run_max = 16;
// The most records one "journal" key holds: a record read by sequence (a snapshot's check, a
// standby catching up) reads at most this many.
constexpr std::size_t journal_run_max = 64;
constexpr std::size_t tip_size = 8 + sizeof(hash256);

struct chain_tip {
    std::uint64_t sequence = 0;
    hash256 hash{};
};

// A snapshot's table file, written beside the store's own files until it is ingested.
constexpr std::string_view snapshot_file_prefix = "snapshot-";
constexpr std::string_view snapshot_file_suffix = ".sst.ingest";

std::string be_key(std::uint64_t v) {
    std::string out(8, '\0');
    for (std::size_t i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (56 - 8 * i)) & 0xff);
    return out;
}

std::optional<std::uint64_t> parse_key(std::string_view bytes) {
    if (bytes.size() != 8) return std::nullopt;
    std::uint64_t v = 0;
    for (const char c : bytes) v = (v << 8) | static_cast<std::uint8_t>(c);
    return v;
}

std::string_view view(const rocksdb::Slice& s) {
    return {s.data(), s.size()};
}

// Keys of the "snapshots" family (store.h): by sequence, a snapshot's pieces, then its head.
constexpr char snapshot_piece_tag = 'c';
constexpr char snapshot_head_tag = 'h';

std::string snapshot_key(std::uint64_t sequence, char tag) { return be_key(sequence) + tag; }

std::string snapshot_piece_key(std::uint64_t sequence, std::uint32_t piece) {
    std::string out = snapshot_key(sequence, snapshot_piece_tag);
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((piece >> shift) & 0xff);
    return out;
}

// A head's value: how many pieces and bytes the snapshot has.
struct snapshot_head {
    std::uint32_t pieces = 0;
    std::uint64_t bytes = 0;
};

std::string encode_snapshot_head(const snapshot_head& h) {
    std::string out;
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((h.pieces >> shift) & 0xff);
    return out + be_key(h.bytes);
}

std::optional<snapshot_head> decode_snapshot_head(std::string_view value) {
    if (value.size() != 4 + 8) return std::nullopt;
    snapshot_head h;
    for (const char c : value.substr(0, 4)) h.pieces = (h.pieces << 8) | static_cast<std::uint8_t>(c);
    h.bytes = *parse_key(value.substr(4));
    return h;
}

std::string encode_tip(const chain_tip& tip) {
    std::string out = be_key(tip.sequence);
    out.append(reinterpret_cast<const char*>(tip.hash.data()), tip.hash.size());
    return out;
}

unexpected<store_error> corrupt(std::string what) {
    return unexpected{store_error{std::move(what), true}};
}

unexpected<store_error> failed(const rocksdb::Status& s, std::string_view doing) {
    return unexpected{store_error{fmt::format("{}: {}", doing, s.ToString()), s.IsCorruption(),
                                  s.IsNoSpace()}};
}

result<chain_tip, store_error> decode_tip(std::string_view bytes) {
    if (bytes.size() != tip_size) {
        return corrupt(fmt::format("chain tip is {} bytes, expected {}", bytes.size(), tip_size));
    }
    chain_tip tip;
    tip.sequence = *parse_key(bytes.substr(0, 8));
    std::copy(bytes.begin() + 8, bytes.end(), tip.hash.begin());
    return tip;
}

rocksdb::DBOptions db_options(bool read_only) {
    rocksdb::DBOptions o;
    o.create_if_missing = !read_only;
    o.create_missing_column_families = !read_only;
    o.paranoid_checks = true;
    // Synced appends into WAL blocks already written (wal_zero_ahead.h).
    o.env = wal_zero_ahead_env();
    // Every append is a synced WAL write; never leave WAL bytes sitting in a user-space buffer.
    o.manual_wal_flush = false;
    // An incomplete batch at the end of the WAL (the write in progress when the process died) is
    // dropped; a batch that fails its checksum stops the open, wherever it is. store::open then
    // tells a torn tail (nobody was told about that batch) from damage with acknowledged batches
    // behind it, which must never be dropped quietly (store::open).
    o.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
    o.keep_log_file_num = 10;
    // All memtables together stay under this (the fullest is flushed first), so memory does not
    // grow with the number of column families or with history: 8 families x 3 x 16 MiB could
    // otherwise reach 384 MiB.
    o.db_write_buffer_size = 64ull << 20;
    // Bounds the WAL a restart after a crash replays: past it, RocksDB flushes the column
    // families that hold the oldest log (by default it is four times all memtables together).
    o.max_total_wal_size = 256 << 20;
    // Flushes and compactions write their files to the journal's disk; synced in 1 MiB steps
    // they never leave hundreds of MiB of dirty pages for the kernel to write at once, which
    // would queue every WAL fsync (and so every acknowledgement) behind them.
    o.bytes_per_sync = 1 << 20;
    // Flushes and compactions are work the acknowledgements never wait for; on a small machine
    // they compete for the same cores as the engine and HTTP threads, and every time they win a
    // core an acknowledgement waits. At the lowest CPU priority they run on what is left over.
    static const bool lowered = [] {
        auto* env = rocksdb::Env::Default();
        (void)env->LowerThreadPoolCPUPriority(rocksdb::Env::LOW, rocksdb::CpuPriority::kLow);
        (void)env->LowerThreadPoolCPUPriority(rocksdb::Env::HIGH, rocksdb::CpuPriority::kLow);
        return true;
    }();
    (void)lowered;
    return o;
}

// The per-customer index keys are `customer_id 0x00 suffix`; their prefix is the customer part.
class customer_prefix final : public rocksdb::SliceTransform {
public:
    [[nodiscard]] const char* Name() const override { return "broker.customer_prefix"; }
    [[nodiscard]] rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
        const auto* end = static_cast<const char*>(std::memchr(key.data(), '\0', key.size()));
        return {key.data(), static_cast<std::size_t>(end - key.data()) + 1};
    }
    [[nodiscard]] bool InDomain(const rocksdb::Slice& key) const override {
        return std::memchr(key.data(), '\0', key.size()) != nullptr;
    }
};

enum class key_order {
    sequential,    // keys only ever grow (record sequences, time-ordered trade ids)
    per_customer,  // keys grow within each customer's prefix
    any,
};

rocksdb::ColumnFamilyOptions cf_options(key_order order = key_order::any) {
    rocksdb::ColumnFamilyOptions o;
    // The journal is append-only and read mostly at start-up; small memtables keep memory flat.
    o.write_buffer_size = 16 << 20;
    o.max_write_buffer_number = 3;
    // Index blocks of the table files live in one bounded block cache instead of beside each
    // open file: otherwise their memory grows with the journal. With 16 KiB blocks they take
    // about 5 MiB per million trades, so the cache is full after a few million trades and the
    // process's memory stays flat from then on. The write path never reads a table file; reads
    // of old trades that miss the cache find the index in the page cache.
    static const std::shared_ptr<rocksdb::Cache> cache = rocksdb::NewLRUCache(16 << 20);
    rocksdb::BlockBasedTableOptions table;
    table.block_cache = cache;
    table.block_size = 16 << 10;
    table.cache_index_and_filter_blocks = true;
    table.pin_l0_filter_and_index_blocks_in_cache = true;
    o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    // Where keys grow within a prefix, a memtable insert hint per prefix lets each insert start
    // where that prefix's last one ended instead of searching the skip list from the top (most
    // of the commit's CPU went there). The hints live in the memtable and go with it at flush,
    // so their memory is bounded by the memtable's entries. A sequential family needs no hint:
    // the skip list already keeps one for in-order inserts.
    if (order == key_order::per_customer) {
        o.memtable_insert_with_hint_prefix_extractor = std::make_shared<customer_prefix>();
        // Keys that begin with the customer make every new level-0 file overlap all of level 1,
        // so each level-0 compaction rewrites the whole of level 1 (a sequential family only
        // moves its files down). Compacting after 16 level-0 files instead of RocksDB's 4 makes
        // that a quarter as frequent: 4 -> 8 took the compaction thread's CPU per request from
        // 7.8-8.3 to 4.6-5.3 µs in 60 s closed loops; 8 -> 16 halved it again and, in four
        // alternated runs, raised the closed loop from 30,900-33,600 to 36,600-38,700 per
        // second (32 did worse than 16). Reads of these families (stream backlog, closed-trade
        // listing and lookup) look at up to 16 level-0 files instead of 4. Writes slow down
        // only at 48 level-0 files and stop at 64 (RocksDB's 20 and 36 sit too close above 16).
        o.level0_file_num_compaction_trigger = 16;
        o.level0_slowdown_writes_trigger = 48;
        o.level0_stop_writes_trigger = 64;
    }
    return o;
}

// Verifies records one after another: gap-free sequences, checksums (via decode_record) and the
// hash chain. Stateful so that `store::read` stays a plain loop.
class chain_checker {
  public:
    explicit chain_checker(std::uint64_t from) : from_(from), next_(from) {}

    result<event, store_error> accept(std::uint64_t seq, std::string_view bytes) {
        auto rec = chained(seq, bytes);
        if (!rec) return unexpected{rec.error()};
        running_ = chain_hash(rec->prev_hash, bytes);
        ++next_;
        return std::move(rec->ev);
    }

    // Whether record `seq`, the one after the last accepted, is whole and chains to it; the
    // record itself is not taken.
    [[nodiscard]] result<ok_t, store_error> confirms(std::uint64_t seq,
                                                     std::string_view bytes) const {
        if (auto rec = chained(seq, bytes); !rec) return unexpected{rec.error()};
        return ok_v;
    }

    [[nodiscard]] std::uint64_t last_read() const { return next_ - 1; }
    [[nodiscard]] bool read_any() const { return next_ != from_; }
    [[nodiscard]] const hash256& running() const { return running_; }

  private:
    // Record `seq` decoded, if it is the next one, whole, and chains to what came before.
    [[nodiscard]] result<decoded_record, store_error> chained(std::uint64_t seq,
                                                              std::string_view bytes) const {
        if (seq != next_) {
            return corrupt(
                fmt::format("record {}: missing (the next record found is {})", next_, seq));
        }
        auto rec = decode_record(seq, bytes);
        if (!rec) return corrupt(rec.error().what);
        // Reading from the start, record 1 must chain to zeros; reading from the middle, the
        // first record's prev_hash is taken as given (the caller verified what came before).
        const bool given = seq == from_ && from_ > 1;
        if (!given && rec->prev_hash != running_) {
            return corrupt(fmt::format("record {}: prev_hash {} does not match chain hash {}", seq,
                                       to_hex(rec->prev_hash), to_hex(running_)));
        }
        return std::move(*rec);
    }

    std::uint64_t from_;
    std::uint64_t next_;
    hash256 running_{};
};

// Visits the records of a journal value in order: one or more consecutive records back to back,
// stored under the first one's sequence (`key`). Delimiting reads only a header's length, and
// the next record is delimited only after `visit` has seen this one, so a visitor that checks
// each record (decode_record, directly or through chain_checker) reports a damaged length as
// that record's checksum, not as garbage where the next one should start.
// `visit(sequence, bytes)` returns true to go on, false to stop, or an error to stop with.
template <typename Visit>
result<ok_t, store_error> for_each_record(std::uint64_t key, std::string_view value,
                                          Visit&& visit) {
    if (value.empty()) return corrupt(fmt::format("record {}: empty journal value", key));
    for (std::uint64_t previous = key - 1; !value.empty();) {
        auto extent = next_record(value, previous);
        if (!extent) return corrupt(extent.error().what);
        auto more = visit(extent->sequence, value.substr(0, extent->size));
        if (!more) return unexpected{more.error()};
        if (!*more) break;
        previous = extent->sequence;
        value.remove_prefix(extent->size);
    }
    return ok_v;
}

}  // namespace

struct store::impl {
    std::unique_ptr<rocksdb::DB> db;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    // Owned by the engine thread (append); readers use the tip stored in "meta" instead.
    chain_tip tip;
    // tip.sequence, for put_snapshot on another thread.
    std::atomic<std::uint64_t> durable_sequence{0};
    bool read_only = false;
    std::string dir;
    std::vector<std::string> open_warnings;  // store::open_warnings

    // A fresh impl holding the RocksDB of `dir` opened with its WAL read in `mode`, or why not.
    static result<std::unique_ptr<impl>, rocksdb::Status> open(const std::string& dir,
                                                               bool read_only,
                                                               rocksdb::WALRecoveryMode mode);
    // The chain tip a read-only open of `dir` sees with its WAL read in `mode`; changes nothing.
    static std::optional<chain_tip> tip_read_with(const std::string& dir,
                                                  rocksdb::WALRecoveryMode mode);

    ~impl() {
        // RocksDB does not flush memtables on close when the WAL is on, so the next open would
        // replay up to max_total_wal_size of log (seconds at a gigabyte). Best effort: if the
        // flush fails, the next open replays the WAL as after a crash.
        if (db != nullptr && !read_only && !handles.empty()) {
            (void)db->Flush(rocksdb::FlushOptions{}, handles);
        }
        // Handles must go before the DB they belong to.
        for (auto* h : handles) {
            if (h != nullptr) db->DestroyColumnFamilyHandle(h);
        }
    }

    [[nodiscard]] rocksdb::ColumnFamilyHandle* cf(cf_index i) const { return handles.at(i); }
    [[nodiscard]] bool has_snapshots() const { return handles.size() > cf_snapshots; }

    [[nodiscard]] result<chain_tip, store_error> read_tip(const rocksdb::ReadOptions& ro) const {
        std::string value;
        const auto s = db->Get(ro, cf(cf_meta),
                               rocksdb::Slice(chain_tip_key.data(), chain_tip_key.size()), &value);
        if (s.IsNotFound()) return chain_tip{};
        if (!s.ok()) return failed(s, "reading the chain tip");
        return decode_tip(value);
    }

    [[nodiscard]] result<ok_t, store_error> verify_last_record() const;
};

// A crash cannot split records from the tip (one WriteBatch), so any disagreement between the
// last record and the stored tip means the files were altered.
result<ok_t, store_error> store::impl::verify_last_record() const {
    rocksdb::ReadOptions ro;
    ro.verify_checksums = true;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, cf(cf_journal)));
    it->SeekToLast();
    if (!it->status().ok()) return failed(it->status(), "reading the last record");
    if (!it->Valid()) {
        if (tip.sequence == 0) return ok_v;
        return corrupt(
            fmt::format("journal is empty but the chain tip is at record {}", tip.sequence));
    }
    const auto key = parse_key(view(it->key()));
    if (!key) return corrupt(fmt::format("journal key of {} bytes", it->key().size()));
    std::uint64_t seq = 0;
    std::string_view bytes;
    auto walked =
        for_each_record(*key, view(it->value()),
                        [&](std::uint64_t s, std::string_view b) -> result<bool, store_error> {
                            seq = s;
                            bytes = b;
                            return true;
                        });
    if (!walked) return unexpected{walked.error()};
    if (seq != tip.sequence) {
        return corrupt(fmt::format("record {}: last in the journal but the chain tip is at {}", seq,
                                   tip.sequence));
    }
    auto rec = decode_record(seq, bytes);
    if (!rec) return corrupt(rec.error().what);
    if (chain_hash(rec->prev_hash, bytes) != tip.hash) {
        return corrupt(fmt::format("record {}: does not hash to the stored chain tip", seq));
    }
    return ok_v;
}

store::store(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
store::~store() = default;

namespace {

// The column families of the store in `dir`. A store written before snapshots existed has no
// "snapshots" family, and a read-only open cannot create one: read-only, it goes without.
std::vector<rocksdb::ColumnFamilyDescriptor> families_of(const std::string& dir, bool read_only) {
    const auto cfo = cf_options();
    const auto sequential = cf_options(key_order::sequential);
    const auto per_customer = cf_options(key_order::per_customer);
    std::vector<rocksdb::ColumnFamilyDescriptor> families{
        {rocksdb::kDefaultColumnFamilyName, cfo},
        {"journal", sequential},
        {"trades", sequential},
        {"meta", cfo},
        {"closed_by_customer", per_customer},
        {"client_orders", cfo},
        {"updates", per_customer},
        {"snapshots", cfo},
    };
    if (read_only) {
        std::vector<std::string> names;
        const auto listed = rocksdb::DB::ListColumnFamilies(db_options(true), dir, &names);
        if (listed.ok() && std::find(names.begin(), names.end(), "snapshots") == names.end()) {
            families.pop_back();
        }
    }
    return families;
}

}  // namespace

result<std::unique_ptr<store::impl>, rocksdb::Status> store::impl::open(
    const std::string& dir, bool read_only, rocksdb::WALRecoveryMode mode) {
    const auto families = families_of(dir, read_only);
    auto options = db_options(read_only);
    options.wal_recovery_mode = mode;
    auto p = std::make_unique<impl>();
    rocksdb::DB* raw = nullptr;
    const auto s = read_only
                       ? rocksdb::DB::OpenForReadOnly(options, dir, families, &p->handles, &raw)
                       : rocksdb::DB::Open(options, dir, families, &p->handles, &raw);
    p->db.reset(raw);
    p->read_only = read_only;
    p->dir = dir;
    if (!s.ok()) return unexpected{s};
    BROKER_ASSERT(p->handles.size() == families.size());
    return p;
}

std::optional<chain_tip> store::impl::tip_read_with(const std::string& dir,
                                                    rocksdb::WALRecoveryMode mode) {
    auto p = open(dir, /*read_only=*/true, mode);
    if (!p) return std::nullopt;
    auto tip = (*p)->read_tip(rocksdb::ReadOptions{});
    if (!tip) return std::nullopt;
    return *tip;
}

result<std::unique_ptr<store>, store_error> store::open(const std::string& dir, bool read_only) {
    if (!read_only) {
        // Snapshot table files a crash left before they were ingested.
        std::error_code ec;
        for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
            const std::string name = entry.path().filename().string();
            if (name.starts_with(snapshot_file_prefix) && name.ends_with(snapshot_file_suffix)) {
                std::filesystem::remove(entry.path(), ec);
            }
        }
    }
    auto p = impl::open(dir, read_only, rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords);
    std::vector<std::string> warnings;
    if (!p && p.error().IsCorruption()) {
        // A WAL batch failed its checksum. Two read-only reads of the same files tell what it
        // is: one stopping at the damage, one skipping it and reading on. If nothing of the
        // journal lies beyond, it is a torn tail: the batch being written when the machine
        // stopped, whose sync never returned, so nobody was told about it. If records lie
        // beyond, they were synced and acknowledged: opening without them would drop them
        // quietly and hand their sequences and trade ids out again. Refuse, naming them.
        // RocksDB's skipping read drops the rest of the damaged 32 KiB block, so batches in
        // that block are counted from the log's own records (wal_scan.h).
        const std::string damage = p.error().ToString();
        const auto up_to = impl::tip_read_with(dir, rocksdb::WALRecoveryMode::kPointInTimeRecovery);
        const auto past =
            impl::tip_read_with(dir, rocksdb::WALRecoveryMode::kSkipAnyCorruptedRecords);
        const auto scanned = find_wal_damage(dir);
        if (up_to && past && past->sequence > up_to->sequence) {
            return corrupt(fmt::format(
                "opening {}: the write-ahead log is damaged after record {} ({}), and records "
                "{} to {} lie behind the damage: they were acknowledged and cannot be "
                "recovered in order. Restore the data directory from a copy",
                dir, up_to->sequence, damage, up_to->sequence + 1, past->sequence));
        }
        if (up_to && scanned && scanned->behind > 0) {
            return corrupt(fmt::format(
                "opening {}: the write-ahead log is damaged after record {} ({}, {} at byte {}), "
                "and {} synced batches lie behind the damage: they were acknowledged and cannot "
                "be recovered in order. Restore the data directory from a copy",
                dir, up_to->sequence, damage, scanned->file, scanned->offset, scanned->behind));
        }
        if (up_to && past) {
            warnings.push_back(fmt::format(
                "the write-ahead log ends in a damaged batch after record {} ({}{}), with nothing "
                "behind it: taken for a write torn by a crash before its sync returned (never "
                "acknowledged), and recovered without it",
                up_to->sequence, damage,
                scanned ? fmt::format(", {} at byte {}", scanned->file, scanned->offset) : ""));
            p = impl::open(dir, read_only, rocksdb::WALRecoveryMode::kPointInTimeRecovery);
        }
    }
    if (!p) return failed(p.error(), fmt::format("opening {}", dir));
    auto& opened = *p;
    opened->open_warnings = std::move(warnings);

    auto tip = opened->read_tip(rocksdb::ReadOptions{});
    if (!tip) return unexpected{tip.error()};
    opened->tip = *tip;
    opened->durable_sequence = tip->sequence;
    if (auto checked = opened->verify_last_record(); !checked) return unexpected{checked.error()};
    return std::unique_ptr<store>(new store(std::move(opened)));
}

const std::vector<std::string>& store::open_warnings() const {
    return impl_->open_warnings;
}

store::memory_use store::memory() const {
    memory_use m;
    (void)impl_->db->GetAggregatedIntProperty(rocksdb::DB::Properties::kCurSizeAllMemTables,
                                              &m.memtables);
    (void)impl_->db->GetAggregatedIntProperty(rocksdb::DB::Properties::kEstimateTableReadersMem,
                                              &m.table_readers);
    // One cache shared by every family: asked once, not summed.
    (void)impl_->db->GetIntProperty(impl_->cf(cf_journal), rocksdb::DB::Properties::kBlockCacheUsage,
                                    &m.block_cache);
    return m;
}

std::uint64_t store::last_sequence() const {
    return impl_->tip.sequence;
}
const hash256& store::tip_hash() const {
    return impl_->tip.hash;
}

result<ok_t, store_error> store::append(const write_set& w) {
    if (w.events.empty() && w.changes.empty()) return ok_v;
    chain_tip next = impl_->tip;
    rocksdb::WriteBatch batch;
    std::string record;
    // Runs of up to journal_run_max records share a key: every key costs a memtable insert and
    // its share of the flush, far more than its bytes do.
    std::uint64_t run_first = 0;
    std::size_t run_length = 0;
    for (const event& e : w.events) {
        // The engine numbers events; a gap or repeat here is a bug upstream, never bad input.
        BROKER_ASSERT(e.sequence == next.sequence + 1);
        if (run_length == 0) {
            record.clear();
            run_first = e.sequence;
        }
        const std::size_t at = record.size();
        encode_record(e, next.hash, record);
        next = chain_tip{e.sequence, chain_hash(next.hash, std::string_view(record).substr(at))};
        if (++run_length == journal_run_max || &e == &w.events.back()) {
            auto s = batch.Put(impl_->cf(cf_journal), be_key(run_first), record);
            if (!s.ok()) return failed(s, "batching records");
            run_length = 0;
        }
    }
    std::string runs;               // the trade records of one run, back to back
    std::vector<std::size_t> ends;  // where each record of the run ends in `runs`
    std::vector<std::string_view> run;
    std::string closed;
    // The terminal trade under its id, naming the change that closed it.
    auto put_closed = [&](const trade_change& c, std::string_view trade_record) {
        closed.clear();
        encode_closed_trade(c.update_sequence, trade_record, closed);
        return batch.Put(impl_->cf(cf_closed_by_customer),
                         customer_key(c.snapshot.customer_id, be_key(c.snapshot.id.value)), closed);
    };
    // The close of an open trade goes to "closed_by_customer" alone (store.h).
    auto closes_open_trade = [](const indexed_change& ic) {
        return is_terminal(ic.change.snapshot.status) && !ic.created;
    };
    for (std::size_t i = 0; i < w.changes.size();) {
        if (closes_open_trade(w.changes[i])) {
            runs.clear();
            encode_trade(w.changes[i].change.snapshot, runs);
            const auto s = put_closed(w.changes[i].change, runs);
            if (!s.ok()) return failed(s, "batching a closed trade");
            ++i;
            continue;
        }
        // A run of one customer's changes (a placement and its submission, say) is one key of
        // "updates": every key costs the memtable insert and the flush more than its bytes do.
        const std::string& customer = w.changes[i].change.snapshot.customer_id;
        const std::uint64_t first = w.changes[i].change.update_sequence;
        const indexed_change* last = nullptr;
        runs.clear();
        ends.clear();
        for (; i < w.changes.size() && ends.size() < update_run_max; ++i) {
            const indexed_change& ic = w.changes[i];
            const trade_change& c = ic.change;
            const trade& t = c.snapshot;
            if (t.customer_id != customer || closes_open_trade(ic)) break;
            // A customer's changes are counted one by one, and a write set holds consecutive
            // events, so a run's update sequences follow each other (readers rely on it).
            BROKER_ASSERT(c.update_sequence == first + ends.size());
            const std::size_t at = runs.size();
            encode_trade(t, runs);
            ends.push_back(runs.size());
            last = &ic;
            rocksdb::Status s;
            if (is_terminal(t.status)) {
                // Created closed (refused): in the run, so that every trade is in one.
                s = put_closed(c, std::string_view(runs).substr(at));
            }
            if (s.ok() && ic.created && !t.client_order_id.empty()) {
                s = batch.Put(impl_->cf(cf_client_orders),
                              customer_key(t.customer_id, t.client_order_id), be_key(t.id.value));
            }
            if (!s.ok()) return failed(s, "batching trade indexes");
        }
        // Bounds that were never set would read as "nothing open" and hide closes from the
        // backlog: a bug upstream (index_change gives a next id above the run's trades).
        BROKER_ASSERT(last->next_trade.value > last->change.snapshot.id.value);
        run.clear();
        for (std::size_t k = 0, at = 0; k < ends.size(); at = ends[k], ++k) {
            run.emplace_back(runs.data() + at, ends[k] - at);
        }
        record.clear();
        encode_update_run(last->open_from.value, last->next_trade.value, run, record);
        const auto s =
            batch.Put(impl_->cf(cf_updates), customer_key(customer, be_key(first)), record);
        if (!s.ok()) return failed(s, "batching trade updates");
    }
    if (!w.events.empty()) {
        const auto s =
            batch.Put(impl_->cf(cf_meta),
                      rocksdb::Slice(chain_tip_key.data(), chain_tip_key.size()), encode_tip(next));
        if (!s.ok()) return failed(s, "batching the chain tip");
    }
    rocksdb::WriteOptions wo;
    wo.sync = true;
    const auto s = impl_->db->Write(wo, &batch);
    if (!s.ok()) return failed(s, "writing the journal");
    impl_->tip = next;
    impl_->durable_sequence.store(next.sequence);
    return ok_v;
}

result<std::uint64_t, store_error> store::read(std::uint64_t from, std::uint64_t until,
                                               const std::function<void(const event&)>& fn) const {
    BROKER_ASSERT(from >= 1);
    // One snapshot for the tip and the records: a concurrent append cannot make them disagree.
    rocksdb::ManagedSnapshot snapshot(impl_->db.get());
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot.snapshot();
    ro.verify_checksums = true;
    const auto tip = impl_->read_tip(ro);
    if (!tip) return unexpected{tip.error()};
    const bool to_end = until == 0 || until >= tip->sequence;
    const std::uint64_t last = to_end ? tip->sequence : until;

    chain_checker chain(from);
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->cf(cf_journal)));
    // A key names the first record of its run, so the run that holds `from` may start before it.
    it->SeekForPrev(be_key(from));
    if (!it->Valid()) it->Seek(be_key(from));
    // A record's checksum guards against damage, not against an edit that recomputed it: only
    // the next record's prev_hash (or, for the last one, the stored tip) vouches for its bytes.
    // So each event goes to `fn` once that check has passed, never before. An altered record is
    // then reported as corruption instead of being applied, where an impossible event (a fill
    // of a trade that does not exist, say) would stop the engine on an assertion.
    std::optional<event> held;
    bool past_last = false;
    const auto visit = [&](std::uint64_t seq, std::string_view bytes) -> result<bool, store_error> {
        if (!chain.read_any() && seq < from) return true;  // the run's records before `from`
        if (seq > last) {
            if (to_end) {
                return corrupt(fmt::format("record {}: beyond the chain tip {}", seq, last));
            }
            if (held) {  // the record after the range vouches for its last one
                if (auto next = chain.confirms(seq, bytes); !next) return unexpected{next.error()};
                fn(*held);
                held.reset();
            }
            past_last = true;
            return false;
        }
        auto ev = chain.accept(seq, bytes);
        if (!ev) return unexpected{ev.error()};
        if (held) fn(*held);
        held.emplace(std::move(*ev));
        return true;
    };
    for (; it->Valid() && !past_last; it->Next()) {
        const auto key = parse_key(view(it->key()));
        if (!key) return corrupt(fmt::format("journal key of {} bytes", it->key().size()));
        if (auto walked = for_each_record(*key, view(it->value()), visit); !walked) {
            return unexpected{walked.error()};
        }
    }
    if (!it->status().ok()) return failed(it->status(), "reading the journal");
    if (from <= last && chain.last_read() != last) {
        return corrupt(fmt::format("record {}: missing (the journal should reach {})",
                                   chain.last_read() + 1, last));
    }
    // The tip check needs a chain to compare: one read from here, or the empty journal.
    const bool checkable = chain.read_any() || from == 1;
    if (to_end && checkable && chain.running() != tip->hash) {
        return corrupt(fmt::format("record {}: chain hash {} differs from the stored tip {}", last,
                                   to_hex(chain.running()), to_hex(tip->hash)));
    }
    if (held) {
        // Reading to the end, the tip check above vouched for the last record. Within the
        // journal, the loop ended before the record after the range.
        if (!to_end) {
            return corrupt(fmt::format("record {}: missing (the journal reaches {})", last + 1,
                                       tip->sequence));
        }
        fn(*held);
    }
    return chain.last_read();
}

result<hash256, store_error> store::chain_hash_at(std::uint64_t sequence) const {
    rocksdb::ReadOptions ro;
    ro.verify_checksums = true;
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->cf(cf_journal)));
    it->SeekForPrev(be_key(sequence));  // the run that holds it starts at or before it
    if (!it->status().ok()) return failed(it->status(), fmt::format("reading record {}", sequence));
    if (!it->Valid()) return corrupt(fmt::format("record {}: missing", sequence));
    const auto key = parse_key(view(it->key()));
    if (!key) return corrupt(fmt::format("journal key of {} bytes", it->key().size()));
    std::optional<hash256> found;
    auto walked = for_each_record(
        *key, view(it->value()),
        [&](std::uint64_t seq, std::string_view bytes) -> result<bool, store_error> {
            if (seq != sequence) return true;
            auto rec = decode_record(sequence, bytes);
            if (!rec) return corrupt(rec.error().what);
            found = chain_hash(rec->prev_hash, bytes);
            return false;
        });
    if (!walked) return unexpected{walked.error()};
    if (!found) return corrupt(fmt::format("record {}: missing", sequence));
    return *found;
}

namespace {

// What the "snapshots" family holds: the heads, newest first, and keys that belong to no
// snapshot: whole values of an older store, and the sequences of pieces without a head.
struct snapshot_listing {
    std::vector<std::uint64_t> heads;
    std::vector<std::string> whole_values;
    std::vector<std::uint64_t> headless;
};

result<snapshot_listing, store_error> list_snapshots(rocksdb::DB& db, rocksdb::ColumnFamilyHandle* cf) {
    // From the newest head straight to the one before (the key before a snapshot's first piece),
    // so that only heads are read, not the blocks of the pieces (and not into the block cache).
    snapshot_listing out;
    rocksdb::ReadOptions ro;
    ro.fill_cache = false;
    std::unique_ptr<rocksdb::Iterator> it(db.NewIterator(ro, cf));
    it->SeekToLast();
    while (it->Valid()) {
        const std::string_view key = view(it->key());
        const auto seq = key.size() >= 8 ? parse_key(key.substr(0, 8)) : std::nullopt;
        if (seq && key.size() == 9 && key[8] == snapshot_head_tag) {
            out.heads.push_back(*seq);
            it->SeekForPrev(snapshot_key(*seq, snapshot_piece_tag));
        } else if (seq && key.size() == 8) {
            out.whole_values.emplace_back(key);
            it->Prev();
        } else if (seq && key.size() == 13 && key[8] == snapshot_piece_tag) {
            out.headless.push_back(*seq);
            it->SeekForPrev(snapshot_key(*seq, snapshot_piece_tag));
        } else {
            return corrupt(fmt::format("snapshot key of {} bytes", key.size()));
        }
    }
    if (!it->status().ok()) return failed(it->status(), "listing snapshots");
    return out;
}

}  // namespace

store::snapshot_source store::pieces_of(std::string_view bytes) {
    return [bytes, at = std::size_t{0}](std::string& piece) mutable -> result<bool, store_error> {
        const std::size_t n = std::min(snapshot_piece_size, bytes.size() - at);
        piece.assign(bytes.data() + at, n);
        at += n;
        return n > 0;
    };
}

result<ok_t, store_error> store::put_snapshot(std::uint64_t sequence, std::string_view bytes) {
    return put_snapshot(sequence, pieces_of(bytes));
}

result<ok_t, store_error> store::put_snapshot(std::uint64_t sequence, const snapshot_source& next) {
    BROKER_ASSERT(sequence >= 1 && sequence <= impl_->durable_sequence.load());
    BROKER_ASSERT(impl_->has_snapshots());
    // A table file of its own, ingested: not through the WAL, where ~100 MB (at 1M customers)
    // would hold up every journal commit queued behind it for a second, nor through a memtable,
    // which would copy it whole in memory. Durable once IngestExternalFile returns; a crash
    // before that loses only this snapshot (recovery uses the previous one).
    const std::string path = fmt::format("{}/{}{}{}", impl_->dir, snapshot_file_prefix, sequence,
                                         snapshot_file_suffix);
    // Uncompressed: a snapshot is read once, at start-up, and compressing it would cost the
    // writer a second copy of each block.
    rocksdb::Options file_options(db_options(false), cf_options());
    file_options.compression = rocksdb::kNoCompression;
    rocksdb::Status s;
    std::optional<store_error> source_failed;
    {
        rocksdb::SstFileWriter writer(rocksdb::EnvOptions{}, file_options, impl_->cf(cf_snapshots));
        s = writer.Open(path);
        snapshot_head head;
        std::string piece;
        while (s.ok()) {
            auto more = next(piece);
            if (!more) {
                source_failed = more.error();
                break;
            }
            if (!*more) break;
            BROKER_ASSERT(!piece.empty() && piece.size() <= snapshot_piece_size);
            BROKER_ASSERT(head.pieces < std::numeric_limits<std::uint32_t>::max());
            s = writer.Put(snapshot_piece_key(sequence, head.pieces), rocksdb::Slice(piece));
            ++head.pieces;
            head.bytes += piece.size();
        }
        if (s.ok() && !source_failed) {
            BROKER_ASSERT(head.pieces > 0);
            s = writer.Put(snapshot_key(sequence, snapshot_head_tag), encode_snapshot_head(head));
        }
        if (s.ok() && !source_failed) s = writer.Finish();
    }
    if (s.ok() && !source_failed) {
        rocksdb::IngestExternalFileOptions ingest;
        ingest.move_files = true;
        s = impl_->db->IngestExternalFile(impl_->cf(cf_snapshots), {path}, ingest);
    }
    std::error_code ignored;
    std::filesystem::remove(path, ignored);  // moved into the store, or given up
    if (source_failed) return unexpected{*source_failed};
    if (!s.ok()) return failed(s, fmt::format("storing the snapshot at {}", sequence));

    // The deletions may be lost in a crash (a third snapshot kept). They are all of keys below
    // the next snapshot's, so that its ingestion never overlaps the memtable holding them: an
    // overlap makes RocksDB flush that memtable while every journal write waits.
    rocksdb::WriteOptions no_wal;
    no_wal.disableWAL = true;
    auto listed = list_snapshots(*impl_->db, impl_->cf(cf_snapshots));
    if (!listed) return unexpected{listed.error()};
    // First the table files that hold nothing but a dropped snapshot (each was ingested as one):
    // deletions alone would not free their space, since the files sit in the last level, where
    // no compaction ever brings the deletions down to them (1M customers, a snapshot every 500k
    // events: 5 GB of dead snapshots after 31M events). Only files wholly inside one dropped
    // snapshot's keys go, before its deletions are written, so no deletion is ever dropped
    // with them.
    std::vector<std::uint64_t> dropped(listed->headless);
    for (std::size_t i = snapshots_kept; i < listed->heads.size(); ++i) {
        dropped.push_back(listed->heads[i]);
    }
    if (!dropped.empty()) {
        std::vector<std::string> bounds;
        bounds.reserve(2 * dropped.size());
        for (const std::uint64_t seq : dropped) {
            bounds.push_back(snapshot_key(seq, snapshot_piece_tag));
            bounds.push_back(snapshot_key(seq, snapshot_head_tag));
        }
        std::vector<rocksdb::Slice> slices(bounds.begin(), bounds.end());
        std::vector<rocksdb::RangePtr> ranges;
        for (std::size_t i = 0; i < slices.size(); i += 2) ranges.emplace_back(&slices[i], &slices[i + 1]);
        s = rocksdb::DeleteFilesInRanges(impl_->db.get(), impl_->cf(cf_snapshots), ranges.data(),
                                         ranges.size(), /*include_end=*/true);
        if (!s.ok()) return failed(s, "deleting the files of old snapshots");
    }
    rocksdb::WriteBatch drop;
    auto drop_pieces = [&](std::uint64_t seq) {
        return drop.DeleteRange(impl_->cf(cf_snapshots), snapshot_key(seq, snapshot_piece_tag),
                                snapshot_key(seq, static_cast<char>(snapshot_piece_tag + 1)));
    };
    for (std::size_t i = snapshots_kept; i < listed->heads.size() && s.ok(); ++i) {
        s = drop.Delete(impl_->cf(cf_snapshots), snapshot_key(listed->heads[i], snapshot_head_tag));
        if (s.ok()) s = drop_pieces(listed->heads[i]);
    }
    for (std::size_t i = 0; i < listed->headless.size() && s.ok(); ++i) {
        s = drop_pieces(listed->headless[i]);
    }
    for (std::size_t i = 0; i < listed->whole_values.size() && s.ok(); ++i) {
        s = drop.Delete(impl_->cf(cf_snapshots), listed->whole_values[i]);
    }
    if (!s.ok()) return failed(s, "batching a snapshot deletion");
    if (drop.Count() == 0) return ok_v;
    s = impl_->db->Write(no_wal, &drop);
    if (!s.ok()) return failed(s, "deleting old snapshots");
    return ok_v;
}

result<std::vector<std::uint64_t>, store_error> store::snapshot_sequences() const {
    if (!impl_->has_snapshots()) return std::vector<std::uint64_t>{};
    auto listed = list_snapshots(*impl_->db, impl_->cf(cf_snapshots));
    if (!listed) return unexpected{listed.error()};
    return std::move(listed->heads);
}

result<std::string, store_error> store::read_snapshot(std::uint64_t sequence) const {
    if (!impl_->has_snapshots()) return corrupt(fmt::format("no snapshot at {}", sequence));
    rocksdb::ReadOptions ro;
    ro.verify_checksums = true;
    ro.fill_cache = false;  // read once, at start-up
    std::string value;
    auto s = impl_->db->Get(ro, impl_->cf(cf_snapshots), snapshot_key(sequence, snapshot_head_tag),
                            &value);
    if (s.IsNotFound()) return corrupt(fmt::format("no snapshot at {}", sequence));
    if (!s.ok()) return failed(s, fmt::format("reading the snapshot at {}", sequence));
    const auto head = decode_snapshot_head(value);
    if (!head) return corrupt(fmt::format("snapshot at {}: head of {} bytes", sequence, value.size()));
    std::string out;  // not reserved by the head's count: that is not verified yet
    const std::string begin = snapshot_key(sequence, snapshot_piece_tag);
    const std::string end = snapshot_key(sequence, static_cast<char>(snapshot_piece_tag + 1));
    const rocksdb::Slice lower(begin);
    const rocksdb::Slice upper(end);
    ro.iterate_lower_bound = &lower;
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->cf(cf_snapshots)));
    std::uint32_t pieces = 0;
    for (it->Seek(lower); it->Valid(); it->Next(), ++pieces) {
        if (view(it->key()) != snapshot_piece_key(sequence, pieces)) {
            return corrupt(fmt::format("snapshot at {}: piece {} missing", sequence, pieces));
        }
        out.append(it->value().data(), it->value().size());
    }
    if (!it->status().ok()) return failed(it->status(), fmt::format("reading the snapshot at {}", sequence));
    if (pieces != head->pieces || out.size() != head->bytes) {
        return corrupt(fmt::format("snapshot at {}: {} pieces of {} bytes, its head says {} of {}",
                                   sequence, pieces, out.size(), head->pieces, head->bytes));
    }
    return out;
}

result<std::optional<trade>, store_error> store::find_trade(const std::string& customer_id,
                                                            trade_id id) const {
    std::string value;
    const auto s = impl_->db->Get(rocksdb::ReadOptions{}, impl_->cf(cf_closed_by_customer),
                                  customer_key(customer_id, be_key(id.value)), &value);
    if (s.IsNotFound()) return std::optional<trade>{};
    if (!s.ok()) return failed(s, fmt::format("reading trade {}", format_trade_id(id)));
    auto closed = decode_closed_trade(value);
    if (!closed) {
        return corrupt(fmt::format("trade {}: {}", format_trade_id(id), closed.error().what));
    }
    auto* t = &closed->t;
    if (t->id != id || t->customer_id != customer_id) {
        return corrupt(fmt::format("trade {} of {}: stored record is trade {} of {}",
                                   format_trade_id(id), customer_id, format_trade_id(t->id),
                                   t->customer_id));
    }
    return std::optional<trade>{std::move(*t)};
}

result<closed_listing, store_error> store::closed_trades(const std::string& customer_id,
                                                         trade_id before, std::optional<symbol> sym,
                                                         std::size_t limit,
                                                         std::size_t scan_max) const {
    BROKER_ASSERT(scan_max > 0);
    closed_listing out;
    const std::string prefix = customer_key(customer_id, "");
    std::unique_ptr<rocksdb::Iterator> it(
        impl_->db->NewIterator(rocksdb::ReadOptions{}, impl_->cf(cf_closed_by_customer)));
    // Newest first: start just below `before` (or past the customer's last key) and walk back.
    const std::uint64_t start = before.value == 0 ? std::numeric_limits<std::uint64_t>::max()
                                                  : before.value - 1;
    if (before.value == 1) return out;
    it->SeekForPrev(customer_key(customer_id, be_key(start)));
    std::size_t read = 0;
    trade_id last_read{0};
    for (; it->Valid() && out.trades.size() < limit; it->Prev()) {
        const std::string_view key = view(it->key());
        if (!key.starts_with(prefix)) break;
        if (read == scan_max) {
            out.scanned_to = last_read;  // another of the customer's trades is left unread
            break;
        }
        ++read;
        auto closed = decode_closed_trade(view(it->value()));
        if (!closed) {
            return corrupt(fmt::format("closed trade of {}: {}", customer_id, closed.error().what));
        }
        last_read = closed->t.id;
        if (sym && closed->t.sym != *sym) continue;
        out.trades.push_back(std::move(closed->t));
    }
    if (!it->status().ok()) return failed(it->status(), "listing closed trades");
    return out;
}

result<std::optional<trade_id>, store_error> store::find_client_order(
    const std::string& customer_id, std::string_view client_order_id) const {
    std::string value;
    const auto s = impl_->db->Get(rocksdb::ReadOptions{}, impl_->cf(cf_client_orders),
                                  customer_key(customer_id, client_order_id), &value);
    if (s.IsNotFound()) return std::optional<trade_id>{};
    if (!s.ok()) return failed(s, "reading a client order id");
    const auto id = parse_key(value);
    if (!id) return corrupt(fmt::format("client order {} of {}: bad trade id", client_order_id,
                                        customer_id));
    return std::optional<trade_id>{trade_id{*id}};
}

result<std::vector<trade_change>, store_error> store::updates_since(
    const std::string& customer_id, std::uint64_t after, std::size_t limit) const {
    std::vector<trade_change> out;
    if (after == std::numeric_limits<std::uint64_t>::max() || limit == 0) return out;
    const std::string prefix = customer_key(customer_id, "");
    // One view of both families: a change committed between the two reads cannot be half seen.
    rocksdb::ManagedSnapshot snapshot(impl_->db.get());
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot.snapshot();
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->cf(cf_updates)));
    // The anchor: the last run that starts at or before `after`. Its bounds hold every trade open
    // at `after` (store.h): between its end and `after` the customer's trades only closed, and a
    // trade created up to `after` is in it or in a run before it. Without an anchor nothing was
    // open at `after`; an anchor of an older layout has no bounds, and then every closed trade
    // of the customer is looked at.
    std::uint64_t open_from = 0;
    std::uint64_t open_below = 0;
    it->SeekForPrev(customer_key(customer_id, be_key(after)));
    if (it->Valid() && view(it->key()).starts_with(prefix)) {
        auto anchor = decode_update_run(view(it->value()));
        if (!anchor) {
            return corrupt(
                fmt::format("update of {} is corrupt: {}", customer_id, anchor.error().what));
        }
        open_from = anchor->bounded ? anchor->open_from : 0;
        open_below =
            anchor->bounded ? anchor->next_trade : std::numeric_limits<std::uint64_t>::max();
    } else {
        it->Seek(customer_key(customer_id, be_key(after + 1)));
    }
    // The runs' changes after `after`, at most `limit`; the closes found below are merged in.
    std::uint64_t trades_below = open_below;  // every trade with a change read is below it
    for (; it->Valid() && out.size() < limit; it->Next()) {
        const std::string_view key = view(it->key());
        if (!key.starts_with(prefix)) break;
        const auto first = parse_key(key.substr(prefix.size()));
        auto run = decode_update_run(view(it->value()));
        if (!first || !run) {
            return corrupt(fmt::format("update of {} is corrupt{}", customer_id,
                                       run ? "" : ": " + run.error().what));
        }
        for (std::size_t k = 0; k < run->trades.size() && out.size() < limit; ++k) {
            const std::uint64_t seq = *first + k;
            if (seq <= after) continue;
            trades_below = std::max(trades_below, run->trades[k].id.value + 1);
            out.push_back(trade_change{std::move(run->trades[k]), seq});
        }
    }
    if (!it->status().ok()) return failed(it->status(), "reading updates");
    // Every change up to `through` is now read or is the close of a trade with an id in
    // [open_from, trades_below): one open at `after`, or one created by a change read above.
    const std::uint64_t through = out.size() == limit ? out.back().update_sequence
                                                      : std::numeric_limits<std::uint64_t>::max();
    const std::size_t from_runs = out.size();
    std::unique_ptr<rocksdb::Iterator> closed(
        impl_->db->NewIterator(ro, impl_->cf(cf_closed_by_customer)));
    for (closed->Seek(customer_key(customer_id, be_key(open_from))); closed->Valid();
         closed->Next()) {
        const std::string_view key = view(closed->key());
        if (!key.starts_with(prefix)) break;
        const auto id = parse_key(key.substr(prefix.size()));
        if (!id) return corrupt(fmt::format("closed trade key of {} is corrupt", customer_id));
        if (*id >= trades_below) break;
        auto c = decode_closed_trade(view(closed->value()));
        if (!c) {
            return corrupt(
                fmt::format("closed trade of {} is corrupt: {}", customer_id, c.error().what));
        }
        if (c->t.id.value != *id || c->t.customer_id != customer_id) {
            return corrupt(fmt::format("closed trade {} of {}: stored record is trade {} of {}",
                                       format_trade_id(trade_id{*id}), customer_id,
                                       format_trade_id(c->t.id), c->t.customer_id));
        }
        // 0: a value of an older layout, whose close is in a run too.
        if (c->update_sequence <= after || c->update_sequence > through) continue;
        out.push_back(trade_change{std::move(c->t), c->update_sequence});
    }
    if (!closed->status().ok()) return failed(closed->status(), "reading closed trades");
    if (out.size() > from_runs) {
        std::sort(out.begin(), out.end(), [](const trade_change& a, const trade_change& b) {
            return a.update_sequence < b.update_sequence;
        });
        out.erase(std::unique(out.begin(), out.end(),
                              [](const trade_change& a, const trade_change& b) {
                                  return a.update_sequence == b.update_sequence;
                              }),
                  out.end());
        if (out.size() > limit) out.resize(limit);
    }
    return out;
}

indexed_change index_change(const state& st, trade_change change, bool created) {
    const customer* c = st.find_customer(change.snapshot.customer_id);
    BROKER_ASSERT(c != nullptr);
    const trade_id next{st.next_trade_id};
    // fifo holds the open trades oldest first, and ids are given in order (check_invariants).
    const trade_id from = c->fifo.empty() ? next : c->fifo.front();
    return indexed_change{std::move(change), created, from, next};
}

result<state, store_error> replay(const store& s, std::uint64_t until,
                                  const std::function<void(const state&)>& after_each) {
    state st;
    auto read = s.read(1, until, [&](const event& e) {
        (void)apply(st, e);
        if (after_each) after_each(st);
    });
    if (!read) return unexpected{read.error()};
    if (auto broken = check_invariants(st)) {
        return corrupt(
            fmt::format("state after record {} breaks an invariant: {}", *read, *broken));
    }
    return st;
}

namespace {

// The state of a stored snapshot, if it decodes and matches the journal; otherwise why not.
result<state, std::string> load_snapshot(const store& s, std::uint64_t sequence) {
    if (sequence > s.last_sequence()) {
        return unexpected{fmt::format("beyond the journal tip {}", s.last_sequence())};
    }
    auto bytes = s.read_snapshot(sequence);
    if (!bytes) return unexpected{bytes.error().what};
    auto snap = decode_snapshot(*bytes);
    if (!snap) return unexpected{snap.error().what};
    if (snap->st.last_sequence != sequence) {
        return unexpected{fmt::format("stored under {} but names {}", sequence,
                                      snap->st.last_sequence)};
    }
    auto journal_hash = s.chain_hash_at(sequence);
    if (!journal_hash) return unexpected{journal_hash.error().what};
    if (*journal_hash != snap->chain_hash) {
        return unexpected{fmt::format("chain hash {} differs from the journal's {}",
                                      to_hex(snap->chain_hash), to_hex(*journal_hash))};
    }
    return std::move(snap->st);
}

}  // namespace

result<state, store_error> recover(const store& s, recovery_report* report) {
    recovery_report local;
    recovery_report& out = report != nullptr ? *report : local;
    out = recovery_report{};
    auto sequences = s.snapshot_sequences();
    if (!sequences) {
        out.warnings.push_back(fmt::format("cannot list snapshots: {}", sequences.error().what));
        sequences = std::vector<std::uint64_t>{};
    }
    for (const std::uint64_t seq : *sequences) {
        auto loaded = load_snapshot(s, seq);
        if (!loaded) {
            out.warnings.push_back(fmt::format("snapshot at {} refused: {}", seq, loaded.error()));
            continue;
        }
        state st = std::move(*loaded);
        // Reading from the snapshot's own record checks that the next record chains to it, and
        // reading to the end checks the chain against the stored tip.
        auto read = s.read(seq, 0, [&](const event& e) {
            if (e.sequence <= seq) return;
            (void)apply(st, e);
            ++out.events_applied;
        });
        if (!read) return unexpected{read.error()};
        if (auto broken = check_invariants(st)) {
            return corrupt(fmt::format("state after record {} (from the snapshot at {}) breaks an "
                                       "invariant: {}",
                                       *read, seq, *broken));
        }
        out.snapshot_sequence = seq;
        return st;
    }
    auto st = replay(s);
    if (st) out.events_applied = st->last_sequence;
    return st;
}

std::string state_digest(const state& s) {
    std::string bytes;
    write_canonical(s, bytes);
    hash256 digest{};
    unsigned int len = 0;
    const bool ok =
        EVP_Digest(bytes.data(), bytes.size(), digest.data(), &len, EVP_sha256(), nullptr) == 1;
    BROKER_ASSERT(ok && len == digest.size());
    return to_hex(digest);
}

}  // namespace broker::journal
