#include "node/engine_runner.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <string_view>
#include <unordered_map>

#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "engine/assert.h"
#include "engine/decide.h"
#include "journal/snapshot.h"
#include "node/io_pool.h"
#include "node/latency_slice.h"

namespace broker::node {

namespace {

// The stages of broker_request_stage_seconds, indexes into stage_seconds_.
enum stage : std::size_t { stage_queued, stage_round, stage_handoff };
constexpr std::array<std::string_view, 3> stage_names{"queued", "round", "handoff"};

exchange::order order_for(const trade& t) {
    return exchange::order{t.id, t.sym, t.trade_side, t.qty, t.limit_price};
}

api::account_view account_of(const customer& c) {
    return api::account_view{c.id, c.cash, c.reserved_cash, c.positions};
}

}  // namespace

engine_runner::engine_runner(journal::store& store, state recovered, runner_config config,
                             executor_fn post_to_io)
    : store_(store),
      state_(std::move(recovered)),
      config_(config),
      post_to_io_(std::move(post_to_io)) {
    BROKER_ASSERT(state_.last_sequence == store_.last_sequence());
    committed_sequence_.store(state_.last_sequence, std::memory_order_relaxed);  // what recovery found
    // Count the events since the newest stored snapshot, so that a node restarted often still
    // snapshots every snapshot_every_events.
    if (auto stored = store_.snapshot_sequences(); stored && !stored->empty()) {
        last_snapshot_sequence_ = std::min(stored->front(), state_.last_sequence);
    }
}

engine_runner::~engine_runner() { stop(); }

void engine_runner::start(exchange::gateway* gateway) {
    gateway_ = gateway;
    // Trades that were at the exchange when the node stopped are reconciled by status query
    // before anything else of their customers is sent (the next trade waits in the FIFO until
    // this one is terminal): executed ones are settled, ones the exchange never saw are sent.
    std::size_t reconciled = 0;
    for (const auto& [id, t] : state_.open_trades) {
        if (t.status == trade_status::in_progress) {
            gateway_->reconcile(order_for(t));
            ++reconciled;
        }
    }
    if (reconciled > 0) spdlog::info("reconciling {} trades that were at the exchange", reconciled);
    // Named as top -H, perf and /proc show them.
    engine_thread_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "engine");
        use_short_slice();
        engine_loop();
    });
    snapshot_thread_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "snapshot");
        snapshot_loop();
    });
    maintenance_thread_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "maintenance");
        maintenance_loop();
    });
}

void engine_runner::stop() {
    {
        std::lock_guard lock(inbound_mutex_);
        if (stopping_) return;
        stopping_ = true;
    }
    inbound_cv_.notify_all();
    maintenance_cv_.notify_all();
    if (maintenance_thread_.joinable()) maintenance_thread_.join();
    if (engine_thread_.joinable()) engine_thread_.join();
}

timestamp_ms engine_runner::now() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::optional<money> engine_runner::quote(symbol s) { return gateway_->quote(s); }
bool engine_runner::has_quotes() { return gateway_->has_quotes(); }

bool engine_runner::market_open(timestamp_ms t) {
    return config_.market_open ? config_.market_open(t) : gateway_->market_open(t);
}

