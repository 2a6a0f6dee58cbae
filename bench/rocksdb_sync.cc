// broker-rocksdb-sync: the raw rate of synced RocksDB WriteBatches on this machine, the storage
// ceiling brokerd's group commit works against; and --inspect, which measures how many bytes a
// brokerd journal holds per column family, so that the raw test writes records of the same size.
//
//   broker-rocksdb-sync --dir D --record-bytes B --records-per-batch K --threads T --duration-s S
//     Each of T threads writes WriteBatches of K records of B bytes (keys: big-endian u64
//     sequence numbers, values: incompressible bytes) with WriteOptions::sync = true, until S
//     seconds or --max-batches have passed. RocksDB itself groups concurrent writers into one WAL
//     write and fsync, so T > 1 shows what its own group commit reaches. Prints JSON: batches/s,
//     records/s, MB/s and per-Write latency percentiles.
//
//   broker-rocksdb-sync --inspect DIR
//     Opens a (stopped) brokerd data directory read-only and prints, per column family, the
//     number of keys and the bytes of keys plus values.
//
// Single-purpose and self-contained: it does not link brokerd's journal code, so it measures
// RocksDB and the disk, nothing of ours.
#include <fmt/format.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/histogram.h"
#include "tools/cli_checks.h"

namespace {

using clock_type = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& reason) {
    fmt::print(stderr, "broker-rocksdb-sync: {}\n", reason);
    std::exit(2);
}

std::string be_key(std::uint64_t v) {
    std::string k(8, '\0');
    for (int i = 7; i >= 0; --i) {
        k[static_cast<std::size_t>(i)] = static_cast<char>(v & 0xff);
        v >>= 8;
    }
    return k;
}

