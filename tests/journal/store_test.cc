#include "journal/store.h"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <rocksdb/db.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "journal/snapshot.h"
#include "journal/wal_scan.h"
#include "tests/engine/random_journal.h"
#include "tests/journal/fixtures.h"
#include "tests/temp_dir.h"

namespace broker::journal {
namespace {

namespace fs = std::filesystem;

// The store goes in a subdirectory of a fresh temp dir.
class temp_dir : public test_support::temp_dir {
  public:
    temp_dir() : test_support::temp_dir("journal-test") {}
    [[nodiscard]] std::string str() const { return (path() / "db").string(); }
};

std::unique_ptr<store> open_store(const temp_dir& dir, bool read_only = false) {
    auto s = store::open(dir.str(), read_only);
    if (!s) FAIL("open failed: ", s.error().what);
    return std::move(s.value());
}

void append_ok(store& s, write_set w) {
    const auto r = s.append(w);
    if (!r) FAIL("append failed: ", r.error().what);
}

std::vector<event> read_all(const store& s, std::uint64_t from = 1, std::uint64_t until = 0) {
    std::vector<event> out;
    const auto r = s.read(from, until, [&](const event& e) { out.push_back(e); });
    if (!r) FAIL("read failed: ", r.error().what);
    return out;
}

std::string key(std::uint64_t v) {
    std::string out;
    for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
    return out;
}

// The store's files opened directly, as an attacker or a broken disk would change them.
class raw_db {
  public:
    explicit raw_db(const std::string& dir) {
        std::vector<rocksdb::ColumnFamilyDescriptor> families;
        for (const char* name : {"default", "journal", "trades", "meta", "closed_by_customer",
                                 "client_orders", "updates", "snapshots"}) {
            families.emplace_back(name, rocksdb::ColumnFamilyOptions{});
        }
        rocksdb::DB* db = nullptr;
        const auto s = rocksdb::DB::Open(rocksdb::DBOptions{}, dir, families, &handles_, &db);
        REQUIRE(s.ok());
        db_.reset(db);
    }
    ~raw_db() {
        for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    }
    raw_db(const raw_db&) = delete;
    raw_db& operator=(const raw_db&) = delete;

    std::string get(int cf, const std::string& k) {
        std::string v;
        REQUIRE(db_->Get(rocksdb::ReadOptions{}, handles_.at(cf), k, &v).ok());
        return v;
    }
    void put(int cf, const std::string& k, const std::string& v) {
        REQUIRE(db_->Put(rocksdb::WriteOptions{}, handles_.at(cf), k, v).ok());
    }
    bool missing(int cf, const std::string& k) {
        std::string v;
        const auto s = db_->Get(rocksdb::ReadOptions{}, handles_.at(cf), k, &v);
        REQUIRE((s.ok() || s.IsNotFound()));
        return s.IsNotFound();
    }
    void del(int cf, const std::string& k) {
        REQUIRE(db_->Delete(rocksdb::WriteOptions{}, handles_.at(cf), k).ok());
    }
    // Journal records live in runs, several to a key (store.h). These find the run that holds
    // record `seq` and read, replace or remove that record alone.
    std::string record(std::uint64_t seq) {
        const auto [k, records] = run_of(seq);
        return records.at(index_in(records, seq)).second;
    }
    void put_record(std::uint64_t seq, const std::string& bytes) {
        auto [k, records] = run_of(seq);
        records.at(index_in(records, seq)).second = bytes;
        put_run(k, records);
    }
    void del_record(std::uint64_t seq) {
        auto [k, records] = run_of(seq);
        records.erase(records.begin() + static_cast<std::ptrdiff_t>(index_in(records, seq)));
        put_run(k, records);
    }
    std::size_t count(int cf) {
        std::unique_ptr<rocksdb::Iterator> it(
            db_->NewIterator(rocksdb::ReadOptions{}, handles_.at(cf)));
        std::size_t n = 0;
        for (it->SeekToFirst(); it->Valid(); it->Next()) ++n;
        REQUIRE(it->status().ok());
        return n;
    }
    // Bytes of the family's live table files.
    std::uint64_t table_bytes(const std::string& family) {
        std::vector<rocksdb::LiveFileMetaData> files;
        db_->GetLiveFilesMetaData(&files);
        std::uint64_t n = 0;
        for (const auto& f : files) n += f.column_family_name == family ? f.size : 0;
        return n;
    }

  private:
    using run = std::vector<std::pair<std::uint64_t, std::string>>;
    std::pair<std::string, run> run_of(std::uint64_t seq) {
        std::unique_ptr<rocksdb::Iterator> it(
            db_->NewIterator(rocksdb::ReadOptions{}, handles_.at(1)));
        it->SeekForPrev(key(seq));
        REQUIRE(it->Valid());
        std::string_view value(it->value().data(), it->value().size());
        run records;
        while (!value.empty()) {
            const auto next = next_record(value, 0);
            REQUIRE(next.has_value());
            records.emplace_back(next->sequence, std::string(value.substr(0, next->size)));
            value.remove_prefix(next->size);
        }
        return {it->key().ToString(), std::move(records)};
    }
    static std::size_t index_in(const run& records, std::uint64_t seq) {
        for (std::size_t i = 0; i < records.size(); ++i) {
            if (records[i].first == seq) return i;
        }
        FAIL("record ", seq, " is in no run");
        return 0;
    }
    void put_run(const std::string& k, const run& records) {
        std::string value;
        for (const auto& r : records) value += r.second;
        if (value.empty()) {
            REQUIRE(db_->Delete(rocksdb::WriteOptions{}, handles_.at(1), k).ok());
        } else {
            REQUIRE(db_->Put(rocksdb::WriteOptions{}, handles_.at(1), k, value).ok());
        }
    }