std::string engine_runner::metrics_text() {
    std::size_t queued = 0;
    {
        std::lock_guard lock(inbound_mutex_);
        queued = inbound_.size();
    }
    // Where the resident memory goes: the journal's caches, and what malloc holds in use and
    // free (free but kept chunks are the heap's fragmentation).
    const auto db = store_.memory();
    const struct mallinfo2 heap = mallinfo2();
    std::string text = fmt::format(
        "# HELP broker_memory_bytes Memory held, by part.\n"
        "# TYPE broker_memory_bytes gauge\n"
        "broker_memory_bytes{{part=\"journal_memtables\"}} {}\n"
        "broker_memory_bytes{{part=\"journal_table_readers\"}} {}\n"
        "broker_memory_bytes{{part=\"journal_block_cache\"}} {}\n"
        "broker_memory_bytes{{part=\"heap_in_use\"}} {}\n"
        "broker_memory_bytes{{part=\"heap_free\"}} {}\n",
        db.memtables, db.table_readers, db.block_cache, heap.uordblks + heap.hblkhd, heap.fordblks);
    text +=
        "# HELP broker_journal_commit_seconds Time of each group commit: the journal's write and "
        "its fdatasync.\n# TYPE broker_journal_commit_seconds histogram\n";
    commit_seconds_.render(text, "broker_journal_commit_seconds");
    text +=
        "# HELP broker_request_stage_seconds Time of each API request in the engine path, by "
        "stage: queued (waiting for the engine's next round), round (deciding that round and "
        "its group commit), handoff (from the commit to the IO thread taking the answer).\n"
        "# TYPE broker_request_stage_seconds histogram\n";
    for (std::size_t i = 0; i < stage_names.size(); ++i) {
        (*stage_seconds_)[i].render(text, "broker_request_stage_seconds",
                                    fmt::format("stage=\"{}\"", stage_names[i]));
    }
    text += fmt::format(
        "# HELP broker_journal_sequence Sequence of the last durable journal record.\n"
        "# TYPE broker_journal_sequence gauge\nbroker_journal_sequence {}\n"
        "# HELP broker_journal_commits_total Group commits (synced WriteBatches).\n"
        "# TYPE broker_journal_commits_total counter\nbroker_journal_commits_total {}\n"
        "# HELP broker_engine_queue_depth Requests waiting for the engine thread.\n"
        "# TYPE broker_engine_queue_depth gauge\nbroker_engine_queue_depth {}\n"
        "# HELP broker_storage_full 1 while new requests are refused for lack of disk space.\n"
        "# TYPE broker_storage_full gauge\nbroker_storage_full {}\n"
        "# HELP broker_stream_subscribers Live WebSocket streams.\n"
        "# TYPE broker_stream_subscribers gauge\nbroker_stream_subscribers {}\n"
        "# HELP broker_exchange_fill_breaks_total Fills the exchange reported against the order's "
        "terms (quantity, price, limit); each trade was rejected here and needs settling with the "
        "exchange.\n"
        "# TYPE broker_exchange_fill_breaks_total counter\nbroker_exchange_fill_breaks_total {}\n"
        "# HELP broker_exchange_contradicting_reports_total Reports for a settled trade that "
        "contradict how it settled (a fill of a trade closed otherwise, a second fill, a "
        "rejection of a filled trade); acknowledged, changing nothing, each a break to settle "
        "with the exchange.\n"
        "# TYPE broker_exchange_contradicting_reports_total counter\n"
        "broker_exchange_contradicting_reports_total {}\n"
        "# HELP broker_trades_closed_total Trades that reached a final status, counted once "
        "journaled.\n"
        "# TYPE broker_trades_closed_total counter\n"
        "broker_trades_closed_total{{status=\"FILLED\"}} {}\n"
        "broker_trades_closed_total{{status=\"REJECTED\"}} {}\n"
        "broker_trades_closed_total{{status=\"CANCELED\"}} {}\n",
        committed_sequence_.load(std::memory_order_relaxed),
        commits_.load(std::memory_order_relaxed), queued, storage_full_.load() ? 1 : 0,
        hub_.subscribers(), fill_breaks_.load(std::memory_order_relaxed),
        contradicting_reports_.load(std::memory_order_relaxed),
        closed_[0].load(std::memory_order_relaxed), closed_[1].load(std::memory_order_relaxed),
        closed_[2].load(std::memory_order_relaxed));
    return text;
}

void engine_runner::report(apply_execution x) {
    const std::string id = format_trade_id(x.id);
    std::vector<engine_submission> one;
    one.push_back(engine_submission{std::move(x), [id](api::outcome o) {
        if (o.code != errc::ok) spdlog::warn("execution report for {} not applied: {}", id, to_string(o.code));
    }});
    const bool queued = submit_from_engine(std::move(one));
    // A full queue loses nothing: the trade stays IN_PROGRESS and the watchdog asks again.
    if (!queued) spdlog::warn("execution report for {} deferred: engine queue full", id);
}

