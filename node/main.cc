// brokerd: the composition root. Parses the command line, opens and recovers the journal, wires
// the engine runner, the exchange gateway and the HTTP server, and runs until SIGINT/SIGTERM.
#include <fmt/format.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/statvfs.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <future>
#include <iterator>
#include <limits>
#include <thread>

#include "api/jwt.h"
#include "api/router.h"
#include "api/server.h"
#include "api/stream_session.h"
#include "engine/market_calendar.h"
#include "exchange/http_gateway.h"
#include "exchange/signature.h"
#include "exchange/simulator.h"
#include "journal/store.h"
#include "node/demo.h"
#include "node/engine_runner.h"
#include "node/io_pool.h"
#include "node/latency_slice.h"
#include "tools/cli_checks.h"

namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

struct options {
    std::string data_dir;
    std::string listen = "127.0.0.1:8080";
    std::string exchange = "sim";
    bool demo = false;
    std::string jwt_secret;
    std::string exchange_secret;
    std::string exchange_address;  // --exchange's host, resolved at start (networked only)
    int io_threads = 2;
    std::int64_t collar_bps = broker::limits::collar_bps_default;
    broker::exchange::simulator_config sim;
    std::string callback_url;
    std::string market_hours;  // always | nyse; empty: by exchange kind
    std::string holidays_file;
    std::int64_t watchdog_ms = 5'000;
    std::int64_t placed_max_age_ms = 300'000;
    std::int64_t min_free_disk_mb = 256;
    std::uint64_t snapshot_every_events = 500'000;
    int round_interval_us = 0;
    double rate_limit_per_s = 100;
    double rate_limit_burst = 200;
    broker::api::server_config server;
};

[[noreturn]] void die(const std::string& reason) {
    fmt::print(stderr, "brokerd: {}\n", reason);
    std::exit(2);
}

std::optional<tcp::endpoint> parse_endpoint(const std::string& text) {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos) return std::nullopt;
    std::string host = text.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    boost::system::error_code ec;
    const auto address = net::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
    if (ec) return std::nullopt;
    int port = 0;
    try {
        port = std::stoi(text.substr(colon + 1));
    } catch (...) {
        return std::nullopt;
    }
    if (port < 0 || port > 65535) return std::nullopt;
    return tcp::endpoint(address, static_cast<unsigned short>(port));
}

constexpr std::size_t jwt_secret_min_bytes = 32;

std::string random_secret() {
    unsigned char bytes[32];
    if (RAND_bytes(bytes, sizeof bytes) != 1) die("no randomness for the exchange secret");
    std::string hex;
    for (const unsigned char b : bytes) hex += fmt::format("{:02x}", b);
    return hex;
}

// What --callback-url takes: http://HOST:PORT/PATH in visible ASCII, with no quote or backslash
// (it goes into every order's JSON as it is). Checked at start, so that a typo is one line and
// exit 2, not every trade rejected by the exchange.
bool callback_url_ok(std::string_view url) {
    for (const char c : url) {
        if (c <= ' ' || c > '~' || c == '"' || c == '\\') return false;
    }
    constexpr std::string_view scheme = "http://";
    if (!url.starts_with(scheme)) return false;
    const std::size_t path = url.find('/', scheme.size());
    if (path == std::string_view::npos) return false;
    return broker::exchange::parse_http_origin(url.substr(0, path)).has_value();
}

