// snapshot_corrupter DATA_DIR: flips one byte in the middle of the newest stored snapshot (in its
// middle piece), as a
// broken disk would, for tests/integration/test_snapshots.py. Run only on a stopped brokerd's
// data dir. Exit status 0 when a snapshot was damaged.
#include <rocksdb/db.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: snapshot_corrupter DATA_DIR\n");
        return 2;
    }
    std::vector<std::string> names;
    if (!rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions{}, argv[1], &names).ok()) return 1;
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const auto& n : names) families.emplace_back(n, rocksdb::ColumnFamilyOptions{});
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    if (!rocksdb::DB::Open(rocksdb::DBOptions{}, argv[1], families, &handles, &raw).ok()) return 1;
    std::unique_ptr<rocksdb::DB> db(raw);
    int rc = 1;
    for (std::size_t i = 0; i < names.size(); ++i) {
        if (names[i] != "snapshots") continue;
        // The newest snapshot's head sorts last (sequence 'h'); its pieces are sequence 'c' n.
        std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions{}, handles[i]));
        it->SeekToLast();
        if (!it->Valid() || it->key().size() != 9 || it->key()[8] != 'h') break;
        const std::string prefix = it->key().ToString().substr(0, 8) + "c";
        std::vector<std::string> pieces;
        for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
            pieces.push_back(it->key().ToString());
        }
        if (pieces.empty()) break;
        const std::string key = pieces[pieces.size() / 2];
        std::string value;
        if (!db->Get(rocksdb::ReadOptions{}, handles[i], key, &value).ok() || value.empty()) break;
        it.reset();
        value[value.size() / 2] = static_cast<char>(value[value.size() / 2] ^ 0x20);
        if (db->Put(rocksdb::WriteOptions{}, handles[i], key, value).ok()) rc = 0;
    }
    for (auto* h : handles) (void)db->DestroyColumnFamilyHandle(h);
    return rc;
}