void engine_runner::maintenance_loop() {
    // Each round: trades IN_PROGRESS too long are reconciled with the exchange, and trades
    // PLACED too long expire. Both are ordinary commands, so they are journaled and replayed.
    const auto period = std::chrono::milliseconds(std::clamp<std::int64_t>(config_.watchdog_ms / 2, 50, 250));
    std::unique_lock lock(maintenance_mutex_);
    for (;;) {
        maintenance_cv_.wait_for(lock, period);
        {
            std::lock_guard inbound(inbound_mutex_);
            if (stopping_) return;
        }
        watch_disk();
        const timestamp_ms t = now();
        (void)submit(find_stuck_trades{t - config_.watchdog_ms, 10'000}, [this](api::outcome o) {
            std::vector<std::uint64_t> stuck;
            stuck.reserve(o.open_trades.size());
            for (const auto& s : o.open_trades) stuck.push_back(s.id.value);
            std::vector<std::uint64_t> ask;
            {
                std::lock_guard guard(reconcile_mutex_);
                ask = reconcile_schedule_.due(stuck, std::chrono::steady_clock::now());
            }
            // `ask` keeps the order of `stuck`.
            std::size_t next = 0;
            for (const auto& s : o.open_trades) {
                if (next == ask.size()) break;
                if (s.id.value != ask[next]) continue;
                gateway_->reconcile(order_for(s));
                ++next;
            }
            if (!ask.empty()) {
                spdlog::info("watchdog: asked the exchange about {} of {} stuck trades", ask.size(),
                             stuck.size());
            }
        });
        (void)submit(expire_placed{t - config_.placed_max_age_ms, 10'000}, [](api::outcome o) {
            if (o.sequence > 0 && !o.open_trades.empty()) spdlog::info("expired {} trades", o.open_trades.size());
        });
    }
}

api::lookup<trade> engine_runner::find_closed_trade(const std::string& customer_id, trade_id id) {
    auto found = store_.find_trade(customer_id, id);
    if (!found) {
        spdlog::error("trade store read failed: {}", found.error().what);
        return unexpected{api::store_unreadable{}};
    }
    return std::move(*found);
}

std::optional<api::closed_page> engine_runner::closed_trades(const std::string& customer_id,
                                                             trade_id before,
                                                             std::optional<symbol> sym,
                                                             std::size_t limit,
                                                             std::size_t scan_max) {
    auto found = store_.closed_trades(customer_id, before, sym, limit, scan_max);
    if (!found) {
        spdlog::error("listing closed trades failed: {}", found.error().what);
        return std::nullopt;
    }
    return api::closed_page{std::move(found->trades), found->scanned_to};
}

api::lookup<trade_id> engine_runner::find_client_order(const std::string& customer_id,
                                                       std::string_view client_order_id) {
    auto found = store_.find_client_order(customer_id, client_order_id);
    if (!found) {
        spdlog::error("client order lookup failed: {}", found.error().what);
        return unexpected{api::store_unreadable{}};
    }
    return *found;
}

std::optional<std::vector<api::trade_update>> engine_runner::updates_since(
    const std::string& customer_id, std::uint64_t after, std::size_t limit) {
    auto found = store_.updates_since(customer_id, after, limit);
    if (!found) {
        spdlog::error("reading updates failed: {}", found.error().what);
        return std::nullopt;
    }
    std::vector<api::trade_update> out;
    out.reserve(found->size());
    for (auto& c : *found) out.push_back(api::trade_update{c.update_sequence, std::move(c.snapshot)});
    return out;
}

std::unique_ptr<api::subscription> engine_runner::subscribe(const std::string& customer_id,
                                                            api::update_sink sink) {
    return hub_.subscribe(customer_id, std::move(sink));
}

// The IO thread asking, so that the answer goes back to it (off the IO threads: thread 0).
std::size_t engine_runner::origin() {
    const std::size_t i = io_pool::current();
    return i == io_pool::none ? 0 : i;
}

bool engine_runner::submit(command c, api::completion done) {
    return enqueue(request{std::move(c), std::move(done), false, origin()});
}