    std::unique_ptr<rocksdb::DB> db_;
    std::vector<rocksdb::ColumnFamilyHandle*> handles_;
};
constexpr int journal_cf = 1;
constexpr int trades_cf = 2;
constexpr int meta_cf = 3;
constexpr int closed_by_customer_cf = 4;
constexpr int updates_cf = 6;

// Writes `events` with the trade changes the live path would collect, in batches of `batch`.
testing::live_state append_live(store& s, const std::vector<event>& events, std::size_t batch) {
    testing::live_state live;
    for (std::size_t i = 0; i < events.size(); i += batch) {
        const std::vector<event> part(
            events.begin() + static_cast<std::ptrdiff_t>(i),
            events.begin() + static_cast<std::ptrdiff_t>(std::min(events.size(), i + batch)));
        const std::size_t changes_before = live.changes.size();
        live.apply_all(part);
        append_ok(s, write_set{part,
                               {live.changes.begin() + static_cast<std::ptrdiff_t>(changes_before),
                                live.changes.end()}});
    }
    return live;
}

void check_read_corruption(const store& s, std::uint64_t seq, std::string_view needle = "") {
    const auto r = s.read(1, 0, [](const event&) {});
    REQUIRE_FALSE(r.has_value());
    INFO(r.error().what);
    CHECK(r.error().corruption);
    CHECK(r.error().what.find("record " + std::to_string(seq)) != std::string::npos);
    if (!needle.empty()) CHECK(r.error().what.find(needle) != std::string::npos);
}

TEST_CASE("events appended and read back after reopening are identical") {
    temp_dir dir;
    const auto events = testing::sample_events();
    hash256 tip{};
    {
        auto s = open_store(dir);
        CHECK(s->last_sequence() == 0);
        CHECK(s->tip_hash() == hash256{});
        (void)append_live(*s, events, 4);
        CHECK(s->last_sequence() == events.size());
        tip = s->tip_hash();
        CHECK(read_all(*s) == events);
    }
    auto s = open_store(dir);
    CHECK(s->last_sequence() == events.size());
    CHECK(s->tip_hash() == tip);
    CHECK(read_all(*s) == events);
}

TEST_CASE("the chain does not depend on how events were split into batches") {
    const auto events = testing::busy_events(3, 10);
    temp_dir one;
    temp_dir many;
    auto a = open_store(one);
    auto b = open_store(many);
    (void)append_live(*a, events, events.size());
    (void)append_live(*b, events, 7);
    CHECK(a->tip_hash() == b->tip_hash());
    hash256 h{};
    for (const event& e : events) {
        std::string rec;
        encode_record(e, h, rec);
        h = chain_hash(h, rec);
    }
    CHECK(a->tip_hash() == h);
}

TEST_CASE("records in runs of any length read back by any range and any sequence") {
    const auto events = testing::busy_events(4, 12);  // 4 openings + 144 trade events
    std::vector<hash256> chain{hash256{}};
    for (const event& e : events) {
        std::string rec;
        encode_record(e, chain.back(), rec);
        chain.push_back(chain_hash(chain.back(), rec));
    }
    const std::uint64_t n = events.size();
    for (const std::size_t batch : {1, 5, 64, 65, 1000}) {
        CAPTURE(batch);
        temp_dir dir;
        {
            auto s = open_store(dir);
            (void)append_live(*s, events, batch);
        }
        auto s = open_store(dir);  // the tip check at open reads the last run
        CHECK(s->tip_hash() == chain.back());
        for (std::uint64_t from = 1; from <= n; from += 7) {
            for (const std::uint64_t until :
                 {from, from + 1, from + 63, from + 64, n, std::uint64_t{0}}) {
                CAPTURE(from);
                CAPTURE(until);
                const std::uint64_t end = until == 0 ? n : std::min(until, n);
                const auto got = read_all(*s, from, until);
                REQUIRE(got.size() == end - from + 1);
                CHECK(got.front() == events[from - 1]);
                CHECK(got.back() == events[end - 1]);
            }
        }
        for (std::uint64_t seq = 1; seq <= n; ++seq) {
            const auto h = s->chain_hash_at(seq);
            REQUIRE(h.has_value());
            CHECK(*h == chain[seq]);
        }
        const auto beyond = s->chain_hash_at(n + 1);
        REQUIRE_FALSE(beyond.has_value());
        CHECK(beyond.error().what.find("record " + std::to_string(n + 1) + ": missing") !=
              std::string::npos);
        s.reset();
        // A write set's records share keys, at most 64 to a key.
        std::size_t keys = 0;
        for (std::size_t at = 0; at < n; at += batch) {
            keys += (std::min<std::size_t>(batch, n - at) + 63) / 64;
        }
        CHECK(raw_db(dir.str()).count(journal_cf) == keys);
    }
}

TEST_CASE("a damaged length inside a run is corruption naming the record") {
    temp_dir dir;
    {
        auto s = open_store(dir);
        (void)append_live(*s, testing::sample_events(), 5);  // runs 1-5, 6-10, 11-14
    }
    {
        raw_db raw(dir.str());
        std::string rec = raw.record(4);
        constexpr std::size_t payload_len_at = 1 + 2 + 8 + 8 + 32;
        rec[payload_len_at + 3] = static_cast<char>(rec[payload_len_at + 3] + 1);
        raw.put_record(4, rec);
    }
    auto s = open_store(dir);
    std::vector<std::uint64_t> delivered;
    const auto r = s->read(1, 0, [&](const event& e) { delivered.push_back(e.sequence); });
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().corruption);
    CHECK(r.error().what.find("record 4: checksum") != std::string::npos);
    // Record 3 is whole, but only record 4's prev_hash could vouch for it.
    CHECK(delivered == std::vector<std::uint64_t>{1, 2});
}

TEST_CASE("appending continues the chain across reopening") {
    temp_dir dir;
    const auto events = testing::sample_events();
    const std::size_t half = events.size() / 2;
    {
        auto s = open_store(dir);
        append_ok(*s, write_set{{events.begin(), events.begin() + static_cast<long>(half)}, {}});
    }
    auto s = open_store(dir);
    append_ok(*s, write_set{{events.begin() + static_cast<long>(half), events.end()}, {}});
    CHECK(read_all(*s) == events);
}

TEST_CASE("reading a range delivers exactly those records and returns the last one read") {
    temp_dir dir;
    auto s = open_store(dir);
    const auto events = testing::sample_events();
    (void)append_live(*s, events, events.size());
    std::vector<event> got;
    const auto r = s->read(3, 6, [&](const event& e) { got.push_back(e); });
    REQUIRE(r.has_value());
    CHECK(*r == 6);
    CHECK(got == std::vector<event>(events.begin() + 2, events.begin() + 6));
    CHECK(read_all(*s, 5) == std::vector<event>(events.begin() + 4, events.end()));
    CHECK(read_all(*s, 1, 1000) == events);
    CHECK(read_all(*s, events.size() + 1).empty());
}

TEST_CASE("an empty store reads nothing and recovers an empty state") {
    temp_dir dir;
    auto s = open_store(dir);
    const auto r = s->read(1, 0, [](const event&) { FAIL("no events expected"); });
    REQUIRE(r.has_value());
    CHECK(*r == 0);
    const auto st = recover(*s);
    REQUIRE(st.has_value());
    CHECK(state_digest(*st) == state_digest(state{}));
}

TEST_CASE("recover rebuilds the live state with the same digest") {
    temp_dir dir;
    const auto events = testing::sample_events();
    std::string live_digest;
    {
        auto s = open_store(dir);
        const auto live = append_live(*s, events, 3);
        live_digest = state_digest(live.st);
        REQUIRE_FALSE(check_invariants(live.st).has_value());
    }
    auto s = open_store(dir);
    const auto st = recover(*s);
    REQUIRE(st.has_value());
    CHECK(state_digest(*st) == live_digest);
    CHECK(st->last_sequence == events.size());
    CHECK(st->open_trades.size() == 2);
    CHECK(live_digest.size() == 64);
}

TEST_CASE("recover up to a sequence rebuilds the state as it was then") {
    temp_dir dir;
    auto s = open_store(dir);
    const auto events = testing::sample_events();
    (void)append_live(*s, events, events.size());
    testing::live_state partial;
    partial.apply_all({events.begin(), events.begin() + 5});
    const auto st = replay(*s, 5);
    REQUIRE(st.has_value());
    CHECK(st->last_sequence == 5);
    CHECK(state_digest(*st) == state_digest(partial.st));
    CHECK(state_digest(*st) != state_digest(*recover(*s)));
}

TEST_CASE("find_trade returns a customer's terminal trades and nothing for others") {
    temp_dir dir;
    auto s = open_store(dir);
    const auto live = append_live(*s, testing::sample_events(), 2);
    REQUIRE(live.closed.size() == 4);  // trades 1 (filled), 2 (rejected), 3 (refused), 4 (canceled)
    for (const trade& t : live.closed) {
        const auto found = s->find_trade(t.customer_id, t.id);
        REQUIRE(found.has_value());
        REQUIRE(found->has_value());
        CHECK(**found == t);
        // Another customer never sees it.
        const auto other = s->find_trade(t.customer_id + "x", t.id);
        REQUIRE(other.has_value());
        CHECK_FALSE(other->has_value());
    }
    CHECK(live.closed[0].status == trade_status::filled);
    // Open (5, 6) or unknown (999) trades are not in the store.
    const std::string owner = live.closed[0].customer_id;
    for (const std::uint64_t id : {5, 6, 999}) {
        const auto found = s->find_trade(owner, trade_id{id});
        REQUIRE(found.has_value());
        CHECK_FALSE(found->has_value());
    }
}

TEST_CASE("closed_trades reads at most scan_max trades and says where it stopped") {
    temp_dir dir;
    auto s = open_store(dir);
    // Two customers, 30 filled trades each, interleaved; c0's trades of rounds 5 and 25 are
    // MSFT, every other one AAPL. Customer "c"'s keys sort just below c0's, so reading c0's
    // history backwards runs into them.
    testing::stream st;
    st.add(customer_opened{"c0", testing::usd(1'000'000), {}});
    st.add(customer_opened{"c", testing::usd(1'000'000), {}});
    for (int r = 0; r < 30; ++r) {
        st.filled_buy("c0", r == 5 || r == 25 ? "MSFT" : "AAPL", 1, testing::usd(10));
        st.filled_buy("c", "MSFT", 1, testing::usd(10));
    }
    (void)append_live(*s, st.events(), 16);
    auto id_of_round = [](int r) { return trade_id{static_cast<std::uint64_t>(2 * r + 1)}; };
    const auto msft = testing::sym("MSFT");

    // Eight read from the newest: rounds 29 to 22, of which round 25 is MSFT.
    auto page = s->closed_trades("c0", trade_id{0}, msft, 10, 8);
    REQUIRE(page.has_value());
    REQUIRE(page->trades.size() == 1);
    CHECK(page->trades[0].id == id_of_round(25));
    CHECK(page->scanned_to == id_of_round(22));
    // On from there, as a client follows next_after: rounds 21-14, 13-6, then 5-0 to the end.
    page = s->closed_trades("c0", page->scanned_to, msft, 10, 8);
    REQUIRE(page.has_value());
    CHECK(page->trades.empty());
    CHECK(page->scanned_to == id_of_round(14));
    page = s->closed_trades("c0", page->scanned_to, msft, 10, 8);
    REQUIRE(page.has_value());
    CHECK(page->trades.empty());
    CHECK(page->scanned_to == id_of_round(6));
    page = s->closed_trades("c0", page->scanned_to, msft, 10, 8);
    REQUIRE(page.has_value());
    REQUIRE(page->trades.size() == 1);
    CHECK(page->trades[0].id == id_of_round(5));
    CHECK(page->scanned_to == trade_id{0});  // the trades read next would be c's

    // A read that ends at the customer's oldest trade exactly at the bound is complete.
    page = s->closed_trades("c0", id_of_round(8), std::nullopt, 10, 8);
    REQUIRE(page.has_value());
    CHECK(page->trades.size() == 8);
    CHECK(page->scanned_to == trade_id{0});
    // A page that fills stops there, whatever is left: its next_after is its last trade.
    page = s->closed_trades("c0", trade_id{0}, std::nullopt, 5, 8);
    REQUIRE(page.has_value());
    CHECK(page->trades.size() == 5);
    CHECK(page->scanned_to == trade_id{0});
    // Without a bound that bites, one call finds both.
    page = s->closed_trades("c0", trade_id{0}, msft, 10, 4096);
    REQUIRE(page.has_value());
    REQUIRE(page->trades.size() == 2);
    CHECK(page->trades[1].id == id_of_round(5));
    CHECK(page->scanned_to == trade_id{0});
}

TEST_CASE("a damaged terminal trade in the store is reported as corruption") {
    temp_dir dir;
    std::vector<trade> closed;
    {
        auto s = open_store(dir);
        closed = append_live(*s, testing::sample_events(), 100).closed;
    }
    REQUIRE(closed.size() == 4);
    const trade& t1 = closed[0];
    const trade& t2 = closed[1];
    REQUIRE(t1.id.value == 1);
    REQUIRE(t2.id.value == 2);
    const auto closed_key = [](const trade& t, std::uint64_t id) {
        return t.customer_id + std::string(1, '\0') + key(id);
    };
    {
        raw_db raw(dir.str());
        std::string v1 = raw.get(closed_by_customer_cf, closed_key(t1, 1));
        v1[5] = static_cast<char>(v1[5] ^ 0x10);
        raw.put(closed_by_customer_cf, closed_key(t1, 1), v1);
        // A valid record under another trade's key.
        raw.put(closed_by_customer_cf, closed_key(t2, 77),
                raw.get(closed_by_customer_cf, closed_key(t2, 2)));
    }
    auto s = open_store(dir);
    const auto bad = s->find_trade(t1.customer_id, trade_id{1});
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error().corruption);
    CHECK(bad.error().what.find("0000000000000001") != std::string::npos);
    const auto moved = s->find_trade(t2.customer_id, trade_id{77});
    REQUIRE_FALSE(moved.has_value());
    CHECK(moved.error().corruption);
    CHECK(moved.error().what.find("stored record is trade 0000000000000002") != std::string::npos);
    // The undamaged trade still reads.
    const auto good = s->find_trade(t2.customer_id, trade_id{2});
    REQUIRE(good.has_value());
    REQUIRE(good->has_value());
    CHECK(**good == t2);
}

