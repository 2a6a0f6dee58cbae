// The client API's request handling, independent of the socket layer.
//
// `router::handle` takes one parsed HTTP request, authenticates it, turns it into an engine
// command, and answers through `respond` once the command's effects are durable. It never trusts
// input: every malformed request gets a 4xx with {"code","message"} and changes nothing. The Beast
// session (server.h) and the embedded exchange's callback path both call it, as will the fuzzer.
//
// Thread-safety: `handle` may be called from any IO thread; `respond` runs on an IO thread,
// exactly once per request.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "api/rate_limiter.h"
#include "api/routes.h"
#include "api/services.h"
#include "engine/result.h"

namespace broker::api {

struct http_request {
    std::string_view method;         // "GET", "POST", ...
    std::string_view target;         // path and query, e.g. "/v1/trades/00000000000000a1"
    std::string_view authorization;  // the Authorization header, or empty
    std::string_view signature;      // the X-Exchange-Signature header, or empty
    std::string_view body;
    std::string_view content_type;  // the Content-Type header, or empty
};

struct http_response {
    unsigned status = 200;
    std::string body;
    std::string allow;             // the Allow header, for 405 answers
    std::int64_t retry_after_s = 0;  // the Retry-After header when > 0 (429, 503)
    std::string_view content_type = "application/json";
    // The challenge of a 401's WWW-Authenticate header (RFC 9110 11.6.1): what the route takes.
    std::string_view challenge = "Bearer";
};

using responder = std::function<void(http_response)>;

struct router_config {
    std::string jwt_secret;
    std::string exchange_secret;
    std::int64_t callback_tolerance_s = 300;
    double rate_limit_per_s = 100;  // per customer; 0 disables
    double rate_limit_burst = 200;
    // The most closed trades one GET /v1/trades?symbol= reads from the store (at least 1): a
    // page may otherwise read a customer's whole history to find a symbol they rarely trade.
    std::size_t list_scan_max = 4096;
};

// What an authenticated WebSocket upgrade asks for.
struct stream_request {
    std::string customer_id;
    std::optional<std::uint64_t> since;
    std::int64_t expires_ms = 0;  // the token's exp, Unix ms; 0 when it has none
};

class router {
public:
    router(services& svc, router_config config);

    void handle(const http_request& req, responder respond);

    // The exchange's execution report (POST /v1/exchange/callbacks), also called directly by the
    // embedded simulator: the same verification and settlement either way.
    void handle_exchange_callback(std::string_view signature, std::string_view body,
                                  responder respond);
    // Counts one HTTP answer in broker_http_responses_total by status class. The server calls it
    // for every answer it writes: the router's, those it gives before the router is asked (413,
    // 431, 400, 503 over the connection bound) and a WebSocket upgrade's 101. Any thread.
    void count_response(unsigned status);
    // Counts an execution report the engine has processed in broker_exchange_callbacks_*: the
    // HTTP callbacks do it themselves; the embedded exchange, which hands its reports to the
    // engine in process, calls it. Any thread.
    void count_execution_report(const outcome& o);

    // Authenticates a WebSocket upgrade to GET /v1/stream (Authorization header, or the
    // ?access_token= browsers must use), reads ?since= and asks the engine whether the customer
    // exists; `done` gets the stream to open, or the HTTP answer to send instead of upgrading. It
    // runs at once when the request is refused before the engine is asked, else on the engine's
    // thread (see services.h). `req` is not used after this returns.
    using stream_decision = std::function<void(result<stream_request, http_response>)>;
    void authorize_stream(const http_request& req, stream_decision done);
    // Whether `target` names GET /v1/stream, read as every route is (paths as written, so
    // "/v1/stream/" does not): the server upgrades exactly what the router would call the stream.
    [[nodiscard]] static bool is_stream_target(std::string_view target);

    [[nodiscard]] services& backend() { return svc_; }

private:
    struct caller {
        std::string customer_id;
        bool admin = false;
        std::int64_t expires_s = 0;  // the token's exp, Unix seconds; 0 when it has none
    };
    using query = std::vector<std::pair<std::string, std::string>>;

    [[nodiscard]] std::optional<caller> authenticate(std::string_view authorization,
                                                     const responder& respond);
    void dispatch(const route_spec& r, const caller& who, const std::vector<std::string_view>& seg,
                  const query& q, const http_request& req, responder respond);
    void place_trade(const caller& who, std::string_view body, responder respond);
    void get_trade(const caller& who, std::string_view id, responder respond);
    void list_trades(const caller& who, const query& q, responder respond);
    void trade_by_client_order_id(const caller& who, const query& q, responder respond);
    void cancel_trade(const caller& who, std::string_view id, responder respond);
    void modify_trade(const caller& who, std::string_view id, std::string_view body,
                      responder respond);
    void get_account(const caller& who, bool positions, responder respond);
    void open_customer(std::string_view id, std::string_view body, responder respond);
    void get_digest(responder respond);
    // authorize_stream's checks before the engine is asked: the stream to open, and the answer
    // to give instead should the customer exist (a ?since= past their last update; a customer
    // that does not exist has no updates either, and that is the 404 it needs to hear).
    struct checked_stream {
        stream_request request;
        std::optional<http_response> refusal;
    };
    [[nodiscard]] result<checked_stream, http_response> check_stream_request(
        const http_request& req);
    void submit(command c, responder respond, std::function<http_response(outcome&)> render);
    // The answer for a command on one trade: the trade from the outcome, or from the store when
    // it is closed and belongs to the caller.
    // Nothing when there is no such trade of the caller's; an error when the store could not be
    // read.
    [[nodiscard]] lookup<trade> trade_of(const caller& who, const outcome& o);
    // The answer for a symbol without a quote: 422 unknown_symbol, or 503 quotes_unavailable
    // before the exchange has sent any quote.
    [[nodiscard]] http_response no_quote(std::string_view ticker);
    // The 503 answer when the store could not be read.
    [[nodiscard]] static http_response store_unreadable_error();
    // The 503 answer when the engine refuses a command.
    [[nodiscard]] http_response refused() const;
    // The answer to cancel or modify: the trade, or the error, without revealing whether another
    // customer's trade exists.
    [[nodiscard]] http_response trade_answer(const caller& who, trade_id id, outcome& o);

    // Counters for GET /metrics (Prometheus text format).
    struct counters {
        std::atomic<std::uint64_t> responses[6]{};  // by status class: 1xx..5xx
        std::atomic<std::uint64_t> callbacks_applied{0};
        std::atomic<std::uint64_t> callbacks_duplicate{0};
        std::atomic<std::uint64_t> callbacks_refused{0};  // bad or missing signature, stale
        std::atomic<std::uint64_t> callbacks_invalid{0};  // signed but malformed or not applicable
        std::atomic<std::uint64_t> rate_limited{0};
    };
    [[nodiscard]] std::string metrics_text();

    const std::uint64_t id_;  // unique per router in the process: keys its token cache
    counters counters_;
    services& svc_;
    router_config config_;
    rate_limiter limiter_;
};

// The HTTP status for a business outcome: one table for the whole API.
[[nodiscard]] unsigned http_status_for(errc e);

}  // namespace broker::api