bool engine_runner::submit_from_engine(std::vector<engine_submission> all) {
    std::vector<request> rs;
    rs.reserve(all.size());
    for (auto& s : all) rs.push_back(request{std::move(s.what), std::move(s.done), true});
    return enqueue_all(rs);
}

bool engine_runner::submit_digest(api::completion done) {
    return enqueue(request{digest_query{}, std::move(done), false, origin()});
}

bool engine_runner::enqueue(request r) {
    r.queued = std::chrono::steady_clock::now();
    {
        std::lock_guard lock(inbound_mutex_);
        // A bounded queue: past the bound the client is told to back off (503) instead of
        // growing memory while the engine catches up. With the disk full nothing new is taken.
        if (stopping_ || storage_full_.load(std::memory_order_relaxed) ||
            inbound_.size() >= config_.inbound_max) {
            return false;
        }
        inbound_.push_back(std::move(r));
        if (pacing_ && inbound_.size() < config_.batch_max) return true;
    }
    inbound_cv_.notify_one();
    return true;
}

bool engine_runner::enqueue_all(std::vector<request>& rs) {
    const auto now = std::chrono::steady_clock::now();
    {
        std::lock_guard lock(inbound_mutex_);
        if (stopping_ || storage_full_.load(std::memory_order_relaxed) ||
            inbound_.size() + rs.size() > config_.inbound_max) {
            return false;
        }
        for (auto& r : rs) {
            r.queued = now;
            inbound_.push_back(std::move(r));
        }
        if (pacing_ && inbound_.size() < config_.batch_max) return true;
    }
    inbound_cv_.notify_one();
    return true;
}

void engine_runner::engine_loop() {
    std::vector<request> taken;
    std::chrono::steady_clock::time_point last_round{};
    for (;;) {
        {
            std::unique_lock lock(inbound_mutex_);
            inbound_cv_.wait(lock, [&] { return stopping_ || !inbound_.empty(); });
            if (config_.round_interval.count() > 0) {
                const auto due = last_round + config_.round_interval;
                if (std::chrono::steady_clock::now() < due) {
                    pacing_ = true;
                    inbound_cv_.wait_until(lock, due, [&] {
                        return stopping_ || inbound_.size() >= config_.batch_max;
                    });
                    pacing_ = false;
                }
                last_round = std::chrono::steady_clock::now();
            }
            if (inbound_.empty()) break;  // stopping, and everything queued was processed
            if (inbound_.size() <= config_.batch_max) {
                taken.swap(inbound_);
            } else {
                taken.assign(std::make_move_iterator(inbound_.begin()),
                             std::make_move_iterator(inbound_.begin() + config_.batch_max));
                inbound_.erase(inbound_.begin(), inbound_.begin() + config_.batch_max);
            }
        }
        batch b;
        b.started = std::chrono::steady_clock::now();
        const timestamp_ms t = now();
        for (auto& r : taken) process(r, t, b);
        taken.clear();
        finish(b);
        if (config_.snapshot_every_events > 0 &&
            state_.last_sequence - last_snapshot_sequence_ >= config_.snapshot_every_events) {
            start_snapshot();
        }
    }
    // The snapshot in progress is stored first; then a clean stop leaves one of the final state,
    // so the next start replays nothing.
    {
        std::lock_guard lock(snapshot_mutex_);
        snapshot_stop_ = true;
    }
    snapshot_cv_.notify_one();
    if (snapshot_thread_.joinable()) snapshot_thread_.join();
    if (config_.snapshot_every_events > 0 && state_.last_sequence > last_snapshot_sequence_) {
        store_snapshot(take_snapshot());
    }
}