// Every customer's changes after every point, at every limit, against what the live path saw.
void check_updates_since(const store& s, const std::vector<indexed_change>& changes) {
    std::map<std::string, std::vector<trade_change>> expected;
    for (const auto& ic : changes) expected[ic.change.snapshot.customer_id].push_back(ic.change);
    for (const auto& [id, all] : expected) {
        for (std::uint64_t after = 0; after <= all.size() + 1; ++after) {
            for (const std::size_t limit : {1, 2, 3, 7, 1000}) {
                CAPTURE(id);
                CAPTURE(after);
                CAPTURE(limit);
                const auto got = s.updates_since(id, after, limit);
                REQUIRE(got.has_value());
                std::vector<trade_change> want;
                for (const auto& e : all) {
                    if (e.update_sequence > after && want.size() < limit) want.push_back(e);
                }
                REQUIRE(got->size() == want.size());
                for (std::size_t k = 0; k < want.size(); ++k) {
                    CHECK((*got)[k].update_sequence == want[k].update_sequence);
                    CHECK((*got)[k].snapshot == want[k].snapshot);
                }
            }
        }
    }
}

TEST_CASE(
    "updates_since reads a customer's changes from any point with any limit, however batched") {
    for (const int customers : {1, 4}) {
        for (const std::size_t batch : {1, 2, 3, 7, 1000}) {
            CAPTURE(customers);
            CAPTURE(batch);
            temp_dir dir;
            auto s = open_store(dir);
            const auto live = append_live(*s, testing::busy_events(customers, 10), batch);
            REQUIRE(live.changes.size() == 30 * static_cast<std::size_t>(customers));
            check_updates_since(*s, live.changes);
            const auto none = s->updates_since("c0x", 0, 1000);
            REQUIRE(none.has_value());
            CHECK(none->empty());
            s.reset();  // the raw view needs the store closed
            raw_db raw(dir.str());
            const std::size_t keys = raw.count(updates_cf);
            // A fill closes an open trade: it is in "closed_by_customer" alone.
            const std::size_t in_runs = live.changes.size() - live.closed.size();
            if (batch == 1) {
                // One change per write set: one key per change that is not a close.
                CHECK(keys == in_runs);
            } else if (customers == 1 && batch == 1000) {
                // 30 changes of one customer in one write set: each placement and submission
                // one run, each fill breaking it.
                CHECK(keys == 10);
            } else {
                CHECK(keys < live.changes.size());
            }
        }
    }
}