options parse(int argc, char** argv) {
    options o;
    CLI::App app{"brokerd: a durable, event-sourced stockbroker backend"};
    app.add_option("--data-dir", o.data_dir, "journal directory (created when missing)")->required();
    app.add_option("--listen", o.listen, "HTTP address, HOST:PORT")->capture_default_str();
    app.add_option("--exchange", o.exchange,
                   "'sim' (the embedded SIMULATED exchange) or http://HOST:PORT (a networked one)")
        ->capture_default_str();
    app.add_option("--callback-url", o.callback_url,
                   "where a networked exchange sends callbacks (default: from --listen)");
    app.add_option("--market-hours", o.market_hours,
                   "always | nyse (default: always with the simulator, nyse otherwise)")
        ->check(CLI::IsMember({"always", "nyse"}));
    app.add_option("--holidays", o.holidays_file,
                   "extra NYSE holidays and early closes, one 'YYYY-MM-DD holiday|early_close' a line")
        ->check(CLI::ExistingFile);
    app.add_option("--watchdog-ms", o.watchdog_ms,
                   "reconcile trades at the exchange this long without news (asked again after "
                   "twice as long each time, up to 8 times this)")
        ->check(CLI::Range(std::int64_t{100}, std::int64_t{3'600'000}))
        ->capture_default_str();
    app.add_option("--placed-max-age-ms", o.placed_max_age_ms,
                   "reject trades still waiting to be sent after this long (reason expired)")
        ->check(CLI::Range(std::int64_t{1'000}, std::int64_t{86'400'000}))->capture_default_str();
    app.add_flag("--demo", o.demo, "open funded demo customers and print a curl line");
    app.add_option("--jwt-secret", o.jwt_secret,
                   "HS256 secret for client tokens, at least 32 bytes")
        ->envname("BROKER_JWT_SECRET");
    app.add_option("--exchange-secret", o.exchange_secret,
                   "HMAC secret of exchange callbacks, at least 32 bytes (embedded exchange: "
                   "random when unset)")
        ->envname("BROKER_EXCHANGE_SECRET");
    app.add_option("--io-threads", o.io_threads, "HTTP threads")->check(CLI::Range(1, 64))
        ->capture_default_str();
    app.add_option("--collar-bps", o.collar_bps, "price collar on market buys, basis points")
        ->check(CLI::Range(std::int64_t{0}, broker::limits::collar_bps_max))->capture_default_str();
    app.add_option("--min-free-disk-mb", o.min_free_disk_mb,
                   "refuse new requests (503) while the journal's disk has less free space")
        ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 30))->capture_default_str();
    app.add_option("--snapshot-every-events", o.snapshot_every_events,
                   "snapshot the engine state every N journal events and on a clean stop, so a "
                   "restart replays at most N events; 0 never snapshots")
        ->check(broker::cli::unsigned_64())
        ->capture_default_str();
    app.add_option("--round-interval-us", o.round_interval_us,
                   "start engine rounds (each one journal commit) at least this far apart, so "
                   "that more requests share a commit; 0: back to back")
        ->check(CLI::Range(0, 100'000))
        ->capture_default_str();
    app.add_option("--rate-limit-per-s", o.rate_limit_per_s,
                   "requests per second per customer (token bucket); 0 disables")
        ->check(broker::cli::finite_range(0.0, 1e9))
        ->capture_default_str();
    app.add_option("--rate-limit-burst", o.rate_limit_burst, "token bucket size per customer")
        ->check(broker::cli::finite_range(1.0, 1e9))
        ->capture_default_str();
    app.add_option("--idle-timeout-s", o.server.idle_timeout_s,
                   "close keep-alive connections idle this long")
        ->check(CLI::Range(1, 3600))->capture_default_str();
    app.add_option("--max-connections", o.server.connections_max, "concurrent HTTP connections")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1'000'000}))->capture_default_str();
    app.add_option("--sim-latency-ms", o.sim.latency_ms, "simulated exchange: mean latency")
        ->check(CLI::Range(std::int64_t{0}, std::int64_t{60'000}))->capture_default_str();
    app.add_option("--sim-reject-rate", o.sim.reject_rate, "simulated exchange: reject share")
        ->check(broker::cli::finite_range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--sim-duplicate-rate", o.sim.duplicate_rate,
                   "simulated exchange: share of callbacks delivered twice")
        ->check(broker::cli::finite_range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--sim-seed", o.sim.seed, "simulated exchange: random seed")
        ->check(broker::cli::unsigned_64())
        ->capture_default_str();
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // --help and --help-all are "errors" with exit code 0 in CLI11; let it print them. Any
        // other is one line (CLI11's own adds a second).
        if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) std::exit(app.exit(e));
        die(e.what());
    }
    if (o.jwt_secret.empty()) die("a JWT secret is required (--jwt-secret or BROKER_JWT_SECRET)");
    // RFC 7518 3.2: an HS256 key must be at least as long as the hash, 256 bits. A shorter one
    // is a guessable secret that anyone can mint customer and admin tokens with.
    if (o.jwt_secret.size() < jwt_secret_min_bytes) {
        die(
            fmt::format("the JWT secret is {} bytes; HS256 needs at least {} (e.g. `openssl rand "
                        "-hex 32`)",
                        o.jwt_secret.size(), jwt_secret_min_bytes));
    }
    if (o.exchange != "sim") {
        const auto origin = broker::exchange::parse_http_origin(o.exchange);
        if (!origin) {
            die(fmt::format("--exchange: '{}' is neither 'sim' nor http://HOST:PORT", o.exchange));
        }
        // A host name is resolved once, here: one that does not resolve is one line and exit 2,
        // not an exception at the first connection. (The Host header keeps the name.)
        boost::system::error_code ec;
        boost::asio::io_context resolving;
        const auto found = boost::asio::ip::tcp::resolver(resolving).resolve(
            origin->first, std::to_string(origin->second),
            boost::asio::ip::resolver_base::numeric_service, ec);
        if (ec || found.empty()) {
            die(fmt::format("--exchange: cannot resolve '{}': {}", origin->first,
                            ec ? ec.message() : "no address"));
        }
        o.exchange_address = found.begin()->endpoint().address().to_string();
        if (o.exchange_secret.empty()) {
            die("a networked exchange needs --exchange-secret (or BROKER_EXCHANGE_SECRET)");
        }
    }
    // Whoever holds the exchange secret can sign fills: settle trades at any price it likes.
    if (!o.exchange_secret.empty() &&
        o.exchange_secret.size() < broker::exchange::callback_secret_min_bytes) {
        die(
            fmt::format("the exchange secret is {} bytes; HMAC-SHA256 callbacks need at least {} "
                        "(e.g. `openssl rand -hex 32`)",
                        o.exchange_secret.size(), broker::exchange::callback_secret_min_bytes));
    }
    if (!o.callback_url.empty() && !callback_url_ok(o.callback_url)) {
        die(fmt::format("--callback-url: '{}' is not http://HOST:PORT/PATH", o.callback_url));
    }
    // Flags that would be silently ignored are refused: whoever passed one expects it to count.
    if (!o.callback_url.empty() && o.exchange == "sim") {
        die("--callback-url is for a networked --exchange; the embedded one calls back in process");
    }
    if (o.market_hours.empty()) o.market_hours = o.exchange == "sim" ? "always" : "nyse";
    if (!o.holidays_file.empty() && o.market_hours != "nyse") {
        die("--holidays only applies with --market-hours nyse (the default with a networked "
            "--exchange)");
    }
    if (o.exchange_secret.empty()) o.exchange_secret = random_secret();
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    const options opt = parse(argc, argv);
    spdlog::set_default_logger(spdlog::stderr_color_mt("brokerd"));
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);

    const auto endpoint = parse_endpoint(opt.listen);
    if (!endpoint) die(fmt::format("--listen: '{}' is not HOST:PORT", opt.listen));

    auto opened = broker::journal::store::open(opt.data_dir);
    if (!opened) die(fmt::format("cannot open journal in {}: {}", opt.data_dir, opened.error().what));
    auto& store = **opened;
    for (const auto& w : store.open_warnings()) spdlog::warn("journal: {}", w);
    const auto started = std::chrono::steady_clock::now();
    broker::journal::recovery_report report;
    auto recovered = broker::journal::recover(store, &report);
    for (const auto& w : report.warnings) spdlog::warn("recovery: {}", w);
    if (!recovered) die(fmt::format("journal recovery failed: {}", recovered.error().what));
    if (report.snapshot_sequence > 0) {
        spdlog::info("recovery: from the snapshot at sequence {}, then {} events",
                     report.snapshot_sequence, report.events_applied);
    }
    spdlog::info("recovered {} events, {} customers, {} open trades in {} ms",
                 recovered->last_sequence, recovered->customers.size(),
                 recovered->open_trades.size(),
                 std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - started).count());

    auto calendar = std::make_shared<broker::market_calendar>(broker::market_calendar::always_open());
    if (opt.market_hours == "nyse") {
        std::string text;
        if (!opt.holidays_file.empty()) {
            std::ifstream in(opt.holidays_file);
            text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        }
        auto parsed = broker::market_calendar::parse_holidays(text);
        if (!parsed) die(fmt::format("--holidays: {}", parsed.error()));
        *calendar = std::move(*parsed);
    }

    broker::node::io_pool io(static_cast<std::size_t>(opt.io_threads));
    broker::node::runner_config rc;
    rc.collar_bps = opt.collar_bps;
    rc.watchdog_ms = opt.watchdog_ms;
    rc.placed_max_age_ms = opt.placed_max_age_ms;
    rc.market_open = [calendar](broker::timestamp_ms t) { return calendar->is_open(t); };
    rc.min_free_disk_bytes = static_cast<std::uint64_t>(opt.min_free_disk_mb) << 20;
    rc.snapshot_every_events = opt.snapshot_every_events;
    rc.round_interval = std::chrono::microseconds(opt.round_interval_us);
    rc.free_disk_bytes = [dir = opt.data_dir]() -> std::uint64_t {
        struct statvfs fs {};
        if (statvfs(dir.c_str(), &fs) != 0) return std::numeric_limits<std::uint64_t>::max();
        return static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
    };
    broker::node::engine_runner runner(store, std::move(*recovered), rc,
                                       [&io](std::size_t origin, std::function<void()> fn) {
                                           io.post(origin, std::move(fn));
                                       });
    broker::api::router router(runner, broker::api::router_config{opt.jwt_secret, opt.exchange_secret,
                                                                  300, opt.rate_limit_per_s,
                                                                  opt.rate_limit_burst});

    std::unique_ptr<broker::exchange::gateway> gateway;
    if (opt.exchange == "sim") {
        // The embedded exchange hands its reports over in process, as apply_execution commands:
        // settled (or a repeat) stops delivery, an unknown trade is dropped, anything else is
        // delivered again later.
        gateway = broker::exchange::make_simulated_exchange(
            opt.sim, [&runner, &router](std::vector<broker::exchange::handover> reports) {
                using broker::exchange::report_taken;
                std::vector<broker::node::engine_runner::engine_submission> all;
                all.reserve(reports.size());
                for (auto& h : reports) {
                    all.push_back({std::move(h.report),
                                   [done = h.done, &router](broker::api::outcome o) {
                                       router.count_execution_report(o);
                                       done(o.code == broker::errc::ok ? report_taken::settled
                                            : o.code == broker::errc::trade_not_found
                                                ? report_taken::unknown
                                                : report_taken::retry);
                                   }});
                }
                if (!runner.submit_from_engine(std::move(all))) {
                    for (auto& h : reports) h.done(report_taken::retry);
                }
            });
    } else {
        const auto origin = broker::exchange::parse_http_origin(opt.exchange);
        broker::exchange::http_gateway_config gc;
        gc.host = origin->first;
        gc.address = opt.exchange_address;
        gc.port = origin->second;
        gc.callback_url = opt.callback_url.empty()
                              ? fmt::format("http://{}:{}/v1/exchange/callbacks",
                                            endpoint->address().is_v6()
                                                ? "[" + endpoint->address().to_string() + "]"
                                                : endpoint->address().to_string(),
                                            endpoint->port())
                              : opt.callback_url;
        auto networked = broker::exchange::make_http_gateway(
            gc, [&runner](broker::apply_execution x) { runner.report(std::move(x)); });
        // Orders placed before any quote would all be unknown_symbol; wait briefly for one.
        if (!networked->wait_for_quotes(5'000)) {
            spdlog::warn("no quotes from {} yet; placements fail with unknown_symbol until they come",
                         opt.exchange);
        }
        gateway = std::move(networked);
    }
    runner.start(gateway.get());

    broker::api::server server(io.contexts(), router, opt.server);
    if (auto failed = server.listen(*endpoint)) die(fmt::format("--listen {}: {}", opt.listen, *failed));
    const auto bound = server.local_endpoint();
    spdlog::info("listening on {}:{} with {}", bound.address().to_string(), bound.port(),
                 opt.exchange == "sim" ? std::string("the embedded SIMULATED exchange")
                                       : "the exchange at " + opt.exchange);

    std::thread stopper;
    net::signal_set signals(io.context(0), SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code&, int sig) {
        spdlog::info("signal {}: shutting down", sig);
        server.stop();
        broker::api::close_all_streams();
        gateway->stop();
        // Finish and commit what is queued; its completions post to io, which keeps running
        // until the runner has stopped.
        stopper = std::thread([&] {
            runner.stop();
            io.stop_after_queued();
        });
    });

    io.run([] { broker::node::use_short_slice(); });

    if (opt.demo) {
        broker::node::open_demo_customers(runner, gateway.get());
        broker::node::print_demo_banner(opt.jwt_secret, bound);
    }
    io.join();
    if (stopper.joinable()) stopper.join();
    spdlog::info("stopped at sequence {}", store.last_sequence());
    return 0;
}
