// broker-replay: the auditor's tool. Reads a journal, verifies every record's checksum and the
// hash chain, rebuilds state through the engine's `apply` (the code the live node runs), checks
// every invariant, and prints the state digest. Exit status 0 only when all of that holds.
//
// It never starts from a snapshot: the proof is the whole chain from record 1. With
// --check-snapshots it also audits the snapshots brokerd stored (which brokerd trusts at start-up):
// each must be byte-equal to the snapshot of the state replayed to its sequence.
#include <charconv>
#include <cstdlib>
#include <limits>
#include <map>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "journal/snapshot.h"
#include "journal/store.h"

namespace {

// Compares each stored snapshot with the state replayed to its sequence; returns whether all
// matched. `replayed` maps sequences to the snapshot encodings of the replayed state.
bool report_snapshots(const broker::journal::store& s,
                      const std::map<std::uint64_t, std::string>& replayed) {
    bool all_ok = true;
    for (const auto& [seq, expected] : replayed) {
        auto stored = s.read_snapshot(seq);
        if (!stored) {
            fmt::print(stderr, "broker-replay: snapshot at {}: {}\n", seq, stored.error().what);
            all_ok = false;
        } else if (*stored != expected) {
            auto decoded = broker::journal::decode_snapshot(*stored);
            fmt::print(stderr, "broker-replay: snapshot at {} differs from the replayed state ({})\n",
                       seq, decoded ? "it decodes, but to another state" : decoded.error().what);
            all_ok = false;
        } else {
            fmt::print(stderr, "broker-replay: snapshot at {} matches the replayed state\n", seq);
        }
    }
    return all_ok;
}

}  // namespace

int main(int argc, char** argv) {
    std::string data_dir;
    std::uint64_t until = 0;
    bool check_snapshots = false;
    CLI::App app{"broker-replay: verify a brokerd journal and print its state digest"};
    app.add_option("--data-dir", data_dir, "the journal directory of a stopped brokerd")
        ->required()->check(CLI::ExistingDirectory);
    std::string until_text;
    app.add_option("--until", until_text, "stop after this sequence, 1 or more (default: the end)");
    app.add_flag("--check-snapshots", check_snapshots,
                 "also verify that every stored snapshot equals the state replayed to its sequence");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // --help is an "error" with exit code 0 in CLI11; any other is one line and exit 2.
        if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
        fmt::print(stderr, "broker-replay: {}\n", e.what());
        return 2;
    }
    // Digits only, read whole: CLI11 would read "-1" as the largest sequence and cap a number
    // past 64 bits to it, and 0 is what "the end" is stored as.
    if (!until_text.empty()) {
        const char* end = until_text.data() + until_text.size();
        const auto [at, ec] = std::from_chars(until_text.data(), end, until);
        if (ec != std::errc{} || at != end || until == 0) {
            fmt::print(stderr, "broker-replay: --until '{}' is not a sequence (1 to {})\n",
                       until_text, std::numeric_limits<std::uint64_t>::max());
            return 2;
        }
    }
    auto opened = broker::journal::store::open(data_dir, /*read_only=*/true);
    if (!opened) {
        fmt::print(stderr, "broker-replay: cannot open {}: {}\n", data_dir, opened.error().what);
        return 1;
    }
    const auto& store = **opened;
    for (const auto& w : store.open_warnings()) {
        fmt::print(stderr, "broker-replay: warning: {}\n", w);
    }
    if (until > store.last_sequence()) {
        fmt::print(stderr, "broker-replay: --until {} is past the end of the journal ({})\n", until,
                   store.last_sequence());
        return 2;
    }
    std::map<std::uint64_t, std::string> replayed;  // snapshot sequence -> expected bytes
    std::vector<std::uint64_t> pending;               // stored snapshot sequences, newest first
    if (check_snapshots) {
        auto stored = store.snapshot_sequences();
        if (!stored) {
            fmt::print(stderr, "broker-replay: listing snapshots: {}\n", stored.error().what);
            return 1;
        }
        pending = std::move(*stored);
        if (pending.empty()) fmt::print(stderr, "broker-replay: no snapshots stored\n");
    }
    const std::uint64_t last = until == 0 ? store.last_sequence() : until;
    bool chain_ok = true;
    auto state = broker::journal::replay(store, until, [&](const broker::state& st) {
        if (pending.empty() || pending.back() != st.last_sequence) return;
        pending.pop_back();
        // The replay verifies the chain up to here before anything past it is applied; a read
        // error surfaces as a mismatch below and again when the replay fails.
        auto hash = store.chain_hash_at(st.last_sequence);
        if (!hash) {
            chain_ok = false;
            return;
        }
        replayed[st.last_sequence] = broker::journal::encode_snapshot(st, *hash);
    });
    if (!state) {
        fmt::print(stderr, "broker-replay: {}\n", state.error().what);
        return 1;
    }
    bool snapshots_ok = chain_ok;
    if (check_snapshots) {
        snapshots_ok = report_snapshots(store, replayed) && snapshots_ok;
        for (const auto seq : pending) {
            if (seq <= last) continue;
            fmt::print(stderr, "broker-replay: snapshot at {} is beyond {}: not checked\n", seq, last);
            if (until == 0) snapshots_ok = false;  // beyond the journal tip: never legitimate
        }
    }
    fmt::print("{{\"sequence\":{},\"digest\":\"{}\",\"customers\":{},\"open_trades\":{}}}\n",
               state->last_sequence, broker::journal::state_digest(*state), state->customers.size(),
               state->open_trades.size());
    return snapshots_ok ? 0 : 1;
}