TEST_CASE("updates_since finds every close, however trades were refused, canceled or reordered") {
    // Random streams place, fill, reject, cancel (queued trades too) and modify trades, and
    // refuse placements: closes that happen out of the order of placement, trades created
    // closed, and trades open across any point a stream may resume from.
    std::size_t closes = 0;
    std::size_t refusals = 0;
    for (const std::uint64_t seed : {1, 2, 3, 4, 5, 6}) {
        const broker::testing::random_journal run({seed, 300, 1});
        for (const std::size_t batch : {1, 4, 1000}) {
            CAPTURE(seed);
            CAPTURE(batch);
            temp_dir dir;
            auto s = open_store(dir);
            const auto live = append_live(*s, run.journal, batch);
            check_updates_since(*s, live.changes);
            for (const auto& ic : live.changes) {
                const bool terminal = is_terminal(ic.change.snapshot.status);
                closes += terminal && !ic.created ? 1 : 0;
                refusals += terminal && ic.created ? 1 : 0;
            }
        }
    }
    // The streams did what this test is for.
    CHECK(closes > 100);
    CHECK(refusals > 10);
}

TEST_CASE("updates_since reads a store whose older part has the layout before closes left runs") {
    // An older store held every change in "updates", one key each, and closed trades without
    // the update sequence that closed them; a newer brokerd goes on writing the new layout.
    for (const std::uint64_t seed : {7, 8}) {
        CAPTURE(seed);
        const broker::testing::random_journal run({seed, 300, 1});
        temp_dir dir;
        testing::live_state live;
        {
            auto s = open_store(dir);
            live = append_live(*s, run.journal, 5);
        }
        {
            raw_db raw(dir.str());
            // Each customer's first half of changes, rewritten as the older layout held them.
            std::map<std::string, std::uint64_t> cutoff;
            std::map<std::string, std::uint64_t> count;
            for (const auto& ic : live.changes) ++count[ic.change.snapshot.customer_id];
            for (const auto& [id, n] : count) cutoff[id] = n / 2;
            std::map<std::string, std::vector<const indexed_change*>> by_customer;
            for (const auto& ic : live.changes) {
                by_customer[ic.change.snapshot.customer_id].push_back(&ic);
            }
            for (const auto& [id, list] : by_customer) {
                const std::uint64_t cut = cutoff[id];
                const auto update_key = [&](std::uint64_t seq) {
                    return id + std::string(1, '\0') + key(seq);
                };
                for (const indexed_change* ic : list) {
                    const std::uint64_t seq = ic->change.update_sequence;
                    const trade& t = ic->change.snapshot;
                    std::string record;
                    encode_trade(t, record);
                    // Runs starting at or before the cutoff go; their changes are put back one
                    // key each: older ones in the old layout, later ones as runs of one.
                    if (!raw.missing(updates_cf, update_key(seq)) && seq <= cut) {
                        raw.del(updates_cf, update_key(seq));
                    }
                    if (seq <= cut) {
                        raw.put(updates_cf, update_key(seq), record);
                        if (is_terminal(t.status)) {
                            raw.put(closed_by_customer_cf,
                                    id + std::string(1, '\0') + key(t.id.value), record);
                        }
                    } else if (!is_terminal(t.status) || ic->created) {
                        std::string value;
                        encode_update_run(ic->open_from.value, ic->next_trade.value, {record},
                                          value);
                        raw.put(updates_cf, update_key(seq), value);
                    }
                }
            }
        }
        auto s = open_store(dir);
        check_updates_since(*s, live.changes);
        // And the trades read back from either layout.
        for (const trade& t : live.closed) {
            const auto found = s->find_trade(t.customer_id, t.id);
            REQUIRE(found.has_value());
            REQUIRE(found->has_value());
            CHECK(**found == t);
        }
    }
}

TEST_CASE("a damaged bound or update sequence is corruption, never a missed change") {
    temp_dir dir;
    {
        auto s = open_store(dir);
        (void)append_live(*s, testing::busy_events(1, 3), 1000);
    }
    const std::string run_key = std::string("c0") + '\0' + key(1);
    const std::string closed_key = std::string("c0") + '\0' + key(1);
    // Flips one bit of a stored value, reads the backlog, and puts the value back.
    const auto read_with_flip = [&](int cf, const std::string& k, std::size_t at) {
        std::string kept;
        {
            raw_db raw(dir.str());
            kept = raw.get(cf, k);
            std::string v = kept;
            v[at] = static_cast<char>(v[at] ^ 0x01);
            raw.put(cf, k, v);
        }
        auto r = open_store(dir)->updates_since("c0", 0, 100);
        raw_db(dir.str()).put(cf, k, kept);
        return r;
    };
    std::size_t middle = 0;
    {
        raw_db raw(dir.str());
        const std::string v = raw.get(updates_cf, run_key);
        REQUIRE(static_cast<std::uint8_t>(v.front()) == update_run_version);
        REQUIRE(static_cast<std::uint8_t>(raw.get(closed_by_customer_cf, closed_key).front()) ==
                closed_trade_version);
        middle = v.size() / 2;
    }
    // open_from, next_trade, count, and a byte inside a trade record of the run.
    for (const std::size_t at : {std::size_t{1}, std::size_t{9}, std::size_t{17}, middle}) {
        CAPTURE(at);
        const auto r = read_with_flip(updates_cf, run_key, at);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().corruption);
        CHECK(r.error().what.find("update of c0 is corrupt") != std::string::npos);
        CHECK(r.error().what.find("checksum mismatch") != std::string::npos);
    }
    const auto r = read_with_flip(closed_by_customer_cf, closed_key, 8);  // the update sequence
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().corruption);
    CHECK(r.error().what.find("closed trade of c0 is corrupt") != std::string::npos);
    // Put back, both read again.
    CHECK(open_store(dir)->updates_since("c0", 0, 100).has_value());
}

TEST_CASE("appends write nothing to the retired trades family") {
    temp_dir dir;
    {
        auto s = open_store(dir);
        (void)append_live(*s, testing::sample_events(), 3);
    }
    raw_db raw(dir.str());
    CHECK(raw.count(trades_cf) == 0);
    CHECK(raw.count(closed_by_customer_cf) == 4);
}

TEST_CASE("a record replaced by a validly checksummed one with another prev hash is detected") {
    temp_dir dir;
    const auto events = testing::sample_events();
    {
        auto s = open_store(dir);
        (void)append_live(*s, events, events.size());
    }
    {
        raw_db raw(dir.str());
        hash256 forged{};
        forged.fill(0xab);
        std::string rec;
        encode_record(events[2], forged, rec);
        raw.put_record(3, rec);
    }
    auto s = open_store(dir);
    check_read_corruption(*s, 3, "prev_hash");
    const auto st = recover(*s);
    REQUIRE_FALSE(st.has_value());
    CHECK(st.error().corruption);
    // Reading from the forged record takes its prev_hash as given, but its bytes changed, so the
    // next record no longer chains to it.
    const auto from3 = s->read(3, 0, [](const event&) {});
    REQUIRE_FALSE(from3.has_value());
    CHECK(from3.error().what.find("record 4: prev_hash") != std::string::npos);
    CHECK(read_all(*s, 4).size() == events.size() - 3);
}

// Stores the sample events, then rewrites record 3 as `alter` makes it, with a valid checksum and
// the prev_hash record 3 had: only record 4's prev_hash can tell.
template <class Alter>
void store_with_record_3_rewritten(const temp_dir& dir, Alter alter) {
    const auto events = testing::sample_events();
    REQUIRE(events.size() > 4);
    hash256 prev3{};
    {
        auto s = open_store(dir);
        append_ok(*s, write_set{{events.begin(), events.begin() + 2}, {}});
        prev3 = s->tip_hash();
        append_ok(*s, write_set{{events.begin() + 2, events.end()}, {}});
    }
    raw_db raw(dir.str());
    event forged = events[2];
    alter(forged);
    std::string rec;
    encode_record(forged, prev3, rec);
    raw.put_record(3, rec);
}

