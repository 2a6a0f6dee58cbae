// The engine runner: the engine thread and the queue in front of it.
//
//   IO threads, exchange --submit--> [inbound queue] --> engine thread, round by round:
//     1. takes everything queued (up to batch_max) and decides + applies it;
//     2. journals the round's events in one synced WriteBatch (group commit: whatever arrived
//        while the previous round was syncing forms the next round);
//     3. then, and only then, answers clients, sends orders to the exchange and feeds streams.
//
// One thread for deciding and journaling, not two: a hand-off between threads costs a wake-up
// (tens of microseconds on a virtual machine) per round, more than deciding a round takes, and
// the sync itself already groups requests. The engine thread alone owns `state`; it moves ahead
// of durability only within a round, and nothing of a round is visible outside before its
// commit. A failed commit is fatal (the process aborts) because state has moved past what is on
// disk and nothing of it has been seen outside.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <variant>
#include <vector>

#include "api/services.h"
#include "engine/state.h"
#include "exchange/gateway.h"
#include "journal/store.h"
#include "node/latency_histogram.h"
#include "node/reconcile_schedule.h"
#include "node/stream_hub.h"

namespace broker::node {

struct runner_config {
    std::size_t inbound_max = 65'536;  // queued requests before clients get 503
    std::size_t batch_max = 4'096;     // requests decided and committed per engine round
    std::int64_t collar_bps = limits::collar_bps_default;
    // A trade IN_PROGRESS this long without news is reconciled with the exchange.
    std::int64_t watchdog_ms = 5'000;
    // A trade still PLACED this long is rejected as expired.
    std::int64_t placed_max_age_ms = 300'000;
    // Whether the market accepts orders at a time (the market calendar); null: always.
    std::function<bool(timestamp_ms)> market_open;
    // Free bytes on the journal's disk; null: not watched. Below min_free_disk_bytes new
    // requests are refused (503) so that the journal never meets a full disk mid-write.
    std::function<std::uint64_t()> free_disk_bytes;
    std::uint64_t min_free_disk_bytes = 256ull << 20;
    // The engine thread snapshots its state every this many applied events, and once more on a
    // clean stop, so that a restart replays at most this many events (0: never).
    std::uint64_t snapshot_every_events = 500'000;
    // Rounds start at least this far apart (0: back to back). A round that would start sooner
    // after the previous one started waits for the rest of the interval, so that more requests
    // share its commit; any request may so wait up to this long, even one that finds the engine
    // idle.
    std::chrono::microseconds round_interval{0};
};

// Where completions run: the node posts them to the IO thread that submitted the request
// (`origin`: io_pool::current() at submission; 0 for requests from any other thread).
using executor_fn = std::function<void(std::size_t origin, std::function<void()>)>;

class engine_runner final : public api::services {
public:
    engine_runner(journal::store& store, state recovered, runner_config config,
                  executor_fn post_to_io);
    ~engine_runner() override;

    // The gateway receives every order once its trade_submitted event is durable. Set before
    // start(); on start, trades recovered IN_PROGRESS are sent again (the exchange is idempotent
    // by order id), so that a crash never leaves a trade hanging.
    void start(exchange::gateway* gateway);
    // Processes everything already queued, commits it, and joins the threads.
    void stop();

    // An execution report the gateway learned by asking (not by callback): settled like one.
    void report(apply_execution x);

    [[nodiscard]] bool submit(command c, api::completion done) override;
    // Like submit, but for callers that are not IO sessions (the embedded exchange): `done`
    // runs on the engine thread right after the commit instead of on an IO thread, so it must be
    // quick and must not block or call back into the runner synchronously. Several commands are
    // queued at once (one wake-up of the engine thread), all or none.
    struct engine_submission {
        command what;
        api::completion done;
    };
    [[nodiscard]] bool submit_from_engine(std::vector<engine_submission> all);
    [[nodiscard]] bool submit_digest(api::completion done) override;
    [[nodiscard]] api::lookup<trade> find_closed_trade(const std::string& customer_id,
                                                       trade_id id) override;
    [[nodiscard]] std::optional<money> quote(symbol s) override;
    [[nodiscard]] bool has_quotes() override;
    [[nodiscard]] bool market_open(timestamp_ms now) override;
    [[nodiscard]] std::int64_t collar_bps() const override { return config_.collar_bps; }
    [[nodiscard]] timestamp_ms now() override;
    [[nodiscard]] bool storage_full() const override { return storage_full_.load(); }
    [[nodiscard]] std::string metrics_text() override;
    [[nodiscard]] std::optional<api::closed_page> closed_trades(const std::string& customer_id,
                                                                trade_id before,
                                                                std::optional<symbol> sym,
                                                                std::size_t limit,
                                                                std::size_t scan_max) override;
    [[nodiscard]] api::lookup<trade_id> find_client_order(
        const std::string& customer_id, std::string_view client_order_id) override;
    [[nodiscard]] std::optional<std::vector<api::trade_update>> updates_since(
        const std::string& customer_id, std::uint64_t after, std::size_t limit) override;
    [[nodiscard]] std::unique_ptr<api::subscription> subscribe(const std::string& customer_id,
                                                               api::update_sink sink) override;

private:
    struct digest_query {};
    struct request {
        std::variant<command, digest_query> what;
        api::completion done;
        bool on_engine = false;  // run `done` on the engine thread, not an IO thread
        std::size_t origin = 0;  // the IO thread `done` runs on (executor_fn)
        std::chrono::steady_clock::time_point queued{};  // set by enqueue
    };
    struct reply {
        api::completion done;
        api::outcome result;
        std::chrono::steady_clock::time_point queued{};  // the request's
    };
    // What one round decided, held back until its commit.
    struct batch {
        journal::write_set writes;
        std::vector<std::vector<reply>> replies;  // by origin, posted to the IO threads
        std::vector<reply> engine_replies;     // run on the engine thread
        std::vector<exchange::order> orders;
        std::chrono::steady_clock::time_point started{};  // when the round took its requests
    };
    // A snapshot being encoded by a forked copy of the process.
    struct snapshot_job {
        int pid = -1;
        int fd = -1;  // memfd the child writes the unsealed snapshot to
        std::uint64_t sequence = 0;
        std::size_t customers = 0;
        std::size_t open_trades = 0;
        std::chrono::steady_clock::time_point started;
        std::chrono::steady_clock::duration fork_pause{};  // what the engine thread waited
    };

