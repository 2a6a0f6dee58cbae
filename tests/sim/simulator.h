// A deterministic simulator of the whole broker: from one seed, it drives the REAL engine
// (decide/apply) and the REAL journal (RocksDB in a temporary directory) through sim_node, which
// mirrors the live node's pipeline, with simulated customers, a simulated exchange with faults,
// and crashes at arbitrary points. After every step it checks the engine's invariants and an
// independent model of what must be true (STYLE.md section 8, "Replay as proof").
//
// One run = setup (funded customers) + `steps` random steps + a quiescence phase without faults,
// which must bring every trade to a terminal state. Every random choice of step i comes from a
// generator seeded from the run's seed and i alone, so a step can be left out (shrinking) without
// changing what the other steps draw. The history of a run (one line per thing that happened) is
// what a failing seed prints; re-running the seed with the same options replays it exactly.
//
// Checks (a failure names its kind; see simulator.cc for each):
//   invariants   check_invariants(state) after every step and every restart
//   durability   live state == journal after every step; acknowledged placements and cancels
//                exist in the recovered state or the trade store, after every restart too
//   digest       after a restart: recovered digest == a second fresh replay's digest == the live
//                digest at the last durable commit (== the pre-crash digest unless a batch was
//                lost before its append)
//   ledger       the journal, read back independently: each fill settled once, only fills the
//                exchange made, at its price; per customer cash/shares == opening +/- settled
//                fills; per symbol and for cash, customers + exchange net == opening totals
//   order        the exchange got each customer's orders in placement order, one at a time
//   idempotency  a client_order_id names one trade, across retries and restarts
//   terminal     after quiescence: no open trade, nothing working or unanswered at the exchange
//   abort        the run died (an engine assertion); seen by run_isolated
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tests/sim/sim_node.h"

namespace broker::sim {

struct sim_options {
    std::uint64_t seed = 1;
    std::size_t steps = 200;
    std::set<std::size_t> skip;  // steps left out (shrinking)
    sabotage broken = sabotage::none;
    // Where the run's RocksDB directory goes; empty: /dev/shm when writable (fsync is free on
    // tmpfs, and a crash here is a simulated one), else the system temp directory.
    std::string tmp_root;
};

struct sim_failure {
    std::string kind;  // invariants, durability, digest, ledger, order, idempotency, ...
    std::string message;
    std::int64_t step = -1;  // -1: setup; >= steps: the quiescence phase
};

struct sim_result {
    std::uint64_t seed = 0;
    std::size_t steps = 0;
    std::set<std::size_t> skip;
    std::optional<sim_failure> failure;
    std::map<std::string, std::uint64_t> counters;
    std::vector<std::string> history;  // "step N: what happened"
};

// The directory under which a run keeps its RocksDB files, in "broker-sim-<pid>-<seed>-<n>".
[[nodiscard]] std::string tmp_root(const sim_options& o);

// Runs one simulation in this process. `on_line`, when set, receives each history line as it
// is written (run_isolated streams them out of a child that may die).
[[nodiscard]] sim_result run_simulation(
    const sim_options& o, const std::function<void(const std::string&)>& on_line = {});

// Runs one simulation in a forked child, so that an engine assertion (abort) is reported as a
// failure of kind "abort" with the history up to that point, instead of ending the test run.
// BROKER_SIM_FORK=0 runs in-process instead (for a debugger).
[[nodiscard]] sim_result run_isolated(const sim_options& o);

// Runs many seeds, `jobs` children at a time; results in seed order.
[[nodiscard]] std::vector<sim_result> run_seeds(const std::vector<std::uint64_t>& seeds,
                                                std::size_t steps, std::size_t jobs,
                                                sabotage broken = sabotage::none);

// Looks for a shorter history that fails the same way: first the prefix up to the failing step,
// then delta debugging over the steps (removing chunks, halving the chunk size), keeping the
// first reduced run that still fails with the same kind. At most `max_runs` re-runs.
[[nodiscard]] sim_result shrink(const sim_options& o, const sim_result& failed,
                                std::size_t max_runs = 120);

// The report for a failure: seed, the options to replay it, the failure and the history.
[[nodiscard]] std::string describe(const sim_result& r, sabotage broken = sabotage::none);

// Totals over runs, and their printout.
void add_counters(std::map<std::string, std::uint64_t>& into, const sim_result& r);
[[nodiscard]] std::string format_counters(const std::map<std::string, std::uint64_t>& c);
// The headline numbers of many runs: seeds, steps, crashes and restarts, faults, duplicate
// reports, acknowledged trades verified and lost (`lost`: runs that failed a durability check).
[[nodiscard]] std::string format_summary(const std::map<std::string, std::uint64_t>& totals,
                                         std::size_t seeds, std::size_t failed, std::size_t lost);

[[nodiscard]] std::string_view to_string(sabotage s);
[[nodiscard]] std::optional<sabotage> parse_sabotage(std::string_view text);

}  // namespace broker::sim
