#include "tests/sim/sim_node.h"

#include "journal/snapshot.h"

#include <utility>

#include "engine/assert.h"
#include "engine/decide.h"

namespace broker::sim {

sim_order order_for(const trade& t) {
    return sim_order{t.id, t.customer_id, t.sym, t.trade_side, t.qty, t.limit_price};
}

sim_node::sim_node(journal::store& store, state recovered, node_config config, quote_fn quote)
    : store_(store), state_(std::move(recovered)), config_(config), quote_(std::move(quote)) {
    // As engine_runner's constructor: the node starts exactly where the journal ends.
    BROKER_ASSERT(state_.last_sequence == store_.last_sequence());
    if (auto stored = store_.snapshot_sequences(); stored && !stored->empty()) {
        last_snapshot_sequence_ = std::min(stored->front(), state_.last_sequence);
    }
}

void sim_node::submit(command c, completion done) {
    inbound_.push_back(request{std::move(c), std::move(done)});
}

pending_batch sim_node::decide_batch(timestamp_ms now, std::size_t max) {
    pending_batch b;
    for (std::size_t i = 0; i < max && !inbound_.empty(); ++i) {
        request r = std::move(inbound_.front());
        inbound_.pop_front();
        reply out = run_command(r.what, now, b);
        b.replies.emplace_back(std::move(r.done), std::move(out));
    }
    // As engine_runner::engine_loop: the snapshot is encoded with the batch and stored after its commit.
    if (config_.snapshot_every_events > 0 &&
        state_.last_sequence - last_snapshot_sequence_ >= config_.snapshot_every_events) {
        b.snapshot = journal::encode_unsealed_snapshot(state_);
        last_snapshot_sequence_ = state_.last_sequence;
    }
    return b;
}

result<ok_t, journal::store_error> sim_node::store_snapshots(std::vector<pending_batch>& batches) {
    for (auto& b : batches) {
        if (b.snapshot.empty()) continue;
        const std::uint64_t seq = journal::snapshot_sequence(b.snapshot);
        auto hash = store_.chain_hash_at(seq);
        if (!hash) return unexpected{hash.error()};
        journal::seal_snapshot(b.snapshot, *hash);
        if (auto put = store_.put_snapshot(seq, b.snapshot); !put) return put;
        b.snapshot.clear();
    }
    return ok_v;
}

journal::write_set sim_node::merge(const std::vector<pending_batch>& batches) {
    journal::write_set all;
    for (const auto& b : batches) {
        all.events.insert(all.events.end(), b.writes.events.begin(), b.writes.events.end());
        all.changes.insert(all.changes.end(), b.writes.changes.begin(), b.writes.changes.end());
    }
    return all;
}

result<ok_t, journal::store_error> sim_node::commit(const journal::write_set& all) {
    // engine_runner skips the write when a batch holds only queries.
    if (all.events.empty() && all.changes.empty()) return ok_v;
    return store_.append(all);
}

// Mirrors engine_runner::run_command (node/engine_runner.cc); keep the two in step.
reply sim_node::run_command(const command& in, timestamp_ms t, pending_batch& b) {
    const command* cmd = &in;
    command adjusted;
    if (const auto* m = std::get_if<modify_trade>(&in); m != nullptr && !m->reference_price) {
        // As the runner: the API cannot know the trade's symbol, so the node quotes it here.
        if (const trade* open = state_.find_open_trade(m->id)) {
            modify_trade with_price = *m;
            with_price.reference_price = quote_(open->sym);
            adjusted = std::move(with_price);
            cmd = &adjusted;
        }
    }
    if (const auto* x = std::get_if<apply_execution>(&in);
        x != nullptr && x->filled && config_.broken == sabotage::wrong_fill_price) {
        apply_execution off = *x;
        ++off.fill_price.ticks;
        adjusted = std::move(off);
        cmd = &adjusted;
    }
    const command& c = *cmd;
    decision d = decide(state_, c, t);
    if (const auto* x = std::get_if<apply_execution>(&c);
        x != nullptr && x->filled && d.repeated && config_.broken == sabotage::double_fill) {
        // The sabotage: settle a repeated report again, as if decide had no duplicate check.
        d.events.push_back(trade_filled{x->id, x->fill_price, x->exec_id, x->executed_at});
    }
    reply out;
    out.code = d.code;
    out.repeated = d.repeated;
    for (auto& body : d.events) {
        const bool submitted = std::holds_alternative<trade_submitted>(body);
        const bool created = std::holds_alternative<trade_placed>(body) ||
                             std::holds_alternative<trade_refused>(body);
        event e{state_.last_sequence + 1, t, std::move(body)};
        auto change = apply(state_, e);
        if (change) {
            if (submitted) b.orders.push_back(order_for(change->snapshot));
            b.writes.changes.push_back(journal::index_change(state_, *change, created));
            if (!out.trade_view) out.trade_view = std::move(change->snapshot);
        }
        b.writes.events.push_back(std::move(e));
    }
    out.trade_ref = d.trade;
    if (std::holds_alternative<find_stuck_trades>(c)) {
        for (const trade_id id : d.trades) out.trades.push_back(*state_.find_open_trade(id));
    }
    if (d.repeated && d.trade && !out.trade_view) {
        if (const trade* named = state_.find_open_trade(*d.trade)) {
            out.trade_view = *named;
        } else {
            out.trade_closed = true;
        }
    }
    out.sequence = state_.last_sequence;
    return out;
}

}  // namespace broker::sim
