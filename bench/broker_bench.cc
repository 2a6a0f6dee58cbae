// broker-bench: the load generator for brokerd (and, with the same request shape, for any HTTP
// server that stands in as a baseline, such as nginx returning a fixed body).
//
// What it does, in order:
//   1. optional setup: opens --customers funded customers with PUT /admin/v1/customers/{id} over
//      --connections keep-alive connections (an admin token minted from --jwt-secret), and reports
//      how fast that went (the scale mode opens a million this way);
//   2. optional --e2e: one WebSocket (/v1/stream) per customer, all subscribed before the load;
//   3. the load: every connection sends PlaceTrade (POST /v1/trades, 1 share, BUY and SELL
//      alternating per customer) as an HTTP/1.1 keep-alive request, either closed loop (--rate 0:
//      each connection sends its next request when the previous answer arrives) or open loop
//      (--rate R: request i is due at start + i/R; latency is measured from when it was due, so a
//      stalled server is charged for the requests it delayed -- no coordinated omission; that
//      latency is also split into how late the request was sent and the time from send to answer);
//   4. drains: waits for answers in flight and, with --e2e, for the fills still owed;
//   5. writes --out as JSON: throughput, acknowledgement latency percentiles and histogram,
//      outcomes (placed / rejected by reason / HTTP status), a per-second timeline, end-to-end
//      placement->FILLED latency and fills/s, and optional RSS samples of a process (--rss-pid).
//
// Every loop is bounded: by --duration-s, by --max-requests, and by --drain-s after the load.
// Only the address given by --target is contacted, and it must be a loopback address unless
// --allow-remote says otherwise. The exit status is 1 when any answer was not 2xx or nothing was
// answered (a run of 401s is no measurement of the server), and when setup opened fewer customers
// than asked.
//
// Threads: --threads run one io_context. Each connection is a chain of asynchronous operations
// with at most one outstanding, so its members need no lock; what connections share (ticket
// counter, per-second timeline, per-customer placement times for --e2e) is atomic or locked.
// Histograms are per connection and merged after the io threads have joined.
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "api/json.h"
#include "api/jwt.h"
#include "bench/histogram.h"
#include "tools/cli_checks.h"

namespace broker::bench {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using clock_type = std::chrono::steady_clock;
using time_point = clock_type::time_point;

struct options {
    std::string target = "127.0.0.1:8080";
    int connections = 64;
    std::size_t customers = 1000;
    double duration_s = 20;
    double warmup_s = 2;
    double rate = 0;  // requests per second over all connections; 0 = closed loop
    int threads = 1;
    std::string mode = "trade";  // trade: PlaceTrade as a customer; http: --method/--path/--body
    std::string method = "GET";
    std::string path;
    std::string body;
    std::string jwt_secret;
    std::string customer_prefix = "bench-";
    bool open_customers = false;
    bool setup_only = false;
    std::string cash = "1000000000.0000";
    std::int64_t shares = 1'000'000;
    std::string symbol = "AAPL";
    bool e2e = false;
    std::uint64_t max_requests = 100'000'000;
    double drain_s = 10;
    int rss_pid = 0;
    std::vector<int> server_pids;  // CPU time of these is measured over the load
    std::vector<std::string> server_counters;  // counters read from the target's /metrics
    std::uint64_t rss_every = 0;
    std::string out;
    std::string label;
    bool quiet = false;
    bool allow_remote = false;
};

[[noreturn]] void die(const std::string& reason) {
    fmt::print(stderr, "broker-bench: {}\n", reason);
    std::exit(2);
}

std::int64_t unix_s() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

double seconds_between(time_point a, time_point b) {
    return std::chrono::duration<double>(b - a).count();
}

std::uint64_t ns_between(time_point a, time_point b) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
    return ns < 0 ? 0 : static_cast<std::uint64_t>(ns);
}

// The value of a JSON string field in a flat, trusted answer ("status":"PLACED" -> PLACED), or
// empty. The answers come from the server under test, whose format the API contract fixes; a
// full parser per answer would make the load generator, not the server, the bottleneck.
std::string_view string_field(std::string_view json, std::string_view name) {
    std::string key;
    key.reserve(name.size() + 4);
    key += '"';
    key += name;
    key += "\":\"";
    const auto at = json.find(key);
    if (at == std::string_view::npos) return {};
    const auto from = at + key.size();
    const auto end = json.find('"', from);
    if (end == std::string_view::npos) return {};
    return json.substr(from, end - from);
}

