// exchange-sim: a SIMULATED stock exchange serving the networked exchange protocol, so that tests
// and demos can run brokerd against the real wire protocol. Not a real venue: see service.h for
// what it does and venue.h for its rules. Parses the command line, starts the service on one io
// thread and runs until SIGINT/SIGTERM.
#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "exchange/signature.h"
#include "exchange/sim/service.h"
#include "tools/cli_checks.h"

namespace net = boost::asio;
using tcp = net::ip::tcp;
namespace sim = broker::exchange::sim;

namespace {

[[noreturn]] void die(const std::string& reason, int code = 2) {
    fmt::print(stderr, "exchange-sim: {}\n", reason);
    std::exit(code);
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
    const std::string port_text = text.substr(colon + 1);
    if (port_text.empty() || port_text.size() > 5 ||
        port_text.find_first_not_of("0123456789") != std::string::npos) {
        return std::nullopt;
    }
    const int port = std::stoi(port_text);
    if (port > 65535) return std::nullopt;
    return tcp::endpoint(address, static_cast<unsigned short>(port));
}

// "a,b,c" -> reasons, each a snake_case word of at most 64 characters.
std::optional<std::vector<std::string>> parse_reasons(const std::string& text) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start <= text.size()) {
        const std::size_t comma = std::min(text.find(',', start), text.size());
        const std::string r = text.substr(start, comma - start);
        if (r.empty() || r.size() > sim::log_text_max ||
            r.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos) {
            return std::nullopt;
        }
        out.push_back(r);
        start = comma + 1;
    }
    return out;
}

sim::sim_config parse(int argc, char** argv) {
    sim::sim_config c;
    std::string listen;
    std::string latency_dist = "uniform";
    std::string reasons = "exchange_rejected";
    std::vector<std::string> outages;
    std::string outage_mode = "503";
    CLI::App app{"exchange-sim: a SIMULATED stock exchange speaking brokerd's exchange protocol"};
    app.add_option("--listen", listen, "HTTP address, HOST:PORT (port 0: any free port)")
        ->required();
    app.add_option("--secret", c.secret, "HMAC secret for callback signatures, at least 32 bytes")
        ->envname("BROKER_EXCHANGE_SECRET")
        ->required();
    app.add_option("--data-dir", c.data_dir, "order log directory (created when missing)")
        ->required();
    app.add_option("--seed", c.seed, "random seed")
        ->check(broker::cli::unsigned_64())
        ->capture_default_str();
    app.add_option("--latency-ms", c.venue.latency_ms, "mean order->execution latency")
        ->check(CLI::Range(std::int64_t{0}, sim::latency_ms_max))
        ->capture_default_str();
    app.add_option("--latency-dist", latency_dist,
                   "fixed | uniform (over [0, 2N]) | exponential (mean N)")
        ->check(CLI::IsMember({"fixed", "uniform", "exponential"}))
        ->capture_default_str();
    app.add_option("--reject-rate", c.venue.reject_rate, "share of orders rejected")
        ->check(broker::cli::finite_range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--reject-reasons", reasons, "comma-separated reasons for those rejects")
        ->capture_default_str();
    app.add_option("--duplicate-rate", c.faults.duplicate_rate,
                   "share of callbacks delivered once more after acknowledgement")
        ->check(broker::cli::finite_range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--delay-rate", c.faults.delay_rate,
                   "share of callbacks held back --delay-ms before first delivery")
        ->check(broker::cli::finite_range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--delay-ms", c.faults.delay_ms, "hold-back of delayed callbacks")
        ->check(CLI::Range(std::int64_t{0}, std::int64_t{600'000}))
        ->capture_default_str();
    app.add_option("--reorder-rate", c.faults.reorder_rate,
                   "share of callbacks held until the next callback was delivered")
        ->check(broker::cli::finite_range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--drop-rate", c.faults.drop_rate,
                   "share of callback attempts silently dropped (retried with backoff)")
        ->check(broker::cli::finite_range(0.0, 1.0))
        ->capture_default_str();
    app.add_option(
        "--outage", outages,
        "START_S:DURATION_S, a window after start when the exchange is down (repeatable)");
    app.add_option("--outage-mode", outage_mode,
                   "refuse (listener closed) | 503 (every request answered 503)")
        ->check(CLI::IsMember({"refuse", "503"}))
        ->capture_default_str();
    app.add_option("--quote-interval-ms", c.quote_interval_ms, "price walk step")
        ->check(CLI::Range(std::int64_t{1}, std::int64_t{60'000}))
        ->capture_default_str();
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
            std::exit(app.exit(e));  // --help
        }
        die(e.what());
    }
    const auto endpoint = parse_endpoint(listen);
    if (!endpoint) die(fmt::format("--listen: '{}' is not HOST:PORT", listen));
    c.listen = *endpoint;
    if (c.secret.size() < broker::exchange::callback_secret_min_bytes) {
        die(
            fmt::format("--secret is {} bytes; HMAC-SHA256 callbacks need at least {} (e.g. "
                        "`openssl rand -hex 32`)",
                        c.secret.size(), broker::exchange::callback_secret_min_bytes));
    }
    if (c.data_dir.empty()) die("--data-dir must not be empty");
    c.venue.latency = latency_dist == "fixed"     ? sim::latency_dist::fixed
                      : latency_dist == "uniform" ? sim::latency_dist::uniform
                                                  : sim::latency_dist::exponential;
    auto r = parse_reasons(reasons);
    if (!r)
        die(fmt::format("--reject-reasons: '{}' is not a comma-separated list of snake_case words",
                        reasons));
    c.venue.reject_reasons = std::move(*r);
    for (const auto& o : outages) {
        const auto w = sim::parse_outage(o);
        if (!w) die(fmt::format("--outage: '{}' is not START_S:DURATION_S", o));
        c.outages.push_back(*w);
    }
    c.mode = outage_mode == "refuse" ? sim::outage_mode::refuse : sim::outage_mode::unavailable;
    return c;
}

}  // namespace

int main(int argc, char** argv) {
    sim::sim_config config = parse(argc, argv);
    spdlog::set_default_logger(spdlog::stderr_color_mt("exchange-sim"));
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
    // A callback receiver that goes away must not kill us with SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);

    net::io_context io(1);
    auto started = sim::service::start(io, std::move(config));
    if (!started) die(started.error(), 1);
    auto& svc = **started;
    const auto& rec = svc.recovered();
    if (rec.truncated_bytes > 0) {
        spdlog::warn(
            "order log: truncated a torn tail of {} bytes (an append cut short by a crash)",
            rec.truncated_bytes);
    }
    if (rec.orders > 0) {
        spdlog::info("recovered {} orders ({} to execute, {} callbacks owed)", rec.orders,
                     rec.unexecuted, rec.unacknowledged);
    }

    net::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code&, int sig) {
        spdlog::info("signal {}: stopping", sig);
        svc.stop();
        io.stop();
    });

    const auto at = svc.local_endpoint();
    const std::string host =
        at.address().is_v6() ? "[" + at.address().to_string() + "]" : at.address().to_string();
    fmt::print(stderr, "exchange-sim listening on {}:{}\n", host, at.port());
    std::fflush(stderr);
    io.run();
    return 0;
}
