// WAL files that are zero-filled ahead of their writes, so that a synced append does not change
// the file's size.
//
// Every group commit ends in fdatasync of the write-ahead log. When the append grew the file, the
// file system must also write the inode (its size changed) before fdatasync returns: on ext4 that
// is a second, dependent disk write per commit. Measured on the machine of docs/performance.md, a
// 3 KB append plus fdatasync took 170-175 us of wall time and 68-71 us of system CPU at the end of
// a growing file, and 112-119 us and 47-50 us into a file whose blocks were already written.
//
// So each new WAL file (RocksDB names them NNNNNN.log) is extended with written zeros in steps of
// `wal_zero_step` bytes, a step before the appends reach it; the write-back of the zeros is
// started at once (sync_file_range) and runs while the commits go on. One commit per step then
// writes the inode, instead of every commit. RocksDB's own WAL recycling would give the same, but
// RocksDB 7.8 disables it under point-in-time recovery.
//
// Recovery reads a crashed WAL's zero tail as RocksDB's reserved zero-type records ("reserved for
// preallocated files" in its log format), which the reader skips without reporting corruption.
// A crash leaves a consistent image; a plain file copy of a running node's directory does not
// (it could read a block's zeros before the appends reach them and the next block after): copy
// a stopped node's files, or an atomic file-system snapshot. A WAL closed normally is cut back
// to what was appended. When the zeros cannot be written (a
// full disk), the file goes on without them: its appends then fail or succeed on their own.
//
// Thread-safety: as RocksDB's own FileSystem and FSWritableFile.
#pragma once

#include <cstddef>
#include <memory>

#include <rocksdb/env.h>

namespace broker::journal {

inline constexpr std::size_t wal_zero_step = 256 * 1024;

// The process-wide Env whose file system zero-fills WAL files ahead (on RocksDB's default Env
// and its thread pools).
[[nodiscard]] rocksdb::Env* wal_zero_ahead_env();

}  // namespace broker::journal