void engine_runner::finish(batch& b) {
    if (!b.writes.events.empty() || !b.writes.changes.empty()) commit(b.writes);
    count_closed(b.writes.changes);
    // Durable now: the orders go to the exchange, then the answers. One hand-off per IO thread
    // and round, not one per reply: each thread renders the answers to its own connections and
    // writes them without another hand-off.
    const auto committed = std::chrono::steady_clock::now();
    gateway_->submit_all(b.orders);
    for (std::size_t origin = 0; origin < b.replies.size(); ++origin) {
        if (b.replies[origin].empty()) continue;
        auto replies = std::make_shared<std::vector<reply>>(std::move(b.replies[origin]));
        post_to_io_(origin, [replies, stages = stage_seconds_, started = b.started, committed] {
            const auto taken = std::chrono::steady_clock::now();
            (*stages)[stage_round].add(committed - started, replies->size());
            (*stages)[stage_handoff].add(taken - committed, replies->size());
            for (auto& r : *replies) {
                (*stages)[stage_queued].add(started - r.queued);
                r.done(std::move(r.result));
            }
        });
    }
    for (auto& r : b.engine_replies) r.done(std::move(r.result));
    // Streams see the changes in per-customer sequence order, one batch per customer per round
    // (a placement and its submission usually share one).
    publish_changes(b.writes.changes);
}

void engine_runner::count_closed(const std::vector<journal::indexed_change>& changes) {
    // A trade changes once into a final status and never after, so each close counts once.
    std::array<std::uint64_t, 3> n{};
    for (const auto& c : changes) {
        switch (c.change.snapshot.status) {
            case trade_status::filled:
                ++n[0];
                break;
            case trade_status::rejected:
                ++n[1];
                break;
            case trade_status::canceled:
                ++n[2];
                break;
            default:
                break;
        }
    }
    for (std::size_t i = 0; i < n.size(); ++i) {
        if (n[i] != 0) closed_[i].fetch_add(n[i], std::memory_order_relaxed);
    }
}

void engine_runner::start_snapshot() {
    {
        std::lock_guard lock(snapshot_mutex_);
        if (snapshot_busy_) return;  // the previous one is still on its way; the next round asks again
    }
    // Called between rounds: the state is consistent and durable up to last_sequence.
    const int fd = memfd_create("brokerd-snapshot", MFD_CLOEXEC);
    const auto started = std::chrono::steady_clock::now();
    const pid_t pid = fd < 0 ? -1 : fork();
    if (pid == 0) encode_in_child(fd);
    if (pid < 0) {
        // No child (no memory for the page tables, or no memfd): encode here, pausing the engine.
        spdlog::warn("snapshot: cannot fork ({}); encoding on the engine thread", std::strerror(errno));
        if (fd >= 0) close(fd);
        store_snapshot(take_snapshot());
        return;
    }
    last_snapshot_sequence_ = state_.last_sequence;
    {
        std::lock_guard lock(snapshot_mutex_);
        snapshot_busy_ = true;
        snapshot_job_ = snapshot_job{pid,
                                     fd,
                                     state_.last_sequence,
                                     state_.customers.size(),
                                     state_.open_trades.size(),
                                     started,
                                     std::chrono::steady_clock::now() - started};
    }
    snapshot_cv_.notify_one();
}

void engine_runner::encode_in_child(int fd) {
    // The child has only this thread; whatever other threads of the parent held (spdlog's
    // mutexes, RocksDB's) stays locked here, so it encodes, writes and leaves with _exit, touching
    // nothing else. The heap is safe: glibc's fork resets malloc's locks in the child.
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    // Sockets and files stay the parent's alone (a closed connection's FIN must not wait for the
    // child to exit).
    if (fd > 3) close_range(3, static_cast<unsigned>(fd) - 1, 0);
    close_range(static_cast<unsigned>(fd) + 1, ~0U, 0);
    const std::string bytes = journal::encode_unsealed_snapshot(state_);
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) _exit(1);
        done += static_cast<std::size_t>(n);
    }
    _exit(0);
}

void engine_runner::snapshot_loop() {
    for (;;) {
        snapshot_job job;
        {
            std::unique_lock lock(snapshot_mutex_);
            snapshot_cv_.wait(lock, [&] { return snapshot_job_ || snapshot_stop_; });
            if (!snapshot_job_) return;
            job = *snapshot_job_;
            snapshot_job_.reset();
        }
        collect_snapshot(job);
        std::lock_guard lock(snapshot_mutex_);
        snapshot_busy_ = false;
    }
}

