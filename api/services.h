// What the HTTP layer needs from the node, as an interface, so that api/ depends on engine types
// only and can be tested without RocksDB or threads.
//
// Thread-safety: every member may be called from any IO thread. Completion callbacks run on an
// internal thread after the command's events are durable; they must post back to the connection's
// executor and return quickly.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "engine/commands.h"
#include "engine/state.h"

namespace broker::api {

struct account_view {
    std::string customer_id;
    money cash;
    money reserved_cash;
    std::vector<position> positions;
};

// The answer to one command, taken on the engine thread right after it was processed.
struct outcome {
    errc code = errc::ok;
    bool repeated = false;            // idempotent repeat: nothing changed
    bool trade_closed = false;        // get_trade: the trade is not open; look in the store
    std::optional<trade> trade_view;  // the trade the command created or addressed
    std::optional<account_view> account;
    std::uint64_t sequence = 0;  // last applied sequence when the command was processed
    std::string digest;          // digest queries only
};

using completion = std::function<void(outcome)>;

class services {
public:
    virtual ~services() = default;

    // Queues a command for the engine. Returns false when the engine's queue is full (the caller
    // answers 503 so the client backs off); otherwise `done` runs exactly once.
    [[nodiscard]] virtual bool submit(command c, completion done) = 0;
    // Queues a request for the state digest at the last applied sequence.
    [[nodiscard]] virtual bool submit_digest(completion done) = 0;
    // A terminal trade from the trade store.
    [[nodiscard]] virtual std::optional<trade> find_closed_trade(trade_id id) = 0;
    // The exchange's latest price; nullopt when the symbol is not listed.
    [[nodiscard]] virtual std::optional<money> quote(symbol s) = 0;
    [[nodiscard]] virtual bool market_open(timestamp_ms now) = 0;
    [[nodiscard]] virtual std::int64_t collar_bps() const = 0;
    [[nodiscard]] virtual timestamp_ms now() = 0;
};

}  // namespace broker::api