TEST_CASE("an altered record with an intact prev hash breaks the chain at the next record") {
    temp_dir dir;
    // A different but perfectly valid record 3.
    store_with_record_3_rewritten(dir, [](event& e) { e.at += 1; });
    auto s = open_store(dir);
    check_read_corruption(*s, 4, "prev_hash");
}

TEST_CASE("a record altered into an impossible event is reported, never applied") {
    // Record 3 rewritten with a valid checksum and the right prev_hash, as a cancel of a trade
    // that does not exist: applying it would trip the engine's assertions. Only record 4's
    // prev_hash shows the change, so nothing may be applied before the record after it (or the
    // stored tip) has vouched for it.
    temp_dir dir;
    store_with_record_3_rewritten(dir, [](event& e) { e.body = trade_canceled{trade_id{999}}; });
    auto s = open_store(dir);
    std::vector<std::uint64_t> delivered;
    const auto r = s->read(1, 0, [&](const event& e) { delivered.push_back(e.sequence); });
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().what.find("record 4: prev_hash") != std::string::npos);
    CHECK(delivered == std::vector<std::uint64_t>{1, 2});
    const auto replayed = replay(*s);
    REQUIRE_FALSE(replayed.has_value());
    CHECK(replayed.error().corruption);
    CHECK(replayed.error().what.find("record 4: prev_hash") != std::string::npos);
    const auto recovered = recover(*s);
    REQUIRE_FALSE(recovered.has_value());
    CHECK(recovered.error().corruption);
    // A range that ends on the altered record needs the record after it to vouch for it.
    const auto ranged = s->read(1, 3, [&](const event& e) { CHECK(e.sequence < 3); });
    REQUIRE_FALSE(ranged.has_value());
    CHECK(ranged.error().what.find("record 4: prev_hash") != std::string::npos);
    // Up to the record before it, the journal is sound.
    const auto before = s->read(1, 2, [](const event&) {});
    REQUIRE(before.has_value());
    CHECK(*before == 2);
}

TEST_CASE("a forged last record is detected at open") {
    temp_dir dir;
    const auto events = testing::sample_events();
    hash256 prev_last{};
    {
        auto s = open_store(dir);
        append_ok(*s, write_set{{events.begin(), events.end() - 1}, {}});
        prev_last = s->tip_hash();
        append_ok(*s, write_set{{events.end() - 1, events.end()}, {}});
    }
    {
        raw_db raw(dir.str());
        event forged = events.back();
        forged.at += 1;
        std::string rec;
        encode_record(forged, prev_last, rec);
        raw.put_record(events.size(), rec);
    }
    const auto s = store::open(dir.str());
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().corruption);
    CHECK(s.error().what.find("record " + std::to_string(events.size())) != std::string::npos);
}

TEST_CASE("a deleted record in the middle is reported as a gap naming its sequence") {
    temp_dir dir;
    {
        auto s = open_store(dir);
        (void)append_live(*s, testing::sample_events(), 5);
    }
    raw_db(dir.str()).del_record(4);
    auto s = open_store(dir);
    check_read_corruption(*s, 4, "missing");
    const auto ranged = s->read(2, 6, [](const event&) {});
    REQUIRE_FALSE(ranged.has_value());
    CHECK(ranged.error().what.find("record 4: missing") != std::string::npos);
}

TEST_CASE("a deleted first record is reported as a gap at record 1") {
    temp_dir dir;
    {
        auto s = open_store(dir);
        (void)append_live(*s, testing::sample_events(), 5);
    }
    raw_db(dir.str()).del_record(1);
    auto s = open_store(dir);
    check_read_corruption(*s, 1, "missing");
}

TEST_CASE("a deleted last record is detected at open") {
    temp_dir dir;
    const auto events = testing::sample_events();
    {
        auto s = open_store(dir);
        (void)append_live(*s, events, 5);
    }
    raw_db(dir.str()).del_record(events.size());
    const auto s = store::open(dir.str());
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().corruption);
    CHECK(s.error().what.find("chain tip") != std::string::npos);
}

TEST_CASE("a record appended behind the store's back is detected") {
    temp_dir dir;
    const auto events = testing::sample_events();
    hash256 tip{};
    {
        auto s = open_store(dir);
        (void)append_live(*s, {events.begin(), events.end() - 1}, 100);
        tip = s->tip_hash();
    }
    {
        std::string rec;
        encode_record(events.back(), tip, rec);
        raw_db(dir.str()).put(journal_cf, key(events.size()), rec);
    }
    const auto s = store::open(dir.str());
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().corruption);
}

TEST_CASE("a flipped byte in a stored record is reported as corruption naming its sequence") {
    temp_dir dir;
    {
        auto s = open_store(dir);
        (void)append_live(*s, testing::sample_events(), 5);
    }
    {
        raw_db raw(dir.str());
        std::string rec = raw.record(6);
        rec[60] = static_cast<char>(rec[60] ^ 0x04);
        raw.put_record(6, rec);
    }
    auto s = open_store(dir);
    std::vector<std::uint64_t> delivered;
    const auto r = s->read(1, 0, [&](const event& e) { delivered.push_back(e.sequence); });
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().what.find("record 6: checksum") != std::string::npos);
    CHECK(delivered == std::vector<std::uint64_t>{1, 2, 3, 4});  // 5 is vouched for by 6
}

TEST_CASE("a damaged chain tip in meta is reported as corruption at open") {
    temp_dir dir;
    {
        auto s = open_store(dir);
        (void)append_live(*s, testing::sample_events(), 5);
    }
    {
        raw_db raw(dir.str());
        std::string tip = raw.get(meta_cf, "chain_tip");
        SUBCASE("wrong size") {
            tip.pop_back();
        }
        SUBCASE("wrong hash") {
            tip.back() = static_cast<char>(tip.back() ^ 1);
        }
        SUBCASE("wrong sequence") {
            tip[7] = static_cast<char>(tip[7] + 1);
        }
        raw.put(meta_cf, "chain_tip", tip);
    }
    const auto s = store::open(dir.str());
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().corruption);
}

TEST_CASE("a read-only store reads what a writer appended and refuses to append") {
    temp_dir dir;
    const auto events = testing::sample_events();
    {
        auto s = open_store(dir);
        (void)append_live(*s, events, 4);
    }
    auto s = open_store(dir, true);
    CHECK(read_all(*s) == events);
    const hash256 tip = s->tip_hash();
    const event next{events.size() + 1, 1, trade_canceled{trade_id{6}}};
    const auto r = s->append(write_set{{next}, {}});
    REQUIRE_FALSE(r.has_value());
    CHECK_FALSE(r.error().corruption);
    CHECK(s->last_sequence() == events.size());
    CHECK(s->tip_hash() == tip);
}

TEST_CASE("opening a missing store read-only is an error, not a new store") {
    temp_dir dir;
    const auto s = store::open(dir.str(), true);
    REQUIRE_FALSE(s.has_value());
    CHECK_FALSE(s.error().corruption);
    CHECK_FALSE(fs::exists(fs::path(dir.str()) / "CURRENT"));
}

TEST_CASE("a thousand events in many batches recover to the live digest") {
    temp_dir dir;
    const auto events = testing::busy_events(10, 34);
    REQUIRE(events.size() > 1000);
    std::string live_digest;
    {
        auto s = open_store(dir);
        live_digest = state_digest(append_live(*s, events, 64).st);
    }
    auto s = open_store(dir);
    const auto st = recover(*s);
    REQUIRE(st.has_value());
    CHECK(state_digest(*st) == live_digest);
    CHECK(st->trades_total == 340);
}

