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

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "api/services.h"

namespace broker::api {

struct http_request {
    std::string_view method;         // "GET", "POST", ...
    std::string_view target;         // path and query, e.g. "/v1/trades/00000000000000a1"
    std::string_view authorization;  // the Authorization header, or empty
    std::string_view signature;      // the X-Exchange-Signature header, or empty
    std::string_view body;
};

struct http_response {
    unsigned status = 200;
    std::string body;
    std::string allow;  // the Allow header, for 405 answers
};

using responder = std::function<void(http_response)>;

struct router_config {
    std::string jwt_secret;
    std::string exchange_secret;
    std::int64_t callback_tolerance_s = 300;
};

class router {
public:
    router(services& svc, router_config config);

    void handle(const http_request& req, responder respond);

    // The exchange's execution report (POST /v1/exchange/callbacks), also called directly by the
    // embedded simulator: the same verification and settlement either way.
    void handle_exchange_callback(std::string_view signature, std::string_view body,
                                  responder respond);

private:
    struct route;
    struct caller {
        std::string customer_id;
        bool admin = false;
    };

    [[nodiscard]] std::optional<caller> authenticate(const http_request& req,
                                                     const responder& respond);
    void place_trade(const caller& who, std::string_view body, responder respond);
    void get_trade(const caller& who, std::string_view id, responder respond);
    void get_account(const caller& who, bool positions, responder respond);
    void open_customer(std::string_view id, std::string_view body, responder respond);
    void get_digest(responder respond);
    void submit(command c, responder respond, std::function<http_response(outcome&)> render);

    services& svc_;
    router_config config_;
};

// The HTTP status for a business outcome: one table for the whole API.
[[nodiscard]] unsigned http_status_for(errc e);

}  // namespace broker::api