void engine_runner::collect_snapshot(const snapshot_job& job) {
    int status = 0;
    while (waitpid(job.pid, &status, 0) < 0 && errno == EINTR) {
    }
    struct stat st {};
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || fstat(job.fd, &st) != 0) {
        // Losing a snapshot only makes the next start slower.
        if (WIFSIGNALED(status)) {
            spdlog::warn("snapshot at sequence {} not taken: the encoding process was killed by "
                         "signal {}", job.sequence, WTERMSIG(status));
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            spdlog::warn("snapshot at sequence {} not taken: the encoding process exited with {}",
                         job.sequence, WEXITSTATUS(status));
        } else {
            spdlog::warn("snapshot at sequence {} not taken: its encoding cannot be read: {}",
                         job.sequence, std::strerror(errno));
        }
        close(job.fd);
        return;
    }
    spdlog::info("snapshot at sequence {}: {} customers, {} open trades, {} bytes, encoded in {} ms "
                 "by a child process (the engine thread paused {} us to fork)",
                 job.sequence, job.customers, job.open_trades, st.st_size,
                 std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - job.started).count(),
                 std::chrono::duration_cast<std::chrono::microseconds>(job.fork_pause).count());
    // Read from the child's memfd a piece at a time, never mapped or copied whole: the memfd's
    // pages would otherwise count in this process's memory while the snapshot is stored.
    off_t offset = 0;
    store_snapshot(job.sequence, [&](std::string& piece) -> result<bool, journal::store_error> {
        piece.resize(journal::snapshot_piece_size);
        for (;;) {
            const ssize_t n = pread(job.fd, piece.data(), piece.size(), offset);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                return unexpected{journal::store_error{
                    fmt::format("reading the encoding process's output: {}", std::strerror(errno))}};
            }
            piece.resize(static_cast<std::size_t>(n));
            offset += n;
            return n > 0;
        }
    });
    close(job.fd);
}

std::string engine_runner::take_snapshot() {
    // The engine thread pauses here: encoding is a walk over every customer and open trade.
    const auto started = std::chrono::steady_clock::now();
    std::string bytes = journal::encode_unsealed_snapshot(state_);
    last_snapshot_sequence_ = state_.last_sequence;
    spdlog::info("snapshot at sequence {}: {} customers, {} open trades, {} bytes, encoded in {} ms",
                 state_.last_sequence, state_.customers.size(), state_.open_trades.size(),
                 bytes.size(),
                 std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - started).count());
    return bytes;
}

void engine_runner::store_snapshot(std::string unsealed) {
    store_snapshot(journal::snapshot_sequence(unsealed), journal::store::pieces_of(unsealed));
}

void engine_runner::store_snapshot(std::uint64_t seq, const journal::store::snapshot_source& unsealed) {
    // Losing a snapshot only makes the next start slower, so failures here are warnings; a store
    // that cannot write at all fails the next journal commit, which stops the node.
    const auto started = std::chrono::steady_clock::now();
    auto hash = store_.chain_hash_at(seq);
    if (!hash) {
        spdlog::warn("snapshot at sequence {} not stored: {}", seq, hash.error().what);
        return;
    }
    // Sealed on the way into the store; the checksum is the last piece.
    journal::snapshot_sealer sealer(*hash);
    bool sealed = false;
    auto pieces = [&](std::string& piece) -> result<bool, journal::store_error> {
        if (sealed) return false;
        auto more = unsealed(piece);
        if (!more) return more;
        if (*more) {
            sealer.add(piece);
            return true;
        }
        const auto sum = sealer.finish();
        piece.assign(sum.data(), sum.size());
        sealed = true;
        return true;
    };
    if (auto put = store_.put_snapshot(seq, pieces); !put) {
        spdlog::warn("snapshot at sequence {} not stored: {}", seq, put.error().what);
        return;
    }
    spdlog::info("snapshot at sequence {} stored in {} ms", seq,
                 std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - started).count());
}