// --- the write-ahead log after a crash ---------------------------------------------------------

// A copy of the store's directory taken while it is open: what a machine that stopped at that
// moment leaves on disk (every append was synced; nothing was flushed).
void copy_crash_image(const temp_dir& from, const temp_dir& to) {
    fs::create_directories(to.path());
    fs::copy(from.str(), to.str(), fs::copy_options::recursive);
}

// The WAL of a crash image, and where its bytes end (the rest is zeros written ahead).
struct wal_file {
    std::string path;
    std::string bytes;
    std::size_t end = 0;

    explicit wal_file(const temp_dir& dir) {
        for (const auto& entry : fs::directory_iterator(dir.str())) {
            const auto name = entry.path().filename().string();
            if (name.size() == 10 && name.ends_with(".log")) path = entry.path().string();
        }
        REQUIRE_MESSAGE(!path.empty(), "no write-ahead log in ", dir.str());
        std::ifstream in(path, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        end = bytes.find_last_not_of('\0') + 1;
    }
    void write() const {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
};

// A store of busy events appended in batches of `batch`, and a crash image taken while it was open.
// By default over 1000 events in many blocks of the WAL; crashed_store(2, 2, 4) is a few batches,
// all in its first 32 KiB block.
struct crashed_store {
    std::size_t batch;
    temp_dir dir;
    temp_dir image;
    std::vector<event> events;

    explicit crashed_store(int customers = 10, int rounds = 34, std::size_t batch_size = 8)
        : batch(batch_size), events(testing::busy_events(customers, rounds)) {
        auto s = open_store(dir);
        (void)append_live(*s, events, batch);
        copy_crash_image(dir, image);
    }
};

TEST_CASE("a damaged batch inside the write-ahead log stops the open, naming what lies behind it") {
    const crashed_store c;
    const auto& image = c.image;
    const auto& events = c.events;
    wal_file wal(image);
    // Batches in the blocks after the damaged one, so that the log can be read on past it.
    REQUIRE(wal.end > 4 * 32768);
    wal.bytes[wal.end / 2] = static_cast<char>(wal.bytes[wal.end / 2] ^ 0x01);
    wal.write();
    const std::string behind = fmt::format("to {} lie behind the damage", events.size());
    for (const bool read_only : {true, false}) {
        CAPTURE(read_only);
        const auto s = store::open(image.str(), read_only);
        REQUIRE_FALSE(s.has_value());
        INFO(s.error().what);
        CHECK(s.error().corruption);
        CHECK(s.error().what.find("write-ahead log is damaged after record") != std::string::npos);
        CHECK(s.error().what.find(behind) != std::string::npos);
    }
}

// The records of a WAL's first block, up to the zeros: where each header starts and its payload's
// length (RocksDB's 7-byte headers; the length is bytes 4-5).
struct wal_record {
    std::size_t start = 0;
    std::size_t length = 0;
};
std::vector<wal_record> first_block_records(const wal_file& wal) {
    std::vector<wal_record> records;
    for (std::size_t pos = 0; pos + 7 <= std::min<std::size_t>(wal.end, 32768);) {
        const auto length = static_cast<unsigned char>(wal.bytes[pos + 4]) |
                            (std::size_t{static_cast<unsigned char>(wal.bytes[pos + 5])} << 8);
        if (length == 0) break;
        records.push_back({pos, length});
        pos += 7 + length;
    }
    return records;
}

TEST_CASE("the WAL scanner's checksums are RocksDB's, and an undamaged log has no damage") {
    const crashed_store c(2, 2, 4);
    const wal_file wal(c.image);
    const auto records = first_block_records(wal);
    REQUIRE(records.size() >= 3);
    for (const auto& [pos, length] : records) {
        CAPTURE(pos);
        std::uint32_t stored = 0;
        for (int i = 3; i >= 0; --i) {
            stored = (stored << 8) | static_cast<unsigned char>(wal.bytes[pos + i]);
        }
        CHECK(wal_record_checksum(static_cast<std::uint8_t>(wal.bytes[pos + 6]),
                                  std::string_view(wal.bytes).substr(pos + 7, length)) == stored);
    }
    CHECK_FALSE(find_wal_damage(c.image.str()).has_value());
}

TEST_CASE(
    "damage in the WAL's last block with synced batches after it in that block stops the open") {
    // RocksDB's skipping read drops the rest of a damaged block: without the store's own scan,
    // the batches after the damage here would be dropped as a torn tail and their trade ids
    // handed out again.
    const crashed_store c(2, 2, 4);
    wal_file wal(c.image);
    REQUIRE(wal.end < 32768);
    const auto records = first_block_records(wal);
    REQUIRE(records.size() >= 3);
    const std::size_t second = records[1].start;
    SUBCASE("a flipped byte in a batch's payload") {
        wal.bytes[second + 20] = static_cast<char>(wal.bytes[second + 20] ^ 0x10);
    }
    SUBCASE("a flipped byte in a batch's length") {
        wal.bytes[second + 4] = static_cast<char>(wal.bytes[second + 4] ^ 0x01);
    }
    wal.write();
    const auto damage = find_wal_damage(c.image.str());
    REQUIRE(damage.has_value());
    CHECK(damage->behind >= 1);
    CHECK(damage->behind < records.size());
    for (const bool read_only : {true, false}) {
        CAPTURE(read_only);
        const auto s = store::open(c.image.str(), read_only);
        REQUIRE_FALSE(s.has_value());
        INFO(s.error().what);
        CHECK(s.error().corruption);
        CHECK(s.error().what.find("write-ahead log is damaged after record") != std::string::npos);
        CHECK(s.error().what.find("synced batches lie behind the damage") != std::string::npos);
    }
}

TEST_CASE("a flipped byte in the WAL's last batch passes for a torn write, as it cannot be told") {
    const crashed_store c(2, 2, 4);
    wal_file wal(c.image);
    const auto records = first_block_records(wal);
    REQUIRE(records.size() >= 2);
    const std::size_t last = records.back().start;
    wal.bytes[last + 20] = static_cast<char>(wal.bytes[last + 20] ^ 0x10);
    wal.write();
    const auto damage = find_wal_damage(c.image.str());
    REQUIRE(damage.has_value());
    CHECK(damage->offset == last);
    CHECK(damage->behind == 0);
    auto s = open_store(c.image, /*read_only=*/true);
    REQUIRE(s->open_warnings().size() == 1);
    CHECK(s->open_warnings()[0].find("torn") != std::string::npos);
    CHECK(s->last_sequence() < c.events.size());
}

TEST_CASE("a torn batch at the end of the write-ahead log is dropped, with a warning") {
    const crashed_store c;
    const auto& image = c.image;
    const auto& events = c.events;
    const std::size_t last_batch = events.size() % c.batch == 0 ? c.batch : events.size() % c.batch;
    {
        // The end of the last batch never reached the disk: zeros, as written ahead.
        wal_file wal(image);
        std::fill(wal.bytes.begin() + static_cast<std::ptrdiff_t>(wal.end - 16),
                  wal.bytes.begin() + static_cast<std::ptrdiff_t>(wal.end), '\0');
        wal.write();
    }
    const std::vector<event> kept(events.begin(),
                                  events.end() - static_cast<std::ptrdiff_t>(last_batch));
    {
        auto s = open_store(image, /*read_only=*/true);
        CHECK(s->last_sequence() == kept.size());
        CHECK(read_all(*s) == kept);
        REQUIRE(s->open_warnings().size() == 1);
        CHECK(s->open_warnings()[0].find("torn") != std::string::npos);
    }
    auto s = open_store(image);
    CHECK(s->last_sequence() == kept.size());
    CHECK(read_all(*s) == kept);
    REQUIRE(s->open_warnings().size() == 1);
    // The journal goes on from the last whole batch.
    append_ok(
        *s, write_set{{events.end() - static_cast<std::ptrdiff_t>(last_batch), events.end()}, {}});
    CHECK(read_all(*s) == events);
}

TEST_CASE("a crash image with a whole write-ahead log opens with every batch and no warning") {
    const crashed_store c;
    auto s = open_store(c.image);
    CHECK(s->last_sequence() == c.events.size());
    CHECK(read_all(*s) == c.events);
    CHECK(s->open_warnings().empty());
}

}  // namespace
}  // namespace broker::journal

