// broker-replay: the auditor's tool. Reads a journal, verifies every record's checksum and the
// hash chain, rebuilds state through the engine's `apply` (the code the live node runs), checks
// every invariant, and prints the state digest. Exit status 0 only when all of that holds.
#include <cstdlib>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "journal/store.h"

int main(int argc, char** argv) {
    std::string data_dir;
    std::uint64_t until = 0;
    CLI::App app{"broker-replay: verify a brokerd journal and print its state digest"};
    app.add_option("--data-dir", data_dir, "the journal directory of a stopped brokerd")
        ->required()->check(CLI::ExistingDirectory);
    app.add_option("--until", until, "stop after this sequence (default: the end)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    auto opened = broker::journal::store::open(data_dir, /*read_only=*/true);
    if (!opened) {
        fmt::print(stderr, "broker-replay: cannot open {}: {}\n", data_dir, opened.error().what);
        return 1;
    }
    if (until > (*opened)->last_sequence()) {
        fmt::print(stderr, "broker-replay: --until {} is past the end of the journal ({})\n", until,
                   (*opened)->last_sequence());
        return 2;
    }
    auto state = broker::journal::recover(**opened, until);
    if (!state) {
        fmt::print(stderr, "broker-replay: {}\n", state.error().what);
        return 1;
    }
    fmt::print("{{\"sequence\":{},\"digest\":\"{}\",\"customers\":{},\"open_trades\":{}}}\n",
               state->last_sequence, broker::journal::state_digest(*state), state->customers.size(),
               state->open_trades.size());
    return 0;
}
