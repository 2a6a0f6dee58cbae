// exchange-sim's composition: the venue, its order log, the market walk, callback delivery,
// outages and the HTTP routes, wired on one io thread.
//
//   POST /v1/orders          parse -> venue.accept -> log (fsync) -> apply -> 202, schedule
//   (execution due)          venue.execute -> log (fsync) -> apply -> owe the callback
//   (callback 2xx)           log the acknowledgement (group-committed like everything else)
//   GET /v1/orders/{id}, GET /v1/quotes[/{symbol}], GET /healthz
//
// Nothing is visible (no 202, no status, no callback) before the record behind it is durable, so
// a kill -9 can lose only what nobody outside has seen. On start the log is replayed through the
// same `venue::apply`; accepted orders not executed are scheduled again (at once if overdue) and
// every callback not acknowledged is owed again.
//
// Thread-safety: construct, run and stop on the thread that runs the io_context, which must be
// single-threaded (the order log's writer thread posts its completions to it).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/result.h"
#include "exchange/sim/callback_sender.h"
#include "exchange/sim/http_client.h"
#include "exchange/sim/http_server.h"
#include "exchange/sim/outage.h"
#include "exchange/sim/venue.h"

namespace broker::exchange::sim {

// Executions awaiting their fsync at once; past it, due executions wait for the next tick.
inline constexpr std::size_t execute_inflight_max = 4096;

struct sim_config {
    boost::asio::ip::tcp::endpoint listen;
    std::string secret;
    std::string data_dir;
    std::uint64_t seed = 1;
    venue_config venue;
    callback_faults faults;
    std::vector<outage_window> outages;
    outage_mode mode = outage_mode::unavailable;
    std::int64_t quote_interval_ms = 100;
    server_limits server;
    client_limits client;
};

struct recovery_summary {
    std::size_t orders = 0;
    std::size_t unexecuted = 0;
    std::size_t unacknowledged = 0;
    std::size_t truncated_bytes = 0;
};

class service {
  public:
    // Opens and recovers the order log and starts listening. Errors are one-line reasons: a
    // corrupt log, a locked data dir, an address in use.
    [[nodiscard]] static result<std::unique_ptr<service>, std::string> start(
        boost::asio::io_context& io, sim_config config);
    ~service();

    [[nodiscard]] boost::asio::ip::tcp::endpoint local_endpoint() const;
    [[nodiscard]] const recovery_summary& recovered() const;
    // Stops listening, delivering and executing; writes what is queued to the log.
    void stop();

    struct impl;

  private:
    explicit service(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

}  // namespace broker::exchange::sim