// --- snapshots --------------------------------------------------------------------------------

namespace broker::journal {
namespace {

constexpr int snapshots_cf = 7;

// Keys of the "snapshots" family (store.h).
std::string head_key(std::uint64_t seq) { return key(seq) + "h"; }
std::string piece_key(std::uint64_t seq, std::uint32_t piece) {
    std::string out = key(seq) + "c";
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(piece >> shift));
    return out;
}

// Stores the snapshot of the state after the first `n` events, as the node does.
void snapshot_at(store& s, const std::vector<event>& events, std::size_t n) {
    testing::live_state live;
    live.apply_all({events.begin(), events.begin() + static_cast<std::ptrdiff_t>(n)});
    auto hash = s.chain_hash_at(n);
    REQUIRE(hash.has_value());
    const auto put = s.put_snapshot(n, encode_snapshot(live.st, *hash));
    REQUIRE_MESSAGE(put.has_value(), put.error().what);
}

struct busy_store {
    temp_dir dir;
    std::vector<event> events = testing::busy_events(8, 12);
    std::string digest;

    busy_store() {
        auto s = open_store(dir);
        const auto live = append_live(*s, events, 17);
        digest = state_digest(live.st);
        snapshot_at(*s, events, 40);
        snapshot_at(*s, events, 200);
    }
};

}  // namespace

TEST_CASE("a snapshot file left by a store interrupted before ingesting it is removed at open") {
    busy_store b;
    const auto leftover = fs::path(b.dir.str()) / "snapshot-300.sst.ingest";
    const auto unrelated = fs::path(b.dir.str()) / "snapshot-notes.txt";
    std::ofstream(leftover) << "half a table file";
    std::ofstream(unrelated) << "not the store's";
    auto s = open_store(b.dir);
    CHECK_FALSE(fs::exists(leftover));
    CHECK(fs::exists(unrelated));
    // The ingested snapshots are untouched.
    const auto sequences = s->snapshot_sequences();
    REQUIRE(sequences.has_value());
    CHECK(*sequences == std::vector<std::uint64_t>{200, 40});
}

TEST_CASE("recover starts at the newest snapshot and applies only the events after it") {
    busy_store b;
    auto s = open_store(b.dir);
    recovery_report report;
    const auto st = recover(*s, &report);
    REQUIRE(st.has_value());
    CHECK(report.warnings.empty());
    CHECK(report.snapshot_sequence == 200);
    CHECK(report.events_applied == b.events.size() - 200);
    CHECK(state_digest(*st) == b.digest);
    CHECK(state_digest(*replay(*s)) == b.digest);
}

TEST_CASE("the store keeps the newest two snapshots") {
    busy_store b;
    auto s = open_store(b.dir);
    for (const std::size_t n : {250, 260, 270}) snapshot_at(*s, b.events, n);
    CHECK(*s->snapshot_sequences() == std::vector<std::uint64_t>{270, 260});
    CHECK_FALSE(s->read_snapshot(200).has_value());
}

TEST_CASE("a corrupt newest snapshot falls back to the older one, then to a full replay") {
    busy_store b;
    {
        raw_db raw(b.dir.str());
        std::string newest = raw.get(snapshots_cf, piece_key(200, 0));
        newest[newest.size() / 2] = static_cast<char>(newest[newest.size() / 2] ^ 0x04);
        raw.put(snapshots_cf, piece_key(200, 0), newest);
    }
    {
        auto s = open_store(b.dir);
        recovery_report report;
        const auto st = recover(*s, &report);
        REQUIRE(st.has_value());
        CHECK(report.snapshot_sequence == 40);
        REQUIRE(report.warnings.size() == 1);
        CHECK(report.warnings[0].find("snapshot at 200 refused: snapshot: checksum mismatch") !=
              std::string::npos);
        CHECK(state_digest(*st) == b.digest);
    }
    {
        raw_db raw(b.dir.str());
        raw.put(snapshots_cf, piece_key(40, 0), raw.get(snapshots_cf, piece_key(40, 0)).substr(0, 100));
    }
    auto s = open_store(b.dir);
    recovery_report report;
    const auto st = recover(*s, &report);
    REQUIRE(st.has_value());
    CHECK(report.snapshot_sequence == 0);
    REQUIRE(report.warnings.size() == 2);
    CHECK(report.warnings[1].find("snapshot at 40 refused: snapshot at 40: 1 pieces of 100 bytes") !=
          std::string::npos);
    CHECK(report.events_applied == b.events.size());
    CHECK(state_digest(*st) == b.digest);
}

TEST_CASE("a snapshot whose chain hash does not match the journal is refused") {
    busy_store b;
    {
        // A sound state under the right key, but sealed with the hash of another record: it
        // belongs to another journal (or was moved), so it must not be trusted.
        auto s = open_store(b.dir);
        testing::live_state live;
        live.apply_all({b.events.begin(), b.events.begin() + 200});
        const auto put = s->put_snapshot(200, encode_snapshot(live.st, *s->chain_hash_at(199)));
        REQUIRE(put.has_value());
    }
    auto s = open_store(b.dir);
    recovery_report report;
    const auto st = recover(*s, &report);
    REQUIRE(st.has_value());
    CHECK(report.snapshot_sequence == 40);
    REQUIRE(report.warnings.size() == 1);
    CHECK(report.warnings[0].find("chain hash") != std::string::npos);
    CHECK(state_digest(*st) == b.digest);
}

TEST_CASE("a snapshot stored under the wrong key or beyond the journal tip is refused") {
    busy_store b;
    {
        raw_db raw(b.dir.str());
        for (const std::uint64_t other : {std::uint64_t{210}, b.events.size() + 5}) {
            raw.put(snapshots_cf, piece_key(other, 0), raw.get(snapshots_cf, piece_key(200, 0)));
            raw.put(snapshots_cf, head_key(other), raw.get(snapshots_cf, head_key(200)));
        }
    }
    auto s = open_store(b.dir);
    recovery_report report;
    const auto st = recover(*s, &report);
    REQUIRE(st.has_value());
    CHECK(report.snapshot_sequence == 200);
    REQUIRE(report.warnings.size() == 2);
    CHECK(report.warnings[0].find("beyond the journal tip") != std::string::npos);
    CHECK(report.warnings[1].find("stored under 210 but names 200") != std::string::npos);
    CHECK(state_digest(*st) == b.digest);
}