    [[nodiscard]] static std::size_t origin();
    [[nodiscard]] bool enqueue(request r);
    [[nodiscard]] bool enqueue_all(std::vector<request>& rs);
    void engine_loop();
    // Commits a round, then releases it: replies, exchange orders, stream updates, snapshot.
    void finish(batch& b);
    void count_closed(const std::vector<journal::indexed_change>& changes);
    void maintenance_loop();
    void commit(const journal::write_set& all);
    // Hands committed changes to the streams, one batch per customer (moves the snapshots out).
    void publish_changes(std::vector<journal::indexed_change>& changes);
    [[nodiscard]] std::string take_snapshot();
    // Seals and stores the unsealed snapshot of the state after record `sequence`, given piece
    // by piece (journal::store::snapshot_source), or whole.
    void store_snapshot(std::uint64_t sequence, const journal::store::snapshot_source& unsealed);
    void store_snapshot(std::string unsealed);
    // Snapshots the (durable) state without pausing the engine thread for the encoding: a
    // forked child, which shares the state copy-on-write, encodes it while the engine goes on.
    void start_snapshot();
    [[noreturn]] void encode_in_child(int fd);
    void snapshot_loop();
    void collect_snapshot(const snapshot_job& job);
    void process(request& r, timestamp_ms now, batch& b);
    api::outcome run_command(const command& c, timestamp_ms now, batch& b);

    journal::store& store_;
    state state_;  // engine thread only (and the constructor)
    std::uint64_t last_snapshot_sequence_ = 0;  // engine thread only
    runner_config config_;
    executor_fn post_to_io_;
    exchange::gateway* gateway_ = nullptr;
    stream_hub hub_;

    std::mutex inbound_mutex_;
    std::condition_variable inbound_cv_;
    std::vector<request> inbound_;
    bool stopping_ = false;
    bool pacing_ = false;  // the engine waits out round_interval; enqueue need not wake it

    // Set while free disk space is under the watermark: new requests are refused (503).
    std::atomic<bool> storage_full_{false};
    std::atomic<std::uint64_t> committed_sequence_{0};  // for metrics; the engine thread sets it
    std::atomic<std::uint64_t> commits_{0};
    std::atomic<std::uint64_t> fill_breaks_{0};  // fills the exchange reported against the terms
    // Trades that reached a final status, durably: FILLED, REJECTED, CANCELED (in that order).
    std::array<std::atomic<std::uint64_t>, 3> closed_{};
    // Reports for a settled trade that contradict how it settled: a fill of a trade closed
    // otherwise, a second fill, or a rejection of a filled trade.
    std::atomic<std::uint64_t> contradicting_reports_{0};
    // How the trades closed by the exchange's reports settled (filled or not, and a 32-bit hash
    // of the execution id), so that a later report contradicting it is told from a repeat;
    // engine thread only. Trade ids are one counter, so a table indexed by id modulo its size
    // holds the closes of the last settled_window ids in fixed memory (2 MiB), with no
    // allocation per trade. Older closes are overwritten; their later reports pass as repeats.
    struct settled_report {
        std::uint64_t id = 0;  // 0: empty (trade ids start at 1)
        std::uint32_t exec_hash = 0;
        bool filled = false;
    };
    static constexpr std::size_t settled_window = 131'072;
    std::vector<settled_report> settled_ = std::vector<settled_report>(settled_window);
    void remember_settled(const apply_execution& x, bool filled);
    void check_repeated_report(const apply_execution& x);
    // How long each group commit took (the journal write and its fdatasync); the engine thread
    // adds, /metrics reads.
    latency_histogram commit_seconds_;
    // Where an API request's time in the engine path goes (see stage_seconds in the .cc): the
    // IO threads add as they take the answers, /metrics reads.
    // Shared with the hand-offs in flight, which may run after the runner is gone.
    std::shared_ptr<std::array<latency_histogram, 3>> stage_seconds_ =
        std::make_shared<std::array<latency_histogram, 3>>();
    void watch_disk();
    std::chrono::steady_clock::time_point disk_checked_{};  // engine thread only (commit)

    std::thread engine_thread_;
    std::thread snapshot_thread_;
    std::mutex snapshot_mutex_;
    std::condition_variable snapshot_cv_;
    std::optional<snapshot_job> snapshot_job_;  // handed from the engine to the snapshot thread
    bool snapshot_busy_ = false;  // a child is encoding, or its snapshot is being stored
    bool snapshot_stop_ = false;
    // When each stuck trade is asked about again: at once, then after watchdog_ms, doubling up
    // to 8 x watchdog_ms (reconcile_schedule.h). Used by the watchdog's completions.
    std::mutex reconcile_mutex_;
    reconcile_schedule reconcile_schedule_{
        std::chrono::milliseconds(std::max<std::int64_t>(config_.watchdog_ms, 50)),
        std::chrono::milliseconds(std::max<std::int64_t>(config_.watchdog_ms, 50) * 8)};
    std::thread maintenance_thread_;
    std::mutex maintenance_mutex_;
    std::condition_variable maintenance_cv_;
};

}  // namespace broker::node
