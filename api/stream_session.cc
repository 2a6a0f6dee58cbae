#include "api/stream_session.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_set>
#include <utility>
#include <vector>

#include "api/gathered_stream.h"
#include "api/json.h"

namespace broker::api {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;

namespace {

// Largest message accepted from the client. The stream is one-way; clients only send control
// frames, and text they send is ignored.
constexpr std::size_t read_message_max = 4096;

std::string update_frame(const trade_update& u) {
    std::string frame;
    frame.reserve(384);
    frame += R"({"type":"trade_update","sequence":)";
    frame += std::to_string(u.sequence);
    frame += R"(,"trade":)";
    append_trade_json(frame, u.snapshot);
    frame += '}';
    return frame;
}

class stream_session;

// Every stream session alive, for close_all_streams. Sessions enter at construction and leave at
// destruction; close_all_streams takes each one's shared_ptr under the lock, so a session being
// destroyed (its weak_ptr already expired) is skipped.
struct live_streams {
    std::mutex mutex;
    std::unordered_set<stream_session*> sessions;  // guarded by mutex
};

live_streams& all_streams() {
    static live_streams* streams = new live_streams;  // never destroyed: sessions outlive main
    return *streams;
}

// One WebSocket stream of a customer's trade updates (see stream_session.h).
//
// Every member runs on the connection's executor (that of the tcp_stream handed over by the HTTP
// session, whose context one thread runs). Live updates reach it from the engine thread through
// the hub's sink, which posts them here. The sink holds the session weakly; the session holds the
// subscription, so dropping the session unsubscribes.
//
// Gap-free, duplicate-free switch from backlog to live:
//   1. subscribe first; live updates are buffered in `pending_` while not yet live;
//   2. accept the upgrade; then, with ?since=N, read the durable backlog after `last_sent_` in
//      batches of `backlog_batch` (the next batch once the previous one has been written), until
//      a batch comes back short: everything committed before the subscription is in the store,
//      everything committed after it is in `pending_` (some updates may be in both);
//   3. send the pending updates with sequence > last_sent_, then go live.
// Every update is sent only if its sequence is > last_sent_, so overlaps are dropped; a sequence
// that is not last_sent_ + 1 would be a gap, and closes the stream with 1011 "stream_gap" so the
// client reconnects with ?since= and gets it from the store.
//
// Without ?since there is no backlog: the session goes live right after the handshake, with
// whatever arrived since the subscription (taken before the 101 was sent), from last_sent_ = 0.
//
// Back-pressure: one write at a time from `outbound_`; when pending_ + outbound_ exceeds
// queue_max the stream is closed with 1008 "slow_consumer" and unsubscribed.
//
// The client side: the session reads continuously, so that pings, pongs and close frames are
// processed and a closed or dead peer is noticed. Text or binary messages from the client are
// ignored (a client may well send application-level keep-alives); messages over 4 KiB fail the
// read, and Beast closes with 1009.
class stream_session : public std::enable_shared_from_this<stream_session> {
public:
    stream_session(beast::tcp_stream&& stream, http::request<http::string_body>&& upgrade,
                   services& svc, std::string customer_id, std::optional<std::uint64_t> since,
                   const stream_config& config, std::int64_t expires_ms, std::shared_ptr<void> slot)
        : ws_(std::move(stream)),
          upgrade_(std::move(upgrade)),
          svc_(svc),
          customer_id_(std::move(customer_id)),
          since_(since),
          config_(config),
          expires_ms_(expires_ms),
          expiry_(ws_.get_executor()),
          slot_(std::move(slot)) {
        config_.queue_max = std::max<std::size_t>(config_.queue_max, 1);
        config_.backlog_batch = std::max<std::size_t>(config_.backlog_batch, 1);
        std::lock_guard lock(all_streams().mutex);
        all_streams().sessions.insert(this);
    }

    ~stream_session() {
        std::lock_guard lock(all_streams().mutex);
        all_streams().sessions.erase(this);
    }

    stream_session(const stream_session&) = delete;
    stream_session& operator=(const stream_session&) = delete;

    void run() {
        net::dispatch(ws_.get_executor(),
                      beast::bind_front_handler(&stream_session::on_run, shared_from_this()));
    }

    // From any thread: close with 1001 "shutting_down" on the session's own executor.
    void shut_down() {
        net::post(ws_.get_executor(), [self = shared_from_this()] {
            self->close(websocket::close_code::going_away, "shutting_down");
        });
    }

private:
    enum class phase : std::uint8_t { accepting, catching_up, live, closing, done };

