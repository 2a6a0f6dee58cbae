// What the HTTP layer needs from the node, as an interface, so that api/ depends on engine types
// only and can be tested without RocksDB or threads.
//
// Thread-safety: every member may be called from any IO thread. Completion callbacks run on an
// internal thread after the command's events are durable; they must post back to the connection's
// executor and return quickly.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/commands.h"
#include "engine/result.h"
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
    std::optional<trade_id> trade_ref;  // its id, also when trade_view is empty (closed trades)
    std::optional<account_view> account;
    std::vector<trade> open_trades;  // list_open_trades: the customer's open trades
    std::uint64_t sequence = 0;  // last applied sequence when the command was processed
    std::string digest;          // digest queries only
};

using completion = std::function<void(outcome)>;

// A lookup in the store: what it found (nothing when there is none), or that the store could not
// be read. The two must not be confused: "no such trade" for an unreadable store would answer 404,
// and "no earlier order with this client_order_id" would place a second trade.
struct store_unreadable {};
template <class T>
using lookup = result<std::optional<T>, store_unreadable>;

// A page of a customer's closed trades. With a symbol filter the store may read many trades of
// other symbols for each one it keeps; it stops after reading `scan_max`, and `scanned_to` is then
// the id of the last trade it read (trades below it were not looked at). 0: it reached the
// customer's oldest trade, or the page filled.
struct closed_page {
    std::vector<trade> trades;
    trade_id scanned_to{0};
};

// Which of a customer's trades a listing returns.
enum class trade_filter : std::uint8_t { all, open, closed };

// One status change of a customer's trade, as the stream sends it: `sequence` counts the
// customer's changes from 1 without gaps, across restarts.
struct trade_update {
    std::uint64_t sequence = 0;
    trade snapshot;
};

// Receives a customer's live updates, in sequence order, on the engine thread right after they
// are durable. It must not block: copy, post to its own executor, return.
// Updates of one customer from one commit, in sequence order; shared by every subscriber of the
// customer, so fanning out copies a pointer, not the trades.
using update_batch = std::shared_ptr<const std::vector<trade_update>>;
using update_sink = std::function<void(const update_batch&)>;

// Keeps a stream subscription alive; dropping it unsubscribes.
class subscription {
public:
    virtual ~subscription() = default;
};

class services {
public:
    virtual ~services() = default;

    // Queues a command for the engine. Returns false when the engine's queue is full (the caller
    // answers 503 so the client backs off); otherwise `done` runs exactly once.
    [[nodiscard]] virtual bool submit(command c, completion done) = 0;
    // Queues a request for the state digest at the last applied sequence.
    [[nodiscard]] virtual bool submit_digest(completion done) = 0;
    // A terminal trade of `customer_id` from the store (nothing for another customer's trade).
    [[nodiscard]] virtual lookup<trade> find_closed_trade(const std::string& customer_id,
                                                          trade_id id) = 0;
    // The exchange's latest price; nullopt when the symbol is not listed.
    [[nodiscard]] virtual std::optional<money> quote(symbol s) = 0;
    // Whether the exchange has sent any quote yet (see exchange::gateway::has_quotes): when not,
    // a symbol without a quote is not known to be unlisted.
    [[nodiscard]] virtual bool has_quotes() { return true; }
    [[nodiscard]] virtual bool market_open(timestamp_ms now) = 0;
    [[nodiscard]] virtual std::int64_t collar_bps() const = 0;
    [[nodiscard]] virtual timestamp_ms now() = 0;
    // Why submit refused: the journal's disk is nearly full (rather than a full queue).
    [[nodiscard]] virtual bool storage_full() const { return false; }
    // The node's own metrics in Prometheus text format (appended to the API's).
    [[nodiscard]] virtual std::string metrics_text() { return {}; }

    // The customer's closed trades, newest first, with ids below `before` (0: no bound), of
    // `sym` when given, at most `limit`, reading at most `scan_max` of them (see closed_page).
    // Reads the store; call from an IO thread. nullopt when the store could not be read.
    [[nodiscard]] virtual std::optional<closed_page> closed_trades(const std::string& customer_id,
                                                                   trade_id before,
                                                                   std::optional<symbol> sym,
                                                                   std::size_t limit,
                                                                   std::size_t scan_max) = 0;
    // The trade a customer placed with `client_order_id`, as recorded in the store (durable
    // placements only); nothing when none.
    [[nodiscard]] virtual lookup<trade_id> find_client_order(const std::string& customer_id,
                                                             std::string_view client_order_id) = 0;
    // Durable updates of the customer with sequence > after, in order, at most `limit`; nullopt
    // when the store could not be read.
    [[nodiscard]] virtual std::optional<std::vector<trade_update>> updates_since(
        const std::string& customer_id, std::uint64_t after, std::size_t limit) = 0;
    // Live updates of the customer from now on (see update_sink).
    [[nodiscard]] virtual std::unique_ptr<subscription> subscribe(const std::string& customer_id,
                                                                  update_sink sink) = 0;
};

}  // namespace broker::api