TEST_CASE("a snapshot is stored in pieces of at most snapshot_piece_size and read back whole") {
    busy_store b;
    auto s = open_store(b.dir);
    // The store does not decode what it keeps: any bytes show the pieces.
    std::string bytes(2 * snapshot_piece_size + 12345, '\0');
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 + i / 251);
    REQUIRE(s->put_snapshot(250, bytes).has_value());
    // Given by a source in uneven pieces, they are kept as given.
    std::size_t at = 0;
    const std::size_t sizes[] = {1, snapshot_piece_size, 77};
    std::size_t next = 0;
    const auto put = s->put_snapshot(260, [&](std::string& piece) -> result<bool, store_error> {
        if (next == std::size(sizes)) return false;
        piece = bytes.substr(at, sizes[next]);
        at += sizes[next++];
        return true;
    });
    REQUIRE(put.has_value());
    CHECK(*s->snapshot_sequences() == std::vector<std::uint64_t>{260, 250});
    CHECK(*s->read_snapshot(250) == bytes);
    CHECK(*s->read_snapshot(260) == bytes.substr(0, 1 + snapshot_piece_size + 77));
    s.reset();
    raw_db raw(b.dir.str());
    CHECK(raw.get(snapshots_cf, piece_key(250, 0)).size() == snapshot_piece_size);
    CHECK(raw.get(snapshots_cf, piece_key(250, 2)).size() == 12345);
    CHECK(raw.get(snapshots_cf, piece_key(260, 0)).size() == 1);
    CHECK(raw.get(snapshots_cf, piece_key(260, 2)).size() == 77);
}

TEST_CASE("the table files of dropped snapshots are deleted, not only their keys") {
    // Deletions alone leave an ingested snapshot's file in the last level for good.
    busy_store b;  // snapshots at 40 and 200
    std::string bytes(snapshot_piece_size + 1000, '\0');
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 13 + i / 509);
    {
        auto s = open_store(b.dir);
        for (const std::uint64_t seq : {205, 210, 215, 220, 225, 230}) {
            REQUIRE(s->put_snapshot(seq, bytes).has_value());
        }
        CHECK(*s->snapshot_sequences() == std::vector<std::uint64_t>{230, 225});
        CHECK(*s->read_snapshot(230) == bytes);
        CHECK(*s->read_snapshot(225) == bytes);
    }
    raw_db raw(b.dir.str());
    // The two kept, not the eight stored.
    CHECK(raw.table_bytes("snapshots") > 2 * bytes.size());
    CHECK(raw.table_bytes("snapshots") < 3 * bytes.size());
    CHECK(raw.missing(snapshots_cf, head_key(220)));
    CHECK(raw.missing(snapshots_cf, piece_key(220, 0)));
}

TEST_CASE("a snapshot with a piece missing is refused, and recovery uses the one before") {
    busy_store b;
    {
        auto s = open_store(b.dir);
        std::string bytes(3 * snapshot_piece_size, 'x');
        REQUIRE(s->put_snapshot(250, bytes).has_value());
    }
    {
        raw_db raw(b.dir.str());
        raw.del(snapshots_cf, piece_key(250, 1));
    }
    {
        auto s = open_store(b.dir);
        const auto read = s->read_snapshot(250);
        REQUIRE_FALSE(read.has_value());
        CHECK(read.error().corruption);
        CHECK(read.error().what == "snapshot at 250: piece 1 missing");
    }
    {
        // The last piece gone: the count in the head gives it away.
        raw_db raw(b.dir.str());
        raw.put(snapshots_cf, piece_key(250, 1), std::string(snapshot_piece_size, 'x'));
        raw.del(snapshots_cf, piece_key(250, 2));
    }
    auto s = open_store(b.dir);
    const auto read = s->read_snapshot(250);
    REQUIRE_FALSE(read.has_value());
    CHECK(read.error().what.find("2 pieces of 2097152 bytes, its head says 3 of 3145728") !=
          std::string::npos);
    recovery_report report;
    const auto st = recover(*s, &report);
    REQUIRE(st.has_value());
    CHECK(report.snapshot_sequence == 200);
    CHECK(state_digest(*st) == b.digest);
}

TEST_CASE("a snapshot whose head is damaged is refused without trusting its counts") {
    busy_store b;
    {
        raw_db raw(b.dir.str());
        // Claims 2^32-1 pieces of 2^64-1 bytes: nothing may be sized by it.
        raw.put(snapshots_cf, head_key(200), std::string(12, '\xff'));
        raw.put(snapshots_cf, head_key(40), "short");
    }
    auto s = open_store(b.dir);
    const auto read = s->read_snapshot(200);
    REQUIRE_FALSE(read.has_value());
    CHECK(read.error().corruption);
    recovery_report report;
    const auto st = recover(*s, &report);
    REQUIRE(st.has_value());
    CHECK(report.snapshot_sequence == 0);
    REQUIRE(report.warnings.size() == 2);
    CHECK(report.warnings[0].find("its head says 4294967295 of 18446744073709551615") !=
          std::string::npos);
    CHECK(report.warnings[1].find("snapshot at 40: head of 5 bytes") != std::string::npos);
    CHECK(state_digest(*st) == b.digest);
}

TEST_CASE("a whole-value snapshot of an older store or a headless piece is not listed, and goes with the next store") {
    busy_store b;
    {
        raw_db raw(b.dir.str());
        raw.put(snapshots_cf, key(230), raw.get(snapshots_cf, piece_key(200, 0)));
        raw.put(snapshots_cf, piece_key(220, 0), "pieces without a head");
        raw.put(snapshots_cf, piece_key(220, 1), "go together");
    }
    auto s = open_store(b.dir);
    CHECK(*s->snapshot_sequences() == std::vector<std::uint64_t>{200, 40});
    snapshot_at(*s, b.events, 260);
    CHECK(*s->snapshot_sequences() == std::vector<std::uint64_t>{260, 200});
    s.reset();
    raw_db raw(b.dir.str());
    CHECK(raw.missing(snapshots_cf, key(230)));
    CHECK(raw.missing(snapshots_cf, piece_key(220, 0)));
    CHECK(raw.missing(snapshots_cf, piece_key(220, 1)));
    CHECK(raw.missing(snapshots_cf, head_key(40)));
    CHECK(raw.missing(snapshots_cf, piece_key(40, 0)));
    CHECK_FALSE(raw.missing(snapshots_cf, piece_key(200, 0)));
}

TEST_CASE("journal damage after a snapshot still fails recovery") {
    busy_store b;
    {
        raw_db raw(b.dir.str());
        raw.del_record(250);
    }
    auto s = open_store(b.dir);
    const auto st = recover(*s);
    REQUIRE_FALSE(st.has_value());
    CHECK(st.error().corruption);
    CHECK(st.error().what.find("record 250") != std::string::npos);
}

TEST_CASE("a read-only open of a store without a snapshots family lists no snapshots") {
    temp_dir dir;
    const auto events = testing::sample_events();
    {
        auto s = open_store(dir);
        (void)append_live(*s, events, 4);
    }
    {
        // Drop the family, as in a store written before snapshots existed.
        std::vector<rocksdb::ColumnFamilyDescriptor> families;
        for (const char* name : {"default", "journal", "trades", "meta", "closed_by_customer",
                                 "client_orders", "updates", "snapshots"}) {
            families.emplace_back(name, rocksdb::ColumnFamilyOptions{});
        }
        std::vector<rocksdb::ColumnFamilyHandle*> handles;
        rocksdb::DB* db = nullptr;
        REQUIRE(rocksdb::DB::Open(rocksdb::DBOptions{}, dir.str(), families, &handles, &db).ok());
        REQUIRE(db->DropColumnFamily(handles.back()).ok());
        for (auto* h : handles) REQUIRE(db->DestroyColumnFamilyHandle(h).ok());
        delete db;
    }
    auto s = open_store(dir, /*read_only=*/true);
    CHECK(s->snapshot_sequences()->empty());
    const auto st = recover(*s);
    REQUIRE(st.has_value());
    CHECK(st->last_sequence == events.size());
}

}  // namespace broker::journal
