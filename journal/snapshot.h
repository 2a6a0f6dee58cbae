// Snapshot codec: the complete engine state at one journal sequence, so that recovery can start
// there instead of at record 1.
//
// Grammar (all integers big-endian; `bytes` is a u16 length followed by that many bytes):
//
//   snapshot      := magic:u8[4] (= "BKSN") version:u8 (= 1) body_len:u64 body
//                    checksum:u8[32]          -- SHA-256 of magic, version, body_len and body
//   body          := sequence:u64             -- state.last_sequence: the last event applied
//                    chain_hash:u8[32]        -- chain hash of journal record `sequence`
//                                                (zeros when sequence = 0)
//                    next_trade_id:u64 trades_total:u64
//                    customer_count:u64 customer{customer_count}   -- ascending by
//                                             (fnv1a64(id), id): FNV-1a 64-bit of the id bytes
//                    trade_count:u64 open_trade{trade_count}       -- ascending by trade id
//   customer      := id:bytes cash:i64 reserved_cash:i64 opening_cash:i64 update_sequence:u64
//                    position_count:u32 position{position_count}   -- as in memory (by symbol)
//                    opening_count:u32 opening{opening_count}
//                    fifo_count:u32 trade_id:u64{fifo_count}       -- oldest first
//                    order_count:u32 client_order{order_count}     -- in memory order
//   position      := symbol:u64 shares:i64 reserved:i64
//   opening       := symbol:u64 qty:i64
//   client_order  := client_order_id:bytes trade_id:u64 closed_at:i64
//   open_trade    := len:u32 trade_record     -- codec.h encode_trade (its own version and crc32)
//
// Unlike write_canonical (the digest), a snapshot keeps everything `apply` reads later: the
// client-order memory window in its order, trades' fill fields, the per-customer update sequence.
// Equal states give equal bytes, so an auditor can compare a stored snapshot with a replay.
//
// A snapshot is derived data: losing one only makes the next start slower. Decoding never
// asserts: a snapshot is untrusted disk input, and bad bytes give a `corruption`. A decoded state
// has passed check_invariants. Pure functions; safe on any thread.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "engine/result.h"
#include "engine/state.h"
#include "journal/codec.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace broker::journal {

inline constexpr std::uint8_t snapshot_version = 1;

struct decoded_snapshot {
    state st;
    hash256 chain_hash{};  // of journal record st.last_sequence
};

// The snapshot of `s`, taken when journal record s.last_sequence hashed to `chain_hash`.
[[nodiscard]] std::string encode_snapshot(const state& s, const hash256& chain_hash);

// The same in two steps, for the node: a forked copy of the engine encodes the state (chain hash
// zero, no checksum), and the node's snapshot thread seals it with the chain hash of the record
// at its sequence, read back from the store.
[[nodiscard]] std::string encode_unsealed_snapshot(const state& s);
void seal_snapshot(std::string& unsealed, const hash256& chain_hash);

// Sealing piece by piece, for a snapshot that is never whole in memory (the node reads what the
// forked encoder wrote a piece at a time): `add` every piece of the unsealed snapshot in order
// (the pieces are cut anywhere; the chain hash field is filled in within whichever piece holds
// it), then `finish` gives the checksum, the snapshot_checksum_size bytes that follow them.
inline constexpr std::size_t snapshot_checksum_size = 32;
class snapshot_sealer {
public:
    explicit snapshot_sealer(const hash256& chain_hash);
    ~snapshot_sealer();
    snapshot_sealer(const snapshot_sealer&) = delete;
    snapshot_sealer& operator=(const snapshot_sealer&) = delete;

    void add(std::span<char> piece);
    [[nodiscard]] std::array<char, snapshot_checksum_size> finish();

private:
    hash256 chain_hash_;
    std::uint64_t added_ = 0;
    evp_md_ctx_st* digest_;
};

// The sequence an unsealed or sealed snapshot names, without verifying anything else.
[[nodiscard]] std::uint64_t snapshot_sequence(std::string_view bytes);

// Decodes and verifies a snapshot (checksum, field constraints, then check_invariants).
[[nodiscard]] result<decoded_snapshot, corruption> decode_snapshot(std::string_view bytes);

}  // namespace broker::journal