void engine_runner::process(request& r, timestamp_ms t, batch& b) {
    api::outcome result;
    if (std::holds_alternative<digest_query>(r.what)) {
        result.sequence = state_.last_sequence;
        result.digest = journal::state_digest(state_);
    } else {
        result = run_command(std::get<command>(r.what), t, b);
    }
    if (r.on_engine) {
        b.engine_replies.push_back(reply{std::move(r.done), std::move(result)});
        return;
    }
    if (b.replies.size() <= r.origin) b.replies.resize(r.origin + 1);
    b.replies[r.origin].push_back(reply{std::move(r.done), std::move(result), r.queued});
}

api::outcome engine_runner::run_command(const command& in, timestamp_ms t, batch& b) {
    const command* cmd = &in;
    command quoted;
    if (const auto* m = std::get_if<modify_trade>(&in); m != nullptr && !m->reference_price) {
        // The API cannot know the trade's symbol; quote it here, into the command, so that the
        // engine stays a pure function of what it is given.
        if (const trade* open = state_.find_open_trade(m->id)) {
            modify_trade with_price = *m;
            with_price.reference_price = gateway_->quote(open->sym);
            quoted = std::move(with_price);
            cmd = &quoted;
        }
    }
    const command& c = *cmd;
    decision d = decide(state_, c, t);
    if (const auto* x = std::get_if<apply_execution>(&c); x != nullptr && d.code == errc::ok) {
        if (d.events.empty()) {
            check_repeated_report(*x);
        } else {
            remember_settled(*x, std::holds_alternative<trade_filled>(d.events.front()));
        }
    }
    api::outcome out;
    out.code = d.code;
    out.repeated = d.repeated;
    for (auto& body : d.events) {
        if (const auto* r = std::get_if<trade_rejected>(&body);
            r != nullptr && r->reason == errc::fill_mismatch) {
            fill_breaks_.fetch_add(1, std::memory_order_relaxed);
            spdlog::error(
                "the exchange filled trade {} against its terms (quantity, price or "
                "limit): rejected here, reservation released; settle the break with "
                "the exchange",
                format_trade_id(r->id));
        }
        const bool submitted = std::holds_alternative<trade_submitted>(body);
        const bool created = std::holds_alternative<trade_placed>(body) ||
                             std::holds_alternative<trade_refused>(body);
        event e{state_.last_sequence + 1, t, std::move(body)};
        auto change = apply(state_, e);
        if (change) {
            if (submitted) b.orders.push_back(order_for(change->snapshot));
            b.writes.changes.push_back(journal::index_change(state_, *change, created));
            // The answer shows the trade as the command's first event left it: a placement
            // answers PLACED (or REJECTED), as the API's contract says, also when the trade went
            // to the exchange in the same round. GET and the stream show it move on from there,
            // and a cancel of a trade already at the exchange gets 422 trade_not_cancelable.
            if (!out.trade_view) out.trade_view = std::move(change->snapshot);
        }
        b.writes.events.push_back(std::move(e));
    }
    if (const auto* g = std::get_if<get_trade>(&c); g != nullptr && d.code == errc::ok) {
        out.trade_view = *state_.find_open_trade(g->id);
    }
    out.trade_ref = d.trade;
    if (const auto* l = std::get_if<list_open_trades>(&c); l != nullptr && d.code == errc::ok) {
        for (const trade_id id : state_.find_customer(l->customer_id)->fifo) {
            out.open_trades.push_back(*state_.find_open_trade(id));
        }
    }
    if (std::holds_alternative<find_stuck_trades>(c)) {
        for (const trade_id id : d.trades) out.open_trades.push_back(*state_.find_open_trade(id));
    }
    if (std::holds_alternative<::broker::find_client_order>(c) && d.code == errc::ok) {
        if (const trade* open = state_.find_open_trade(*d.trade)) out.trade_view = *open;
    }
    if (d.repeated && d.trade && !out.trade_view) {
        // An idempotent repeat names an existing trade: open here, or closed in the store.
        if (const trade* named = state_.find_open_trade(*d.trade)) {
            out.trade_view = *named;
        } else {
            out.trade_closed = true;
        }
    }
    const std::string* customer_id = nullptr;
    if (const auto* a = std::get_if<get_account>(&c)) customer_id = &a->customer_id;
    if (const auto* o = std::get_if<open_customer>(&c)) customer_id = &o->customer_id;
    if (customer_id != nullptr && d.code == errc::ok) {
        out.account = account_of(*state_.find_customer(*customer_id));
    }
    out.sequence = state_.last_sequence;
    return out;
}