    void on_run() {
        // Websocket timeouts replace the tcp_stream's own (Beast requires one or the other).
        beast::get_lowest_layer(ws_).expires_never();
        auto timeouts = websocket::stream_base::timeout::suggested(beast::role_type::server);
        if (config_.ping_interval_s > 0) {
            // Beast pings after idle_timeout / 2 without incoming data and drops the peer after
            // idle_timeout: a ping every ping_interval_s of silence, a dead peer gone after two.
            timeouts.idle_timeout = std::chrono::seconds(2 * config_.ping_interval_s);
            timeouts.keep_alive_pings = true;
        } else {
            timeouts.idle_timeout = websocket::stream_base::none();
            timeouts.keep_alive_pings = false;
        }
        ws_.set_option(timeouts);
        ws_.set_option(websocket::stream_base::decorator(
            [](websocket::response_type& res) { res.set(http::field::server, "brokerd"); }));
        ws_.read_message_max(read_message_max);

        // Subscribe before the 101 goes out, so that "live" starts no later than the client can
        // see the stream open.
        std::weak_ptr<stream_session> weak = weak_from_this();
        auto executor = ws_.get_executor();
        sub_ = svc_.subscribe(customer_id_, [weak, executor](const update_batch& batch) {
            net::post(executor, [weak, batch] {
                auto self = weak.lock();
                if (!self) return;
                self->queue_together([&] {
                    for (const trade_update& u : *batch) self->on_update(u);
                });
            });
        });

        ws_.async_accept(upgrade_,
                         beast::bind_front_handler(&stream_session::on_accept, shared_from_this()));
    }

    void on_accept(beast::error_code ec) {
        if (ec) {
            phase_ = phase::done;  // nothing to close gracefully
            return fail(ec, "accept");
        }
        upgrade_ = {};
        if (close_after_accept_) {
            // Too far behind before the stream even opened (see close()).
            return ws_.async_close(
                *close_after_accept_,
                beast::bind_front_handler(&stream_session::on_close, shared_from_this()));
        }
        ws_.text(true);
        do_read();
        expire_with_token();
        if (since_) {
            phase_ = phase::catching_up;
            last_sent_ = *since_;
            anchored_ = true;
            queue_together([&] { catch_up(); });
        } else {
            queue_together([&] { go_live(); });
        }
    }

    // The token that opened the stream stops being honoured at its exp: so does the stream. A
    // far exp (a token may say the year 9999 or later) is waited for a day at a time, so that
    // the timer's clock never overflows.
    void expire_with_token() {
        if (expires_ms_ <= 0) return;
        constexpr std::int64_t day_ms = 24 * 3600 * 1000;
        const std::int64_t left = expires_ms_ - svc_.now();
        expiry_.expires_after(std::chrono::milliseconds(std::clamp<std::int64_t>(left, 0, day_ms)));
        // Weak: a stream closed before its token expires is not kept alive by the timer.
        expiry_.async_wait([weak = weak_from_this()](beast::error_code ec) {
            auto self = weak.lock();
            if (ec || !self) return;
            if (self->svc_.now() < self->expires_ms_) return self->expire_with_token();
            self->close(websocket::close_code::policy_error, "token_expired");
        });
    }

    // Reads one batch of the backlog and queues it. Called when nothing is queued for writing, so
    // the backlog never adds more than one batch to the outbound queue.
    void catch_up() {
        auto batch = svc_.updates_since(customer_id_, last_sent_, config_.backlog_batch);
        if (!batch) return close(websocket::close_code::try_again_later, "storage_error");
        const bool last_batch = batch->size() < config_.backlog_batch;
        for (const auto& u : *batch) {
            if (!send(u)) return;
        }
        // Live updates the backlog already covered.
        while (!pending_.empty() && pending_.front().sequence <= last_sent_) pending_.pop_front();
        if (last_batch) return go_live();
        // A full batch was queued; on_write reads the next one once it is written.
    }

    void go_live() {
        phase_ = phase::live;
        while (!pending_.empty()) {
            trade_update u = std::move(pending_.front());
            pending_.pop_front();
            if (!send(u)) return;
        }
    }

    void on_update(const trade_update& u) {
        switch (phase_) {
        case phase::closing:
        case phase::done:
            return;
        case phase::accepting:
        case phase::catching_up:
            if (!anchored_ || u.sequence > last_sent_) pending_.push_back(u);
            break;
        case phase::live:
            if (!send(u)) return;
            break;
        }
        if (pending_.size() + outbound_.size() > config_.queue_max) {
            spdlog::debug("stream {}: slow consumer, {} messages behind", customer_id_,
                          pending_.size() + outbound_.size());
            close(websocket::close_code::policy_error, "slow_consumer");
        }
    }

    // Queues `u` unless already sent. False when the stream was closed for a gap.
    bool send(const trade_update& u) {
        if (anchored_ && u.sequence <= last_sent_) return true;
        if (anchored_ && u.sequence != last_sent_ + 1) {
            spdlog::error("stream {}: gap, sequence {} after {}", customer_id_, u.sequence,
                          last_sent_);
            close(websocket::close_code::internal_error, "stream_gap");
            return false;
        }
        last_sent_ = u.sequence;
        anchored_ = true;
        outbound_.push_back(update_frame(u));
        if (!writing_ && !queuing_) do_write();
        return true;
    }

    // Runs `queue` (which queues frames) and only then starts writing, so that every frame it
    // queued is known when the first write begins (see do_write).
    template <class Queue>
    void queue_together(Queue&& queue) {
        const bool outer = queuing_;
        queuing_ = true;
        queue();
        queuing_ = outer;
        if (!outer && !writing_ && !outbound_.empty()) do_write();
    }

