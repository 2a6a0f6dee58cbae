// `decide`: the engine's business rules as one pure function.
//
// decide(state, command, now) reads the state and returns the events that the command causes,
// plus the outcome to report. It never changes state: the caller journals the events and applies
// them with `apply` (state.h). Both run on the engine thread only.
#pragma once

#include <optional>
#include <vector>

#include "engine/commands.h"
#include "engine/events.h"
#include "engine/state.h"

namespace broker {

struct decision {
    // ok, or why the command changed nothing. Placement risk failures are not errors here: they
    // produce a trade_refused event and code ok, because the REJECTED trade is the answer.
    errc code = errc::ok;
    std::vector<event_body> events;
    std::optional<trade_id> trade;  // the trade the command created or addressed
    bool repeated = false;          // an idempotent repeat that changed nothing
    std::vector<trade_id> trades;   // find_stuck_trades: the trades found
};

[[nodiscard]] decision decide(const state& s, const command& c, timestamp_ms now);

}  // namespace broker
