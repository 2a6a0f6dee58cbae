// The simulated node: engine_runner's pipeline (node/engine_runner.cc), deterministic, on one
// thread.
//
// engine_runner takes queued requests in batches, runs the real `decide` and `apply` on each,
// collects the events, the trade changes and the trades that closed into a journal::write_set,
// commits them in one synced WriteBatch (group commit), and only then sends orders to the exchange
// and answers the clients. engine_runner commits each round's batch alone; the simulator may also
// merge several batches into one commit, a superset of what the node does. sim_node does the same steps, but lets the simulator
// call them one at a time so that it can stop ("crash") between any two:
//
//   decide_batch  -- the engine thread decides a round: state moves ahead of the disk
//   commit        -- the same thread: store.append of the (merged) write_set (durable)
//   (dispatch)    -- the simulator delivers the replies and orders of the committed batches
//
// The engine code is used as is. What is copied from engine_runner::run_command is only the glue
// that turns a decision into a write_set, a reply and orders; it must stay in step with
// run_command (a change there without one here would make the simulation test another pipeline).
//
// Single-threaded: the simulator's thread owns the node, its state and its queue.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/commands.h"
#include "engine/state.h"
#include "journal/store.h"

namespace broker::sim {

// An order as the node sends it. `customer_id` is not part of the exchange protocol; the
// simulated exchange keeps it only to check, per customer, that orders arrive in placement order
// and one at a time (DESIGN invariant 2).
struct sim_order {
    trade_id id;
    std::string customer_id;
    symbol sym;
    side order_side = side::buy;
    quantity qty;
    money limit_price;  // 0: no limit (SELL)
};

[[nodiscard]] sim_order order_for(const trade& t);

// The answer to one command, as engine_runner's api::outcome carries it (the fields the
// simulated clients and the watchdog read).
struct reply {
    errc code = errc::ok;
    bool repeated = false;
    bool trade_closed = false;          // a repeat naming a trade that is no longer open
    std::optional<trade> trade_view;    // the trade as the command's first change left it
    std::optional<trade_id> trade_ref;  // the trade the command created or addressed
    std::vector<trade> trades;          // find_stuck_trades: the trades found
    std::uint64_t sequence = 0;
};

using completion = std::function<void(const reply&)>;

// Test-only ways to break the pipeline, to prove that the simulator's checks fire.
enum class sabotage : std::uint8_t {
    none,
    ack_before_append,  // dispatch replies and orders before the batch is durable
    double_fill,        // apply a repeated fill again, bypassing decide's duplicate check
    wrong_fill_price,   // settle fills one tick above what the exchange reported
};

struct node_config {
    std::int64_t collar_bps = limits::collar_bps_default;
    sabotage broken = sabotage::none;
    // As runner_config::snapshot_every_events; small, so that crashes land between snapshots.
    std::uint64_t snapshot_every_events = 64;
};

// One engine batch: what it writes, and what may leave the process once that is durable.
struct pending_batch {
    journal::write_set writes;
    std::vector<std::pair<completion, reply>> replies;
    std::vector<sim_order> orders;
    std::string snapshot;  // unsealed, as engine_runner's batch::snapshot
};

class sim_node {
  public:
    using quote_fn = std::function<std::optional<money>(symbol)>;

    sim_node(journal::store& store, state recovered, node_config config, quote_fn quote);

    // Queues a command; `done` runs when the simulator dispatches the committed batch (never, if
    // the node "crashes" first).
    void submit(command c, completion done);
    [[nodiscard]] std::size_t queued() const { return inbound_.size(); }

    // The engine thread's work on up to `max` queued requests at time `now`.
    [[nodiscard]] pending_batch decide_batch(timestamp_ms now, std::size_t max);
    // The group commit of one or more batches.
    [[nodiscard]] static journal::write_set merge(const std::vector<pending_batch>& batches);
    [[nodiscard]] result<ok_t, journal::store_error> commit(const journal::write_set& all);
    // After a commit: seals and stores the batches' snapshots.
    [[nodiscard]] result<ok_t, journal::store_error> store_snapshots(
        std::vector<pending_batch>& batches);

    [[nodiscard]] const state& live() const { return state_; }
    [[nodiscard]] const node_config& config() const { return config_; }

  private:
    struct request {
        command what;
        completion done;
    };

    reply run_command(const command& in, timestamp_ms t, pending_batch& b);

    journal::store& store_;
    state state_;
    std::uint64_t last_snapshot_sequence_ = 0;
    node_config config_;
    quote_fn quote_;
    std::deque<request> inbound_;
};

}  // namespace broker::sim