int inspect(const std::string& dir) {
    std::vector<std::string> names;
    auto s = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions{}, dir, &names);
    if (!s.ok()) die(fmt::format("listing column families of {}: {}", dir, s.ToString()));
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const auto& n : names) families.emplace_back(n, rocksdb::ColumnFamilyOptions{});
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    s = rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions{}, dir, families, &handles, &raw);
    if (!s.ok()) die(fmt::format("opening {}: {}", dir, s.ToString()));
    std::unique_ptr<rocksdb::DB> db(raw);
    std::string out = "{\"column_families\":{";
    std::uint64_t all_keys = 0;
    std::uint64_t all_bytes = 0;
    for (std::size_t i = 0; i < handles.size(); ++i) {
        std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions{}, handles[i]));
        std::uint64_t keys = 0;
        std::uint64_t bytes = 0;
        for (it->SeekToFirst(); it->Valid(); it->Next()) {
            ++keys;
            bytes += it->key().size() + it->value().size();
        }
        if (!it->status().ok())
            die(fmt::format("reading {}: {}", names[i], it->status().ToString()));
        all_keys += keys;
        all_bytes += bytes;
        if (i > 0) out += ',';
        out += fmt::format(R"("{}":{{"keys":{},"bytes":{}}})", names[i], keys, bytes);
    }
    out += fmt::format(R"(}},"keys":{},"bytes":{}}})", all_keys, all_bytes);
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    fmt::print("{}\n", out);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::string dir;
    std::string inspect_dir;
    std::size_t record_bytes = 512;
    std::size_t records_per_batch = 1;
    int threads = 1;
    double duration_s = 10;
    std::uint64_t max_batches = 10'000'000;
    std::string out;
    std::string label;
    CLI::App app{"broker-rocksdb-sync: synced RocksDB WriteBatch rate (sync=true), or --inspect"};
    app.add_option("--dir", dir, "a scratch directory for the test database (created)");
    app.add_option("--inspect", inspect_dir, "print per-column-family sizes of a brokerd data dir");
    app.add_option("--record-bytes", record_bytes, "bytes per record (value)")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
        ->capture_default_str();
    app.add_option("--records-per-batch", records_per_batch, "records per synced WriteBatch")
        ->check(CLI::Range(std::size_t{1}, std::size_t{100'000}))
        ->capture_default_str();
    app.add_option("--threads", threads, "concurrent writers")
        ->check(CLI::Range(1, 1024))
        ->capture_default_str();
    app.add_option("--duration-s", duration_s, "seconds to write")
        ->check(broker::cli::finite_range(0.1, 3600.0))
        ->capture_default_str();
    app.add_option("--max-batches", max_batches, "stop after this many batches")
        ->capture_default_str();
    app.add_option("--out", out, "write the JSON here (default: stdout)");
    app.add_option("--label", label, "a name for this run in the JSON");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    if (!inspect_dir.empty()) return inspect(inspect_dir);
    if (dir.empty()) die("--dir or --inspect is required");

    rocksdb::Options options;
    options.create_if_missing = true;
    options.manual_wal_flush = false;
    options.write_buffer_size = 16 << 20;  // as brokerd's journal column families
    options.max_write_buffer_number = 3;
    rocksdb::DB* raw = nullptr;
    const auto opened = rocksdb::DB::Open(options, dir, &raw);
    if (!opened.ok()) die(fmt::format("opening {}: {}", dir, opened.ToString()));
    std::unique_ptr<rocksdb::DB> db(raw);

    std::atomic<std::uint64_t> next_key{1};
    std::atomic<std::uint64_t> batches{0};
    std::atomic<bool> failed{false};
    std::vector<broker::bench::histogram> latencies(static_cast<std::size_t>(threads));
    const auto start = clock_type::now();
    const auto deadline = start + std::chrono::duration_cast<clock_type::duration>(
                                      std::chrono::duration<double>(duration_s));
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            std::mt19937_64 rng(static_cast<std::uint64_t>(t) + 1);
            std::string value(record_bytes, '\0');
            rocksdb::WriteOptions wo;
            wo.sync = true;
            auto& lat = latencies[static_cast<std::size_t>(t)];
            while (clock_type::now() < deadline && !failed.load()) {
                if (batches.fetch_add(1) >= max_batches) break;
                rocksdb::WriteBatch batch;
                for (std::size_t r = 0; r < records_per_batch; ++r) {
                    // Fresh random bytes per record, so compression cannot shrink what is synced.
                    for (std::size_t i = 0; i + 8 <= value.size(); i += 8) {
                        const std::uint64_t x = rng();
                        std::memcpy(value.data() + i, &x, 8);
                    }
                    (void)batch.Put(be_key(next_key.fetch_add(1)), value);
                }
                const auto t0 = clock_type::now();
                if (!db->Write(wo, &batch).ok()) {
                    failed = true;
                    break;
                }
                lat.record(static_cast<std::uint64_t>(
                    std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - t0)
                        .count()));
            }
        });
    }
    for (auto& t : pool) t.join();
    if (failed) die("a synced write failed");
    const double secs = std::chrono::duration<double>(clock_type::now() - start).count();
    broker::bench::histogram all;
    for (const auto& h : latencies) all.merge(h);
    const double done = static_cast<double>(all.count());
    auto us = [&](double q) { return static_cast<double>(all.quantile(q)) / 1000.0; };
    const std::string json = fmt::format(
        R"({{"label":"{}","record_bytes":{},"records_per_batch":{},"threads":{},"seconds":{:.3f},)"
        R"("batches":{},"batches_per_s":{:.1f},"records_per_s":{:.1f},"mb_per_s":{:.2f},)"
        R"("write_latency_us":{{"p50":{:.1f},"p99":{:.1f},"p99_9":{:.1f},"max":{:.1f}}}}})"
        "\n",
        label, record_bytes, records_per_batch, threads, secs, all.count(), done / secs,
        done * static_cast<double>(records_per_batch) / secs,
        done * static_cast<double>(records_per_batch * record_bytes) / secs / 1e6, us(0.5),
        us(0.99), us(0.999), static_cast<double>(all.max()) / 1000.0);
    if (out.empty()) {
        fmt::print("{}", json);
    } else {
        std::ofstream f(out);
        f << json;
        if (!f) die(fmt::format("cannot write {}", out));
    }
    return 0;
}