    // Each frame is one Beast write. A placement and its submission reach the stream together,
    // as do backlog batches: while more frames wait behind the one being written, the writes are
    // held (gathered_stream.h), and the last frame's write takes every held one along, so that
    // a batch leaves in one sendmsg (and as few segments as fit) instead of one per frame.
    void do_write() {
        auto& gather = ws_.next_layer();
        if (outbound_.size() > 1) {
            gather.hold();
        } else {
            gather.release();
        }
        writing_ = true;
        ws_.async_write(net::buffer(outbound_.front()),
                        beast::bind_front_handler(&stream_session::on_write, shared_from_this()));
    }

    void on_write(beast::error_code ec, std::size_t) {
        writing_ = false;
        if (ec) return fail(ec, "write");
        outbound_.pop_front();
        if (phase_ == phase::closing || phase_ == phase::done) return;
        if (!outbound_.empty()) return do_write();
        if (phase_ == phase::catching_up) queue_together([&] { catch_up(); });
    }

    void do_read() {
        ws_.async_read(in_,
                       beast::bind_front_handler(&stream_session::on_read, shared_from_this()));
    }

    void on_read(beast::error_code ec, std::size_t) {
        if (ec) return fail(ec, "read");
        in_.consume(in_.size());  // client messages carry nothing; see the class comment
        do_read();
    }

    // Closes the stream with a close frame (after the write in flight, if any) and stops
    // streaming.
    void close(websocket::close_code code, const char* reason) {
        if (phase_ == phase::closing || phase_ == phase::done) return;
        const bool accepting = phase_ == phase::accepting;
        stop(phase::closing);
        if (accepting) {
            // The handshake is under way; on_accept sends the close frame once it is done.
            close_after_accept_ = websocket::close_reason(code, reason);
            return;
        }
        if (!ws_.is_open()) {
            // The peer is closing, or the stream failed: no close frame to send.
            beast::get_lowest_layer(ws_).close();
            return;
        }
        ws_.async_close(websocket::close_reason(code, reason),
                        beast::bind_front_handler(&stream_session::on_close, shared_from_this()));
    }

    void on_close(beast::error_code ec) {
        // Done either way; on an error, fail() also closes the socket.
        phase_ = phase::done;
        if (ec) return fail(ec, "close");
    }

    void fail(beast::error_code ec, const char* what) {
        if (ec != websocket::error::closed && ec != net::error::operation_aborted) {
            spdlog::debug("stream {}: {}: {}", customer_id_, what, ec.message());
        }
        const bool closing = phase_ == phase::closing;
        stop(phase::done);
        // Abort whatever else is pending, unless our close handshake is still under way: it ends
        // on its own (handshake timeout) and on_close comes here again.
        if (!closing) beast::get_lowest_layer(ws_).close();
    }

    void stop(phase next) {
        phase_ = next;
        expiry_.cancel();
        // Frames already held go out ahead of the close frame, if one is sent.
        ws_.next_layer().release();
        sub_.reset();
        pending_.clear();
        // The frame being written must outlive its write.
        while (outbound_.size() > (writing_ ? 1U : 0U)) outbound_.pop_back();
    }

    websocket::stream<gathered_stream<beast::tcp_stream>> ws_;
    http::request<http::string_body> upgrade_;
    services& svc_;
    std::string customer_id_;
    std::optional<std::uint64_t> since_;
    stream_config config_;
    std::int64_t expires_ms_;
    net::steady_timer expiry_;
    std::shared_ptr<void> slot_;
    std::unique_ptr<subscription> sub_;
    beast::flat_buffer in_;
    std::deque<trade_update> pending_;  // live updates not yet queued (before going live)
    std::deque<std::string> outbound_;  // frames to write; the front one is being written
    std::uint64_t last_sent_ = 0;       // highest sequence queued for the client
    bool anchored_ = false;             // last_sent_ is known (?since given, or one update sent)
    bool writing_ = false;
    bool queuing_ = false;  // inside queue_together: frames are queued, not yet written
    std::optional<websocket::close_reason> close_after_accept_;
    phase phase_ = phase::accepting;
};

}  // namespace

void close_all_streams() {
    std::vector<std::shared_ptr<stream_session>> open;
    {
        std::lock_guard lock(all_streams().mutex);
        for (stream_session* s : all_streams().sessions) {
            if (auto alive = s->weak_from_this().lock()) open.push_back(std::move(alive));
        }
    }
    for (const auto& s : open) s->shut_down();
}

void start_stream_session(beast::tcp_stream&& stream, http::request<http::string_body>&& upgrade,
                          services& svc, std::string customer_id,
                          std::optional<std::uint64_t> since, const stream_config& config,
                          std::int64_t expires_ms, std::shared_ptr<void> slot) {
    std::make_shared<stream_session>(std::move(stream), std::move(upgrade), svc,
                                     std::move(customer_id), since, config, expires_ms,
                                     std::move(slot))
        ->run();
}

}  // namespace broker::api
