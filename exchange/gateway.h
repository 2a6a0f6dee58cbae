// The exchange gateway: the one interface through which the node talks to an exchange.
//
// Two implementations: the embedded simulator (simulator.h, in process, the default) and the
// networked exchange client speaking the HTTP protocol of DESIGN.md. A networked exchange reports
// executions by signed HTTP callbacks (verified by the API, see signature.h) and by answering
// status queries (an `execution_sink`). The embedded simulator lives in the broker's own process,
// where there is nobody to authenticate and no wire to cross: it hands typed reports to a
// `report_sink`, with the same at-least-once, possibly duplicated delivery, and the engine
// settles all of them through the same apply_execution command.
//
// Thread-safety: every member may be called from any thread.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/commands.h"
#include "engine/money.h"
#include "engine/types.h"

namespace broker::exchange {

struct order {
    trade_id id;
    symbol sym;
    side order_side = side::buy;
    quantity qty;
    money limit_price;  // 0: no limit (SELL)
};

// What the broker did with a report handed over in process.
enum class report_taken {
    settled,  // applied durably, or recognized as a repeat: stop delivering it
    unknown,  // the broker has no such trade: it can never be taken
    retry,    // not taken now (busy, disk full, refused): deliver it again later
};

// One execution report handed to the broker in process; `done` is called once with the outcome,
// on a thread of the broker's (it must not block).
struct handover {
    apply_execution report;
    std::function<void(report_taken)> done;
};

// Hands execution reports to the broker in process, several at once where they executed
// together, so that they cost the broker one wake-up and one journal commit.
using report_sink = std::function<void(std::vector<handover> reports)>;

// Receives execution reports the gateway learned without a callback: from a status query, or
// from the exchange refusing an order outright. The node turns them into apply_execution
// commands; applying one twice is harmless (the engine settles each trade once).
using execution_sink = std::function<void(apply_execution report)>;

class gateway {
public:
    virtual ~gateway() = default;

    // Sends an order to the exchange. Idempotent by order id: sending the same id again must not
    // execute it twice. Called only after the trade's trade_submitted event is durable.
    virtual void submit(const order& o) = 0;
    // Sends several orders at once (those made durable by one commit), in order.
    virtual void submit_all(const std::vector<order>& orders) {
        for (const auto& o : orders) submit(o);
    }
    // For a trade the broker believes is at the exchange but has not heard back about (after a
    // restart, or for too long): asks the exchange. Executed -> the report goes to the
    // execution sink; unknown to the exchange -> sent again; still working -> nothing.
    virtual void reconcile(const order& o) = 0;
    // The latest price of a listed symbol; nullopt when the symbol is not listed. Non-blocking.
    [[nodiscard]] virtual std::optional<money> quote(symbol s) const = 0;
    // Whether any quote has come in: false while a networked exchange has not yet been reached,
    // when quote() knows no symbol at all and its nullopt says nothing about listings.
    [[nodiscard]] virtual bool has_quotes() const { return true; }
    // Whether the exchange accepts orders at `now`.
    [[nodiscard]] virtual bool market_open(timestamp_ms now) const = 0;
    // Stops timers and threads; pending callbacks are abandoned (the exchange would retry them).
    virtual void stop() = 0;
};

}  // namespace broker::exchange