namespace {

std::uint32_t exec_hash(const std::string& exec_id) {
    return static_cast<std::uint32_t>(std::hash<std::string>{}(exec_id));
}

}  // namespace

void engine_runner::remember_settled(const apply_execution& x, bool filled) {
    settled_[x.id.value % settled_window] =
        settled_report{x.id.value, exec_hash(x.exec_id), filled};
}

void engine_runner::check_repeated_report(const apply_execution& x) {
    // A repeat (the same exec_id) is the exchange's at-least-once delivery; anything else about
    // a settled trade means the two books disagree. Two rejections with different ids are both
    // "not executed" and agree.
    const settled_report& was = settled_[x.id.value % settled_window];
    if (was.id != x.id.value || exec_hash(x.exec_id) == was.exec_hash) return;
    if (!x.filled && !was.filled) return;
    contradicting_reports_.fetch_add(1, std::memory_order_relaxed);
    spdlog::error(
        "the exchange reports trade {} {} (execution {:?}), but it settled {} here: nothing "
        "changed; settle the break with the exchange",
        format_trade_id(x.id), x.filled ? "filled" : "rejected", x.exec_id,
        was.filled ? "filled by another execution" : "without a fill");
}

void engine_runner::commit(const journal::write_set& all) {
    // A statfs per commit costs about as much CPU as deciding a round does. Once per 10 ms
    // suffices: no disk takes the watermark (256 MiB by default) in that time, and the
    // maintenance thread looks too.
    const auto checked = std::chrono::steady_clock::now();
    if (checked - disk_checked_ >= std::chrono::milliseconds(10)) {
        disk_checked_ = checked;
        watch_disk();
    }
    const auto started = std::chrono::steady_clock::now();
    auto written = store_.append(all);
    if (written) {
        commit_seconds_.add(std::chrono::steady_clock::now() - started);
        committed_sequence_.store(store_.last_sequence(), std::memory_order_relaxed);
        commits_.fetch_add(1, std::memory_order_relaxed);
    }
    if (!written) {
        // An IO error, a failed fsync, or a disk that filled past the watermark: state has moved
        // past the disk and nothing of it was seen outside. Stopping is the only safe answer
        // (a failed fsync must never be retried as if it had worked); recovery replays what is
        // durable.
        spdlog::critical("journal write failed{}, stopping: {}",
                         written.error().no_space ? " (disk full)" : "", written.error().what);
        spdlog::shutdown();
        std::abort();
    }
}

void engine_runner::watch_disk() {
    if (!config_.free_disk_bytes) return;
    const std::uint64_t free = config_.free_disk_bytes();
    const bool low = free < config_.min_free_disk_bytes;
    if (low && !storage_full_.exchange(true)) {
        spdlog::error("disk nearly full ({} MiB free, {} MiB required): refusing new requests with 503",
                      free >> 20, config_.min_free_disk_bytes >> 20);
    } else if (!low && storage_full_.exchange(false)) {
        spdlog::info("disk space is back ({} MiB free): accepting requests", free >> 20);
    }
}

void engine_runner::publish_changes(std::vector<journal::indexed_change>& changes) {
    if (changes.empty() || hub_.subscribers() == 0) return;
    std::unordered_map<std::string_view, std::vector<std::size_t>> by_customer;
    for (std::size_t i = 0; i < changes.size(); ++i) {
        by_customer[changes[i].change.snapshot.customer_id].push_back(i);
    }
    for (const auto& [customer, indexes] : by_customer) {
        std::string customer_id(customer);  // before the snapshots it points into are moved
        auto updates = std::make_shared<std::vector<api::trade_update>>();
        updates->reserve(indexes.size());
        for (const std::size_t i : indexes) {
            updates->push_back(api::trade_update{changes[i].change.update_sequence,
                                                 std::move(changes[i].change.snapshot)});
        }
        hub_.publish(customer_id, api::update_batch(std::move(updates)));
    }
}

}  // namespace broker::node