std::optional<std::uint64_t> parse_hex_id(std::string_view text) {
    if (text.empty() || text.size() > 16) return std::nullopt;
    std::uint64_t v = 0;
    for (const char c : text) {
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= static_cast<std::uint64_t>(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= static_cast<std::uint64_t>(c - 'a' + 10);
        else
            return std::nullopt;
    }
    return v;
}

// User + system CPU seconds from the text of a /proc stat file (a process's or a thread's); -1
// when it cannot be parsed. `name` receives the command name (a thread's name, for a task).
double stat_cpu_s(const std::string& stat, std::string* name = nullptr) {
    const auto open = stat.find('(');
    const auto close = stat.rfind(')');  // the command name may hold spaces and parentheses
    if (open == std::string::npos || close == std::string::npos || close < open) return -1;
    if (name != nullptr) *name = stat.substr(open + 1, close - open - 1);
    std::istringstream fields(stat.substr(close + 2));
    std::string f;
    double ticks = 0;
    int i = 3;
    for (; i <= 15 && fields >> f; ++i) {
        if (i == 14 || i == 15) ticks += std::strtod(f.c_str(), nullptr);  // utime, stime
    }
    if (i <= 15) return -1;
    return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::string read_text(const std::filesystem::path& p) {
    std::ifstream in(p);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// CPU time (user + system, all threads) of a process, in seconds; -1 when it cannot be read.
double cpu_s_of(int pid) {
    return stat_cpu_s(read_text(fmt::format("/proc/{}/stat", pid)));
}

// A thread's context switches so far, from /proc/PID/task/TID/status: voluntary ones are the
// thread going to sleep (to be woken later), involuntary ones the scheduler taking its core away.
struct switches {
    std::uint64_t voluntary = 0;
    std::uint64_t involuntary = 0;
};
switches switches_in(const std::string& status) {
    switches out;
    const auto field = [&](std::string_view name) -> std::uint64_t {
        const auto at = status.find(name);
        if (at == std::string::npos) return 0;
        return std::strtoull(status.c_str() + at + name.size(), nullptr, 10);
    };
    out.voluntary = field("\nvoluntary_ctxt_switches:");
    out.involuntary = field("\nnonvoluntary_ctxt_switches:");
    return out;
}

// CPU time and context switches of every thread of the given processes: "pid/tid" -> (thread
// name, seconds, switches). Threads are told apart by id, so that two samples can be subtracted
// per thread; the report sums them by name (io-0, engine, rocksdb:high; nginx's workers are
// processes, so by their pids).
struct thread_time {
    std::string name;
    double cpu_s = 0;
    switches sw;
};
std::map<std::string, thread_time> thread_cpu_of(const std::vector<int>& pids) {
    std::map<std::string, thread_time> out;
    for (const int pid : pids) {
        std::error_code ec;
        for (const auto& task :
             std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid), ec)) {
            thread_time t;
            t.cpu_s = stat_cpu_s(read_text(task.path() / "stat"), &t.name);
            if (t.cpu_s < 0) continue;  // the thread ended while we looked
            t.sw = switches_in(read_text(task.path() / "status"));
            out.emplace(fmt::format("{}/{}", pid, task.path().filename().string()), std::move(t));
        }
    }
    return out;
}

// This process's context switches, all threads, ended ones included (the load's threads have
// ended by the time the last sample is taken).
switches own_switches() {
    rusage u{};
    if (getrusage(RUSAGE_SELF, &u) != 0) return {};
    return switches{static_cast<std::uint64_t>(u.ru_nvcsw),
                    static_cast<std::uint64_t>(u.ru_nivcsw)};
}

// Busy CPU seconds of the whole machine, all cores (from the first line of /proc/stat).
double machine_busy_seconds() {
    std::ifstream in("/proc/stat");
    std::string cpu;
    double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
    return (user + nice + system + irq + softirq + steal) /
           static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Where the machine's CPU went during the load: the server's, ours, and everybody else's, so that
// a run on a busy machine says so, and so that CPU per request can be compared across servers.
struct cpu_account {
    double wall_s = 0;
    double machine_busy_s = 0;
    double server_s = 0;
    double client_s = 0;
    switches client_switches;
    bool server_known = false;
    std::map<std::string, thread_time> server_threads;

    static cpu_account now(const std::vector<int>& server_pids) {
        cpu_account a;
        a.server_threads = thread_cpu_of(server_pids);
        a.machine_busy_s = machine_busy_seconds();
        a.client_s = cpu_s_of(getpid());
        a.client_switches = own_switches();
        a.server_known = !server_pids.empty();
        for (const int pid : server_pids) {
            const double c = cpu_s_of(pid);
            if (c < 0) a.server_known = false;
            a.server_s += std::max(0.0, c);
        }
        return a;
    }
};

long rss_kb_of(int pid) {
    std::ifstream in(fmt::format("/proc/{}/status", pid));
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
    }
    return -1;
}

// A customer under load: its token, and for --e2e the placements waiting for their fill.
struct customer {
    std::string id;
    std::string token;
    std::atomic<std::uint64_t> placed{0};  // BUY on even, SELL on odd

    std::mutex mutex;
    std::unordered_map<std::uint64_t, time_point> awaiting_fill;  // trade id -> placement start
    std::unordered_map<std::uint64_t, time_point> early_fills;    // FILLED seen before the ack
};

struct rss_sample {
    std::uint64_t acks = 0;
    long rss_kb = 0;
    double t_s = 0;
};

// What all connections share.
struct run_state {
    options opt;
    tcp::endpoint endpoint;
    std::vector<std::unique_ptr<customer>> customers;
    std::string admin_token;

    time_point start{};         // load start
    time_point measure_from{};  // start + warmup
    time_point deadline{};      // start + duration
    std::atomic<bool> load_started{false};
    std::atomic<std::uint64_t> tickets{0};
    std::atomic<std::uint64_t> setup_next{0};
    std::atomic<std::uint64_t> acks{0};
    std::atomic<int> http_done{0};
    std::atomic<int> ws_ready{0};
    std::atomic<int> ws_failed{0};
    std::atomic<std::int64_t> awaiting_fills{0};
    std::vector<std::atomic<std::uint64_t>> acks_per_s;
    std::vector<std::atomic<std::uint64_t>> fills_per_s;
    // Per second of the run, by when the answer came: the slowest acknowledgement and how many
    // took longer than 2 ms (the latency goal), so a tail can be told apart from a stall.
    std::vector<std::atomic<std::uint64_t>> max_ack_ns_per_s;
    std::vector<std::atomic<std::uint64_t>> slow_acks_per_s;

    std::mutex rss_mutex;
    std::vector<rss_sample> rss;

    [[nodiscard]] bool closed_loop() const { return opt.rate <= 0; }

    // A connection's handlers never run concurrently: with one io thread by construction, with
    // more through a strand (whose lock and reference counting cost the single-threaded default
    // about a tenth of broker-bench's CPU with 1000 streams).
    [[nodiscard]] net::any_io_executor connection_executor(net::io_context& io) const {
        if (opt.threads <= 1) return io.get_executor();
        return net::make_strand(io);
    }

    void count_second(std::vector<std::atomic<std::uint64_t>>& series, time_point t) {
        if (t < start) return;
        const auto s = static_cast<std::size_t>(seconds_between(start, t));
        if (s < series.size()) series[s].fetch_add(1, std::memory_order_relaxed);
    }

    void note_ack_latency(time_point t, std::uint64_t ns) {
        if (t < start) return;
        const auto s = static_cast<std::size_t>(seconds_between(start, t));
        if (s >= max_ack_ns_per_s.size()) return;
        auto& slowest = max_ack_ns_per_s[s];
        auto seen = slowest.load(std::memory_order_relaxed);
        while (ns > seen && !slowest.compare_exchange_weak(seen, ns, std::memory_order_relaxed)) {
        }
        if (ns > 2'000'000) slow_acks_per_s[s].fetch_add(1, std::memory_order_relaxed);
    }

    [[nodiscard]] bool measured(time_point t) const { return t >= measure_from && t < deadline; }

    void sample_rss(std::uint64_t at_acks) {
        if (opt.rss_pid <= 0) return;
        const long kb = rss_kb_of(opt.rss_pid);
        std::lock_guard lock(rss_mutex);
        rss.push_back(rss_sample{at_acks, kb, seconds_between(start, clock_type::now())});
    }
};

enum class job : std::uint8_t { open_customers, place_trades, generic };

// Outcome counts of one connection, merged at the end.
struct outcome_counts {
    std::uint64_t sent = 0;
    std::uint64_t answered = 0;
    std::uint64_t answered_measured = 0;
    std::uint64_t placed = 0;
    std::map<std::string, std::uint64_t> rejected;  // reason -> count
    std::map<unsigned, std::uint64_t> http_status;
    std::uint64_t errors = 0;
    std::uint64_t reconnects = 0;

    void merge(const outcome_counts& o) {
        sent += o.sent;
        answered += o.answered;
        answered_measured += o.answered_measured;
        placed += o.placed;
        for (const auto& [k, v] : o.rejected) rejected[k] += v;
        for (const auto& [k, v] : o.http_status) http_status[k] += v;
        errors += o.errors;
        reconnects += o.reconnects;
    }
};

// One HTTP/1.1 keep-alive connection running one job to its end.
class http_conn : public std::enable_shared_from_this<http_conn> {
  public:
    http_conn(net::io_context& io, run_state& rs, job j, std::size_t index)
        : stream_(rs.connection_executor(io)),
          timer_(stream_.get_executor()),
          rs_(rs),
          job_(j),
          index_(index) {}

    void start() {
        net::dispatch(stream_.get_executor(),
                      beast::bind_front_handler(&http_conn::connect, shared_from_this()));
    }

    histogram latency_ns;  // from when each request was due to its answer (what a user waits)
    // Open loop only, the two parts of latency_ns: how late this client sent each request after
    // it was due (no free connection, or this process waiting for a core), and from the send to
    // the answer (the server, the loopback and this process's reading of the answer).
    histogram send_lag_ns;
    histogram service_ns;
    histogram e2e_ns;
    outcome_counts counts;
    bool done = false;

  private:
    void connect() {
        stream_.expires_after(std::chrono::seconds(10));
        stream_.async_connect(
            rs_.endpoint, beast::bind_front_handler(&http_conn::on_connect, shared_from_this()));
    }

    void on_connect(beast::error_code ec) {
        if (ec) {
            ++counts.errors;
            return finish();
        }
        stream_.socket().set_option(tcp::no_delay(true));
        next();
    }

    void finish() {
        if (done) return;
        done = true;
        beast::error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
        stream_.socket().close(ignored);
        rs_.http_done.fetch_add(1);
    }

    // Takes the next unit of work, or finishes.
    void next() {
        const auto now = clock_type::now();
        if (job_ == job::open_customers) {
            const auto i = rs_.setup_next.fetch_add(1);
            if (i >= rs_.customers.size()) return finish();
            build_open_customer(*rs_.customers[i]);
            return send(now);
        }
        if (now >= rs_.deadline) return finish();
        const auto ticket = rs_.tickets.fetch_add(1);
        if (ticket >= rs_.opt.max_requests) return finish();
        time_point due = now;
        if (!rs_.closed_loop()) {
            due = rs_.start + std::chrono::nanoseconds(static_cast<std::int64_t>(
                                  static_cast<double>(ticket) * 1e9 / rs_.opt.rate));
            if (due >= rs_.deadline) return finish();
        }
        build_load_request();
        if (due > now) {
            timer_.expires_at(due);
            return timer_.async_wait([self = shared_from_this(), due](beast::error_code ec) {
                if (ec) return self->finish();
                self->send(due);
            });
        }
        send(due);
    }

    void build_open_customer(const customer& c) {
        current_ = nullptr;
        req_ = {};
        req_.method(http::verb::put);
        req_.target("/admin/v1/customers/" + c.id);
        req_.version(11);
        req_.set(http::field::host, "bench");
        req_.set(http::field::authorization, rs_.admin_token);
        req_.set(http::field::content_type, "application/json");
        req_.body() = fmt::format(R"({{"cash":"{}","positions":{{"{}":{}}}}})", rs_.opt.cash,
                                  rs_.opt.symbol, rs_.opt.shares);
        req_.keep_alive(true);
        req_.prepare_payload();
    }

    void build_load_request() {
        req_ = {};
        req_.version(11);
        req_.set(http::field::host, "bench");
        req_.keep_alive(true);
        if (job_ == job::generic) {
            current_ = nullptr;
            req_.method_string(rs_.opt.method);
            req_.target(rs_.opt.path.empty() ? "/" : rs_.opt.path);
            if (!rs_.opt.body.empty()) {
                req_.set(http::field::content_type, "application/json");
                req_.body() = rs_.opt.body;
            }
            if (!rs_.admin_token.empty()) req_.set(http::field::authorization, rs_.admin_token);
            req_.prepare_payload();
            return;
        }
        // Connection i serves customers i, i + N, i + 2N, ...: with M >= N each customer has at
        // most one request in flight, as a person tapping "buy" in an app would.
        const std::size_t n = rs_.customers.size();
        const auto stride = static_cast<std::size_t>(rs_.opt.connections);
        std::size_t k = index_ + stride * round_;
        if (k >= n) {
            round_ = 0;
            k = index_ % n;
        }
        ++round_;
        current_ = rs_.customers[k].get();
        const bool buy = (current_->placed.fetch_add(1) % 2) == 0;
        req_.method(http::verb::post);
        req_.target(rs_.opt.path.empty() ? "/v1/trades" : rs_.opt.path);
        req_.set(http::field::authorization, current_->token);
        req_.set(http::field::content_type, "application/json");
        req_.body() = fmt::format(R"({{"symbol":"{}","side":"{}","quantity":1}})", rs_.opt.symbol,
                                  buy ? "BUY" : "SELL");
        req_.prepare_payload();
    }

    void send(time_point due) {
        due_ = due;
        ++counts.sent;
        sent_at_ = clock_type::now();
        if (job_ != job::open_customers && !rs_.closed_loop() && rs_.measured(due)) {
            send_lag_ns.record(ns_between(due, sent_at_));
        }
        stream_.expires_after(std::chrono::seconds(30));
        http::async_write(stream_, req_,
                          beast::bind_front_handler(&http_conn::on_write, shared_from_this()));
    }

    void on_write(beast::error_code ec, std::size_t) {
        if (ec) return failed();
        res_ = {};
        http::async_read(stream_, buffer_, res_,
                         beast::bind_front_handler(&http_conn::on_read, shared_from_this()));
    }

    void on_read(beast::error_code ec, std::size_t) {
        if (ec) return failed();
        const auto now = clock_type::now();
        ++counts.answered;
        const unsigned status = res_.result_int();
        ++counts.http_status[status];
        if (job_ == job::open_customers) {
            latency_ns.record(ns_between(due_, now));
        } else {
            const auto total = rs_.acks.fetch_add(1, std::memory_order_relaxed) + 1;
            if (rs_.opt.rss_every > 0 && total % rs_.opt.rss_every == 0) rs_.sample_rss(total);
            rs_.count_second(rs_.acks_per_s, now);
            rs_.note_ack_latency(now, ns_between(due_, now));
            if (rs_.measured(due_)) {
                ++counts.answered_measured;
                latency_ns.record(ns_between(due_, now));
                if (!rs_.closed_loop()) service_ns.record(ns_between(sent_at_, now));
            }
            if (job_ == job::place_trades) classify_trade(status);
        }
        if (!res_.keep_alive()) return reconnect();
        next();
    }

    void classify_trade(unsigned status) {
        if (status != 201 && status != 200) return;
        const std::string_view body = res_.body();
        const auto trade_status = string_field(body, "status");
        if (trade_status == "REJECTED") {
            const auto reason = string_field(body, "reason");
            ++counts.rejected[std::string(reason.empty() ? "unknown" : reason)];
            return;
        }
        ++counts.placed;
        if (!rs_.opt.e2e || current_ == nullptr) return;
        const auto id = parse_hex_id(string_field(body, "trade_id"));
        if (!id) return;
        std::lock_guard lock(current_->mutex);
        if (auto early = current_->early_fills.find(*id); early != current_->early_fills.end()) {
            if (rs_.measured(due_)) e2e_ns.record(ns_between(due_, early->second));
            current_->early_fills.erase(early);
            return;
        }
        current_->awaiting_fill.emplace(*id, due_);
        rs_.awaiting_fills.fetch_add(1, std::memory_order_relaxed);
    }

    void failed() {
        ++counts.errors;
        reconnect();
    }

    // The server closed the connection (nginx after keepalive_requests, or an error): open a new
    // one, at most a bounded number of times, and only while there is time left.
    void reconnect() {
        beast::error_code ignored;
        stream_.socket().close(ignored);
        buffer_.clear();
        if (++counts.reconnects > 1000 ||
            (job_ != job::open_customers && clock_type::now() >= rs_.deadline)) {
            return finish();
        }
        connect();
    }

    beast::tcp_stream stream_;
    net::steady_timer timer_;
    run_state& rs_;
    job job_;
    std::size_t index_;
    std::size_t round_ = 0;
    customer* current_ = nullptr;
    beast::flat_buffer buffer_;
    http::request<http::string_body> req_;
    http::response<http::string_body> res_;
    time_point due_{};
    time_point sent_at_{};
};

// One WebSocket stream of a customer's trade updates, for end-to-end latency.
class ws_conn : public std::enable_shared_from_this<ws_conn> {
  public:
    ws_conn(net::io_context& io, run_state& rs, customer& c)
        : ws_(rs.connection_executor(io)), rs_(rs), customer_(c) {}

    void start() {
        net::dispatch(ws_.get_executor(), [self = shared_from_this()] {
            beast::get_lowest_layer(self->ws_).expires_after(std::chrono::seconds(30));
            beast::get_lowest_layer(self->ws_).async_connect(
                self->rs_.endpoint,
                beast::bind_front_handler(&ws_conn::on_connect, self->shared_from_this()));
        });
    }

    void stop() {
        net::post(ws_.get_executor(), [self = shared_from_this()] {
            beast::error_code ignored;
            beast::get_lowest_layer(self->ws_).socket().close(ignored);
        });
    }

    histogram e2e_ns;
    std::uint64_t fills = 0;
    std::uint64_t fills_measured = 0;
    std::uint64_t exchange_rejects = 0;
    std::uint64_t messages = 0;

  private:
    void on_connect(beast::error_code ec) {
        if (ec) return fail();
        beast::get_lowest_layer(ws_).socket().set_option(tcp::no_delay(true));
        beast::get_lowest_layer(ws_).expires_never();
        ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
        const std::string auth = customer_.token;
        ws_.set_option(websocket::stream_base::decorator(
            [auth](websocket::request_type& req) { req.set(http::field::authorization, auth); }));
        ws_.async_handshake(
            fmt::format("{}:{}", rs_.endpoint.address().to_string(), rs_.endpoint.port()),
            "/v1/stream", beast::bind_front_handler(&ws_conn::on_handshake, shared_from_this()));
    }

    void on_handshake(beast::error_code ec) {
        if (ec) return fail();
        rs_.ws_ready.fetch_add(1);
        read();
    }

    void fail() { rs_.ws_failed.fetch_add(1); }

    void read() {
        ws_.async_read(buffer_, beast::bind_front_handler(&ws_conn::on_read, shared_from_this()));
    }

    void on_read(beast::error_code ec, std::size_t) {
        if (ec) return;  // closed at the end of the run, or by the server
        const auto now = clock_type::now();
        ++messages;
        const auto data = buffer_.cdata();
        const std::string_view msg(static_cast<const char*>(data.data()), data.size());
        const auto status = string_field(msg, "status");
        if (status == "FILLED" || status == "REJECTED") settle(msg, status == "FILLED", now);
        buffer_.consume(buffer_.size());
        read();
    }

    void settle(std::string_view msg, bool filled, time_point now) {
        const auto id = parse_hex_id(string_field(msg, "trade_id"));
        if (!id) return;
        if (filled) {
            ++fills;
            rs_.count_second(rs_.fills_per_s, now);
            if (rs_.measured(now)) ++fills_measured;
        } else {
            ++exchange_rejects;
        }
        std::lock_guard lock(customer_.mutex);
        auto it = customer_.awaiting_fill.find(*id);
        if (it == customer_.awaiting_fill.end()) {
            // The FILLED update overtook the HTTP answer on the client side: park it for the ack.
            if (filled && rs_.load_started.load()) customer_.early_fills.emplace(*id, now);
            return;
        }
        if (filled && rs_.measured(it->second)) e2e_ns.record(ns_between(it->second, now));
        customer_.awaiting_fill.erase(it);
        rs_.awaiting_fills.fetch_sub(1, std::memory_order_relaxed);
    }

    websocket::stream<beast::tcp_stream> ws_;
    run_state& rs_;
    customer& customer_;
    beast::flat_buffer buffer_;
};

std::string latency_json(const histogram& h) {
    auto us = [&](double q) { return static_cast<double>(h.quantile(q)) / 1000.0; };
    return fmt::format(
        R"({{"count":{},"min":{:.1f},"mean":{:.1f},"p50":{:.1f},"p90":{:.1f},"p99":{:.1f},)"
        R"("p99_9":{:.1f},"p99_99":{:.1f},"max":{:.1f}}})",
        h.count(), static_cast<double>(h.min()) / 1000.0, h.mean() / 1000.0, us(0.5), us(0.9),
        us(0.99), us(0.999), us(0.9999), static_cast<double>(h.max()) / 1000.0);
}

// [[lowest_us, count], ...] of the non-empty buckets.
std::string buckets_json(const histogram& h) {
    std::string out = "[";
    for (const auto& [low, n] : h.buckets()) {
        if (out.size() > 1) out += ',';
        out += fmt::format("[{:.3f},{}]", static_cast<double>(low) / 1000.0, n);
    }
    return out + "]";
}

// The percentile spectrum, as HdrHistogram plots it: value at 1 - 10^(-k/10) for k = 0..50.
std::string spectrum_json(const histogram& h) {
    std::string out = "[";
    for (int k = 0; k <= 50; ++k) {
        const double q = 1.0 - std::pow(10.0, -static_cast<double>(k) / 10.0);
        if (h.count() > 0 && (1.0 - q) * static_cast<double>(h.count()) < 0.5) break;
        if (out.size() > 1) out += ',';
        out +=
            fmt::format("[{:.6f},{:.1f}]", q * 100.0, static_cast<double>(h.quantile(q)) / 1000.0);
    }
    if (out.size() > 1) out += ',';
    out += fmt::format("[100.0,{:.1f}]", static_cast<double>(h.max()) / 1000.0);
    return out + "]";
}

std::string map_json(const std::map<std::string, std::uint64_t>& m) {
    std::string out = "{";
    for (const auto& [k, v] : m) {
        if (out.size() > 1) out += ',';
        out += fmt::format(R"("{}":{})", k, v);
    }
    return out + "}";
}

std::string status_json(const std::map<unsigned, std::uint64_t>& m) {
    std::string out = "{";
    for (const auto& [k, v] : m) {
        if (out.size() > 1) out += ',';
        out += fmt::format(R"("{}":{})", k, v);
    }
    return out + "}";
}

options parse(int argc, char** argv) {
    options o;
    CLI::App app{"broker-bench: HTTP/1.1 keep-alive load generator for brokerd's PlaceTrade"};
    app.add_option("--target", o.target, "server HOST:PORT (loopback)")->capture_default_str();
    app.add_flag("--allow-remote", o.allow_remote,
                 "let --target be an address off this machine (refused otherwise)");
    app.add_option("--connections", o.connections, "keep-alive connections")
        ->check(CLI::Range(1, 10'000))
        ->capture_default_str();
    app.add_option("--customers", o.customers, "customers to spread trades over")
        ->check(CLI::Range(std::size_t{1}, std::size_t{10'000'000}))
        ->capture_default_str();
    app.add_option("--duration-s", o.duration_s, "load duration, seconds (0: setup only)")
        ->check(broker::cli::finite_range(0.0, 86'400.0))
        ->capture_default_str();
    app.add_option("--warmup-s", o.warmup_s, "seconds at the start not counted in the results")
        ->check(broker::cli::finite_range(0.0, 3'600.0))
        ->capture_default_str();
    app.add_option("--rate", o.rate, "requests/s over all connections; 0 = closed loop")
        ->check(broker::cli::finite_range(0.0, 1e8))
        ->capture_default_str();
    app.add_option("--threads", o.threads, "io threads")
        ->check(CLI::Range(1, 64))
        ->capture_default_str();
    app.add_option("--mode", o.mode, "trade: PlaceTrade as customers; http: --method/--path/--body")
        ->check(CLI::IsMember({"trade", "http"}))
        ->capture_default_str();
    app.add_option("--method", o.method, "http mode: request method")->capture_default_str();
    app.add_option("--path", o.path, "request target (trade mode default: /v1/trades)");
    app.add_option("--body", o.body, "http mode: request body");
    app.add_option("--jwt-secret", o.jwt_secret, "HS256 secret to mint customer and admin tokens")
        ->envname("BROKER_JWT_SECRET");
    app.add_option("--customer-prefix", o.customer_prefix, "customer ids are PREFIX + number")
        ->capture_default_str();
    app.add_flag("--open-customers", o.open_customers,
                 "first open the customers with PUT /admin/v1/customers/{id}");
    app.add_option("--cash", o.cash, "opening cash per customer")->capture_default_str();
    app.add_option("--shares", o.shares, "opening shares of --symbol per customer")
        ->capture_default_str();
    app.add_option("--symbol", o.symbol, "symbol traded")->capture_default_str();
    app.add_flag("--e2e", o.e2e, "subscribe /v1/stream per customer; measure placement->FILLED");
    app.add_option("--max-requests", o.max_requests, "stop after this many requests")
        ->capture_default_str();
    app.add_option("--drain-s", o.drain_s,
                   "after the load, wait at most this long for answers "
                   "and fills")
        ->check(broker::cli::finite_range(0.0, 600.0))
        ->capture_default_str();
    app.add_option("--rss-pid", o.rss_pid, "sample this process's RSS during the load");
    app.add_option("--server-pid", o.server_pids,
                   "measure the CPU time of these processes, and of each of their threads, "
                   "over the load (repeatable)");
    app.add_option("--server-counter", o.server_counters,
                   "read this counter from the target's /metrics before and after the load and "
                   "report how much it grew (repeatable)");
    app.add_option("--rss-every", o.rss_every, "sample RSS every N acknowledged requests");
    app.add_option("--out", o.out, "write results JSON here");
    app.add_option("--label", o.label, "a name for this run in the JSON");
    app.add_flag("--quiet", o.quiet, "no progress lines on stderr");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        std::exit(app.exit(e));
    }
    if (o.mode == "trade" && o.jwt_secret.empty()) die("trade mode needs --jwt-secret");
    if (o.open_customers && o.jwt_secret.empty()) die("--open-customers needs --jwt-secret");
    if (o.e2e && o.mode != "trade") die("--e2e needs --mode trade");
    if (o.e2e && o.customers > 50'000) die("--e2e opens a WebSocket per customer: at most 50000");
    if (o.warmup_s >= o.duration_s && o.duration_s > 0)
        die("--warmup-s must be below --duration-s");
    o.setup_only = o.duration_s == 0;
    return o;
}

tcp::endpoint resolve(const std::string& target) {
    const auto colon = target.rfind(':');
    if (colon == std::string::npos) die(fmt::format("--target '{}' is not HOST:PORT", target));
    std::string host = target.substr(0, colon);
    if (host == "localhost") host = "127.0.0.1";
    beast::error_code ec;
    const auto address = net::ip::make_address(host, ec);
    if (ec) die(fmt::format("--target: '{}' is not an IP address", host));
    int port = 0;
    try {
        port = std::stoi(target.substr(colon + 1));
    } catch (...) {
        die(fmt::format("--target: bad port in '{}'", target));
    }
    if (port <= 0 || port > 65535) die(fmt::format("--target: bad port in '{}'", target));
    return {address, static_cast<unsigned short>(port)};
}

// The values of the named counters on the target's Prometheus text endpoint (GET /metrics), in
// the order asked; nullopt for one the answer does not have, or for all when it cannot be read.
// A counter line is "name value" or "name{labels} value"; labelled series are summed.
std::vector<std::optional<double>> read_counters(const tcp::endpoint& at,
                                                 const std::vector<std::string>& names) {
    std::vector<std::optional<double>> values(names.size());
    if (names.empty()) return values;
    // Asynchronous, under one deadline: a server that stops answering must not hang the report
    // (a blocking socket's receive timeout would not do: Asio waits on past it).
    net::io_context io;
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(5));
    http::request<http::empty_body> req{http::verb::get, "/metrics", 11};
    req.set(http::field::host, "bench");
    req.keep_alive(false);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(16 << 20);
    bool read = false;
    stream.async_connect(at, [&](beast::error_code connected) {
        if (connected) return;
        http::async_write(stream, req, [&](beast::error_code written, std::size_t) {
            if (written) return;
            http::async_read(stream, buffer, parser,
                             [&](beast::error_code got, std::size_t) { read = !got; });
        });
    });
    io.run();
    if (!read || parser.get().result() != http::status::ok) return values;
    std::istringstream lines(parser.get().body());
    std::string line;
    while (std::getline(lines, line)) {
        if (line.empty() || line[0] == '#') continue;
        for (std::size_t i = 0; i < names.size(); ++i) {
            const std::string& n = names[i];
            if (line.size() <= n.size() || line.compare(0, n.size(), n) != 0) continue;
            if (line[n.size()] != ' ' && line[n.size()] != '{') continue;
            const auto space = line.rfind(' ');
            char* end = nullptr;
            const double v = std::strtod(line.c_str() + space + 1, &end);
            if (end == line.c_str() + space + 1) continue;
            values[i] = values[i].value_or(0) + v;
        }
    }
    return values;
}

// The 1-minute load average, as JSON.
std::string read_loadavg() {
    std::ifstream in("/proc/loadavg");
    double one = -1;
    in >> one;
    return one < 0 ? "null" : fmt::format("{:.2f}", one);
}

void raise_fd_limit() {
    rlimit r{};
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &r);
    }
}

// Runs io threads until `until` says the phase is over or `limit` passes.
template <class Until>
void run_phase(net::io_context& io, int threads, Until until, time_point limit,
               const std::function<void()>& progress) {
    io.restart();
    auto guard = net::make_work_guard(io);
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
    auto last_progress = clock_type::now();
    while (!until() && clock_type::now() < limit) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (progress && clock_type::now() - last_progress >= std::chrono::seconds(5)) {
            last_progress = clock_type::now();
            progress();
        }
    }
    guard.reset();
    io.stop();
    for (auto& t : pool) t.join();
}

}  // namespace
}  // namespace broker::bench

int main(int argc, char** argv) {
    using namespace broker::bench;
    raise_fd_limit();
    run_state rs;
    rs.opt = parse(argc, argv);
    const options& opt = rs.opt;
    rs.endpoint = resolve(opt.target);
    if (!rs.endpoint.address().is_loopback() && !opt.allow_remote) {
        die(fmt::format("--target {} is not a loopback address (--allow-remote to load another "
                        "machine)",
                        opt.target));
    }

    // Tokens: one admin token for setup, one customer token each (HS256, valid for a day).
    const std::int64_t now_s = unix_s();
    if (!opt.jwt_secret.empty()) {
        rs.admin_token =
            "Bearer " +
            broker::api::sign_jwt(broker::api::claims{"bench-ops", "admin", now_s + 86'400, now_s},
                                  opt.jwt_secret);
    }
    rs.customers.reserve(opt.customers);
    const bool need_tokens = opt.mode == "trade" && !opt.setup_only;
    for (std::size_t i = 0; i < opt.customers; ++i) {
        auto c = std::make_unique<customer>();
        // Fixed width, so that a run over the first N customers names the same ones a setup of more
        // did.
        c->id = fmt::format("{}{:08}", opt.customer_prefix, i);
        if (need_tokens) {
            c->token = "Bearer " +
                       broker::api::sign_jwt(broker::api::claims{c->id, "", now_s + 86'400, now_s},
                                             opt.jwt_secret);
        }
        rs.customers.push_back(std::move(c));
    }
    if (opt.mode == "http") rs.admin_token.clear();  // generic requests carry no token

    net::io_context io(opt.threads);
    const auto say = [&](const std::string& line) {
        if (!opt.quiet) fmt::print(stderr, "broker-bench: {}\n", line);
    };

    // 1. Setup: open the customers.
    std::string setup_json = "null";
    bool setup_failed = false;
    if (opt.open_customers) {
        std::vector<std::shared_ptr<http_conn>> conns;
        const auto t0 = clock_type::now();
        rs.http_done = 0;
        for (int i = 0; i < opt.connections; ++i) {
            conns.push_back(std::make_shared<http_conn>(io, rs, job::open_customers,
                                                        static_cast<std::size_t>(i)));
            conns.back()->start();
        }
        run_phase(
            io, opt.threads, [&] { return rs.http_done.load() >= opt.connections; },
            t0 + std::chrono::hours(2),
            [&] {
                say(fmt::format("opening customers: {} of {}",
                                std::min<std::uint64_t>(rs.setup_next.load(), opt.customers),
                                opt.customers));
            });
        const double secs = seconds_between(t0, clock_type::now());
        histogram lat;
        outcome_counts counts;
        for (auto& c : conns) {
            lat.merge(c->latency_ns);
            counts.merge(c->counts);
        }
        const std::uint64_t ok = counts.http_status[200] + counts.http_status[201];
        setup_json = fmt::format(
            R"({{"customers":{},"opened_ok":{},"seconds":{:.3f},"per_s":{:.1f},"http_status":{},)"
            R"("errors":{},"latency_us":{}}})",
            opt.customers, ok, secs, static_cast<double>(ok) / secs,
            status_json(counts.http_status), counts.errors, latency_json(lat));
        say(fmt::format("opened {} customers in {:.1f} s ({:.0f}/s)", ok, secs,
                        static_cast<double>(ok) / secs));
        if (ok != opt.customers) {
            fmt::print(stderr, "broker-bench: opened {} of {} customers (HTTP status: {})\n", ok,
                       opt.customers, status_json(counts.http_status));
            setup_failed = true;
        }
    }

    // 2. Streams for end-to-end latency.
    std::vector<std::shared_ptr<ws_conn>> streams;
    if (opt.e2e && !opt.setup_only) {
        for (auto& c : rs.customers) {
            streams.push_back(std::make_shared<ws_conn>(io, rs, *c));
            streams.back()->start();
        }
        const auto t0 = clock_type::now();
        run_phase(
            io, opt.threads,
            [&] {
                return rs.ws_ready.load() + rs.ws_failed.load() >= static_cast<int>(streams.size());
            },
            t0 + std::chrono::seconds(60), nullptr);
        say(fmt::format("{} streams subscribed, {} failed", rs.ws_ready.load(),
                        rs.ws_failed.load()));
    }

    // 3. The load.
    std::vector<std::shared_ptr<http_conn>> conns;
    double drain_used_s = 0;
    std::optional<time_point> load_end;  // when the last connection finished
    cpu_account cpu_before;
    cpu_account cpu_after;
    std::vector<std::optional<double>> counters_before(opt.server_counters.size());
    std::vector<std::optional<double>> counters_after(opt.server_counters.size());
    std::string loadavg_before = "null";
    std::string loadavg_after = "null";
    if (!opt.setup_only) {
        const auto window = std::chrono::duration<double>(opt.duration_s);
        rs.acks_per_s = std::vector<std::atomic<std::uint64_t>>(
            static_cast<std::size_t>(opt.duration_s + opt.drain_s) + 2);
        rs.fills_per_s = std::vector<std::atomic<std::uint64_t>>(rs.acks_per_s.size());
        rs.max_ack_ns_per_s = std::vector<std::atomic<std::uint64_t>>(rs.acks_per_s.size());
        rs.slow_acks_per_s = std::vector<std::atomic<std::uint64_t>>(rs.acks_per_s.size());
        rs.start = clock_type::now();
        rs.measure_from = rs.start + std::chrono::duration_cast<clock_type::duration>(
                                         std::chrono::duration<double>(opt.warmup_s));
        rs.deadline = rs.start + std::chrono::duration_cast<clock_type::duration>(window);
        rs.load_started = true;
        rs.sample_rss(0);
        counters_before = read_counters(rs.endpoint, opt.server_counters);
        cpu_before = cpu_account::now(opt.server_pids);
        loadavg_before = read_loadavg();
        rs.http_done = 0;
        const job j = opt.mode == "trade" ? job::place_trades : job::generic;
        for (int i = 0; i < opt.connections; ++i) {
            conns.push_back(std::make_shared<http_conn>(io, rs, j, static_cast<std::size_t>(i)));
            conns.back()->start();
        }
        const auto drain_limit = rs.deadline + std::chrono::duration_cast<clock_type::duration>(
                                                   std::chrono::duration<double>(opt.drain_s));
        run_phase(
            io, opt.threads,
            [&] {
                const bool http_over = rs.http_done.load() >= opt.connections;
                if (http_over && !load_end) load_end = clock_type::now();
                const bool fills_over = !opt.e2e || rs.awaiting_fills.load() <= 0;
                return http_over && fills_over;
            },
            drain_limit,
            [&] {
                say(fmt::format("{:.0f} s: {} answers",
                                seconds_between(rs.start, clock_type::now()), rs.acks.load()));
            });
        if (!load_end) load_end = clock_type::now();
        // A run bounded by --max-requests ends before its deadline: drain counts from the end.
        drain_used_s =
            std::max(0.0, seconds_between(std::min(rs.deadline, *load_end), clock_type::now()));
        rs.sample_rss(rs.acks.load());
        cpu_after = cpu_account::now(opt.server_pids);
        counters_after = read_counters(rs.endpoint, opt.server_counters);
        loadavg_after = read_loadavg();
    }

    // 4. Results.
    histogram lat;
    histogram send_lag;
    histogram service;
    histogram e2e;
    outcome_counts counts;
    for (auto& c : conns) {
        lat.merge(c->latency_ns);
        send_lag.merge(c->send_lag_ns);
        service.merge(c->service_ns);
        e2e.merge(c->e2e_ns);
        counts.merge(c->counts);
    }
    std::uint64_t fills = 0;
    std::uint64_t fills_measured = 0;
    std::uint64_t exchange_rejects = 0;
    for (auto& s : streams) {
        e2e.merge(s->e2e_ns);
        fills += s->fills;
        fills_measured += s->fills_measured;
        exchange_rejects += s->exchange_rejects;
    }
    // The measured window: from the end of the warm-up to the deadline, or to the end of the
    // load when --max-requests ended it sooner.
    const double load_s =
        opt.setup_only ? 0.0 : std::min(opt.duration_s, seconds_between(rs.start, *load_end));
    const double window_s = std::max(1e-9, load_s - opt.warmup_s);
    const double throughput = static_cast<double>(counts.answered_measured) / window_s;

    std::string timeline = "[";
    for (std::size_t s = 0; s < rs.acks_per_s.size(); ++s) {
        const auto a = rs.acks_per_s[s].load();
        const auto f = rs.fills_per_s[s].load();
        if (static_cast<double>(s) >= load_s && a == 0 && f == 0) break;
        if (timeline.size() > 1) timeline += ',';
        timeline += fmt::format(R"({{"t":{},"acks":{},"fills":{},"max_ack_ms":{:.3f},"acks_over_2ms":{}}})",
                                s, a, f, static_cast<double>(rs.max_ack_ns_per_s[s].load()) / 1e6,
                                rs.slow_acks_per_s[s].load());
    }
    timeline += "]";

    std::string rss = "[";
    for (const auto& r : rs.rss) {
        if (rss.size() > 1) rss += ',';
        rss += fmt::format(R"({{"acks":{},"rss_kb":{},"t":{:.3f}}})", r.acks, r.rss_kb, r.t_s);
    }
    rss += "]";

    std::string e2e_json = "null";
    if (opt.e2e) {
        std::uint64_t unresolved = 0;
        for (auto& c : rs.customers) {
            std::lock_guard lock(c->mutex);
            unresolved += c->awaiting_fill.size();
        }
        e2e_json = fmt::format(
            R"({{"streams":{},"stream_failures":{},"fills":{},"fills_measured":{},)"
            R"("fills_per_s":{:.1f},"exchange_rejects":{},"unresolved_at_end":{},"latency_us":{},)"
            R"("latency_spectrum":{}}})",
            rs.ws_ready.load(), rs.ws_failed.load(), fills, fills_measured,
            static_cast<double>(fills_measured) / window_s, exchange_rejects, unresolved,
            latency_json(e2e), spectrum_json(e2e));
    }

    std::string cpu_json = "null";
    if (!opt.setup_only) {
        const double wall = std::max(1e-9, seconds_between(rs.start, clock_type::now()));
        const double busy = cpu_after.machine_busy_s - cpu_before.machine_busy_s;
        const double client = cpu_after.client_s - cpu_before.client_s;
        const double server = cpu_after.server_s - cpu_before.server_s;
        const bool known = cpu_before.server_known && cpu_after.server_known;
        const double cores = static_cast<double>(std::max(1u, std::thread::hardware_concurrency()));
        // Per thread name: what each thread used over the load, and per answered request.
        // Threads that ended during the load are missing here but counted in server_s.
        // A thread that started during the load counts from zero.
        const auto grew = [](std::uint64_t after, std::uint64_t before) {
            return after >= before ? after - before : 0;
        };
        std::map<std::string, double> by_name;
        std::map<std::string, switches> switches_by_name;
        for (const auto& [key, after] : cpu_after.server_threads) {
            double before = 0;
            switches sw_before;
            if (const auto it = cpu_before.server_threads.find(key);
                it != cpu_before.server_threads.end()) {
                before = it->second.cpu_s;
                sw_before = it->second.sw;
            }
            // A thread name is 15 bytes the program chose; keep the JSON valid whatever they are.
            std::string name = after.name;
            for (char& c : name) {
                if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') c = '_';
            }
            by_name[name] += std::max(0.0, after.cpu_s - before);
            auto& sw = switches_by_name[name];
            sw.voluntary += grew(after.sw.voluntary, sw_before.voluntary);
            sw.involuntary += grew(after.sw.involuntary, sw_before.involuntary);
        }
        std::vector<std::pair<std::string, double>> ranked(by_name.begin(), by_name.end());
        std::stable_sort(ranked.begin(), ranked.end(),
                         [](const auto& a, const auto& b) { return a.second > b.second; });
        std::string threads = "[";
        double threads_s = 0;
        for (const auto& [name, cpu] : ranked) {
            if (threads.size() > 1) threads += ',';
            const auto& sw = switches_by_name[name];
            threads += fmt::format(
                R"({{"name":"{}","cpu_s":{:.3f},"us_per_request":{},)"
                R"("voluntary_switches":{},"involuntary_switches":{}}})",
                name, cpu,
                counts.answered > 0
                    ? fmt::format("{:.2f}", cpu * 1e6 / static_cast<double>(counts.answered))
                    : "null",
                sw.voluntary, sw.involuntary);
            threads_s += cpu;
        }
        threads += ']';
        cpu_json = fmt::format(
            R"({{"wall_s":{:.3f},"cores":{},"machine_busy_s":{:.3f},"client_s":{:.3f},)"
            R"("client_voluntary_switches":{},"client_involuntary_switches":{},)"
            R"("server_s":{},"others_s":{},"others_share":{},"server_us_per_request":{},)"
            R"("server_threads":{},"server_threads_ended_s":{}}})",
            wall, cores, busy, client,
            grew(cpu_after.client_switches.voluntary, cpu_before.client_switches.voluntary),
            grew(cpu_after.client_switches.involuntary, cpu_before.client_switches.involuntary),
            known ? fmt::format("{:.3f}", server) : "null",
            known ? fmt::format("{:.3f}", busy - client - server) : "null",
            known ? fmt::format("{:.3f}", (busy - client - server) / (cores * wall)) : "null",
            known && counts.answered > 0
                ? fmt::format("{:.2f}", server * 1e6 / static_cast<double>(counts.answered))
                : "null",
            known ? threads : "null", known ? fmt::format("{:.3f}", server - threads_s) : "null");
    }

    std::string counters_json = "{";
    for (std::size_t i = 0; i < opt.server_counters.size(); ++i) {
        if (counters_json.size() > 1) counters_json += ',';
        const auto& a = counters_before[i];
        const auto& b = counters_after[i];
        // A name may carry labels in quotes; a growth may be a fraction (a histogram's sum).
        counters_json += fmt::format(R"("{}":{})", broker::api::json_escape(opt.server_counters[i]),
                                     a && b ? fmt::format("{}", *b - *a) : "null");
    }
    counters_json += '}';

    const std::string json = fmt::format(
        R"({{"label":"{}","mode":"{}","target":"{}","connections":{},"customers":{},"threads":{},)"
        R"("closed_loop":{},"rate_target":{:.1f},"duration_s":{:.1f},"warmup_s":{:.1f},)"
        R"("load_s":{:.3f},"measured_s":{:.3f},"drain_s":{:.2f},"sent":{},"answered":{},"answered_measured":{},)"
        R"("throughput_per_s":{:.1f},"placed":{},"rejected":{},"http_status":{},"errors":{},)"
        R"("reconnects":{},"latency_us":{},"latency_spectrum":{},"latency_histogram":{},)"
        R"("send_lag_us":{},"service_us":{},"e2e":{},"setup":{},"cpu":{},"server_counters":{},)"
        R"("loadavg":[{},{}],"timeline":{},"rss":{}}})"
        "\n",
        broker::api::json_escape(opt.label), broker::api::json_escape(opt.mode),
        broker::api::json_escape(opt.target), opt.connections, opt.customers, opt.threads,
        rs.closed_loop() ? "true" : "false", opt.rate, opt.duration_s, opt.warmup_s, load_s,
        window_s, drain_used_s, counts.sent, counts.answered, counts.answered_measured, throughput,
        counts.placed, map_json(counts.rejected), status_json(counts.http_status), counts.errors,
        counts.reconnects, latency_json(lat), spectrum_json(lat), buckets_json(lat),
        rs.closed_loop() ? std::string("null") : latency_json(send_lag),
        rs.closed_loop() ? std::string("null") : latency_json(service), e2e_json, setup_json,
        cpu_json, counters_json, loadavg_before, loadavg_after, timeline, rss);
    if (!opt.out.empty()) {
        std::ofstream f(opt.out);
        f << json;
        if (!f) die(fmt::format("cannot write {}", opt.out));
    } else {
        fmt::print("{}", json);
    }
    if (!opt.setup_only) {
        say(fmt::format(
            "{}: {:.0f} req/s, p50 {:.0f} us, p99 {:.0f} us, p99.9 {:.0f} us, max {:.0f} us, "
            "errors {}{}",
            opt.label.empty() ? opt.target : opt.label, throughput,
            static_cast<double>(lat.quantile(0.5)) / 1000.0,
            static_cast<double>(lat.quantile(0.99)) / 1000.0,
            static_cast<double>(lat.quantile(0.999)) / 1000.0,
            static_cast<double>(lat.max()) / 1000.0, counts.errors,
            opt.e2e ? fmt::format(", fills {:.0f}/s, e2e p50 {:.0f} us p99 {:.0f} us",
                                  static_cast<double>(fills_measured) / window_s,
                                  static_cast<double>(e2e.quantile(0.5)) / 1000.0,
                                  static_cast<double>(e2e.quantile(0.99)) / 1000.0)
                    : std::string{}));
    }
    // Close the streams politely before the io_context goes away.
    for (auto& s : streams) s->stop();
    io.restart();
    io.run_for(std::chrono::milliseconds(200));
    if (setup_failed) return 1;
    if (opt.setup_only) return 0;
    std::uint64_t answered_2xx = 0;
    for (const auto& [status, n] : counts.http_status) {
        if (status >= 200 && status < 300) answered_2xx += n;
    }
    if (counts.answered == 0) {
        fmt::print(stderr, "broker-bench: nothing was answered ({} connection errors)\n",
                   counts.errors);
        return 1;
    }
    if (answered_2xx != counts.answered) {
        fmt::print(stderr,
                   "broker-bench: {} of {} answers were not 2xx (HTTP status: {}): the run "
                   "measured failures, not the server\n",
                   counts.answered - answered_2xx, counts.answered,
                   status_json(counts.http_status));
        return 1;
    }
    return 0;
}
