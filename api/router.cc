#include "api/router.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <charconv>
#include <iterator>
#include <limits>
#include <unordered_map>

#include "api/json.h"
#include "api/jwt.h"
#include "engine/assert.h"
#include "engine/time.h"
#include "exchange/signature.h"

namespace broker::api {

namespace {

http_response error(unsigned status, std::string_view code, std::string_view message) {
    return http_response{status, error_json(code, message), {}, 0};
}

// What an outcome means, for the error's message; the code stays what programs match on.
std::string_view describe(errc e) {
    switch (e) {
        case errc::ok:
            return "ok";
        case errc::invalid_quantity:
            return "quantity must be a whole number from 1 to 1000000";
        case errc::invalid_symbol:
            return "symbol must be 1-8 of A-Z, 0-9, '.'";
        case errc::unknown_symbol:
            return "the symbol is not listed";
        case errc::invalid_price:
            return "the price is not valid";
        case errc::invalid_customer_id:
            return "customer ids are 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'";
        case errc::invalid_client_order_id:
            return "client_order_id is not valid";
        case errc::invalid_amount:
            return "the amount is not valid";
        case errc::notional_too_large:
            return "the order's value (quantity times the limit price) is over $50,000,000";
        case errc::insufficient_funds:
            return "the buying power does not cover the order";
        case errc::insufficient_shares:
            return "the shares held and not already reserved for sale do not cover the order";
        case errc::market_closed:
            return "the market is closed";
        case errc::too_many_open_trades:
            return "the customer has too many open trades";
        case errc::too_many_positions:
            return "the customer would hold too many symbols";
        case errc::customer_not_found:
            return "no account for this customer; an operator opens accounts";
        case errc::trade_not_found:
            return "no such trade";
        case errc::customer_exists_different:
            return "the customer exists with other opening balances";
        case errc::trade_not_cancelable:
            return "only a PLACED trade can be canceled; this one is at the exchange or closed";
        case errc::trade_not_in_progress:
            return "the trade is not at the exchange";
        case errc::fill_mismatch:
            return "the fill does not match the order's terms";
        case errc::trade_not_modifiable:
            return "only a PLACED trade can be modified; this one is at the exchange or closed";
        case errc::client_order_id_conflict:
            return "this client_order_id was used for a different order";
        case errc::stale_request:
            return "the request waited too long; retry it";
        case errc::exchange_rejected:
            return "the exchange rejected the order";
        case errc::limit_not_marketable:
            return "the order's limit could not be met";
        case errc::expired:
            return "the order expired before it could be filled";
    }
    return "unexpected outcome";
}

http_response error_for(errc e) {
    // Word for word the 404 of a closed trade of another customer, which the router answers
    // itself: the message must not tell the two apart.
    if (e == errc::trade_not_found) return error(404, "trade_not_found", "no such trade");
    return error(http_status_for(e), to_string(e), describe(e));
}

// Splits "/a/b?c" into path segments, ignoring the query (none of today's routes take one).
// Empty segments are kept ("//a", "/a/", "/a//b"), so that such a path matches no route: a
// proxy or access rule in front that reads paths literally sees the same path brokerd routes.
std::vector<std::string_view> path_segments(std::string_view target) {
    target = target.substr(0, target.find('?'));
    std::vector<std::string_view> out;
    if (!target.starts_with('/')) {
        out.emplace_back();  // "*" or an absolute URI: no route
        return out;
    }
    target.remove_prefix(1);
    for (;;) {
        const auto end = target.find('/');
        out.push_back(target.substr(0, end));
        // No route is this deep; stop splitting hostile paths (what is left matches nothing).
        if (end == std::string_view::npos || out.size() > 8) break;
        target.remove_prefix(end + 1);
    }
    return out;
}

// ASCII case-insensitive equality (Beast's, which takes Boost's string_view).
bool iequals(std::string_view a, std::string_view b) {
    return boost::beast::iequals({a.data(), a.size()}, {b.data(), b.size()});
}

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// Whether a request's Content-Type says JSON: application/json or a +json suffix type (RFC
// 6839), with a charset parameter, if any, of UTF-8 (RFC 8259 8.1). A request without the
// header is taken as JSON too (RFC 9110 8.3 leaves it to the recipient): SDKs that leave it out
// keep working, while a body declared as something else (a form, text) is refused, not parsed.
bool json_media_type(std::string_view value) {
    value = trim_ows(value);
    if (value.empty()) return true;
    const auto semicolon = std::min(value.find(';'), value.size());
    const std::string_view type = trim_ows(value.substr(0, semicolon));
    constexpr std::string_view application = "application/", suffix = "+json";
    const bool json = iequals(type, "application/json") ||
                      (type.size() > application.size() + suffix.size() &&
                       iequals(type.substr(0, application.size()), application) &&
                       iequals(type.substr(type.size() - suffix.size()), suffix));
    if (!json) return false;
    // The parameters, `;name=value` each, with quoted values unquoted, as Beast reads them.
    const std::string_view params = value.substr(semicolon);
    for (const auto& [name, param] :
         boost::beast::http::param_list{{params.data(), params.size()}}) {
        if (iequals({name.data(), name.size()}, "charset") &&
            !iequals({param.data(), param.size()}, "utf-8")) {
            return false;
        }
    }
    return true;
}

// The routes whose requests carry a JSON body.
bool takes_json_body(route_id id) {
    return id == route_id::place_trade || id == route_id::modify_trade ||
           id == route_id::open_customer || id == route_id::exchange_callback;
}

const json_value* field(const std::vector<std::pair<std::string, json_value>>& obj,
                        std::string_view name) {
    for (const auto& [key, value] : obj) {
        if (key == name) return &value;
    }
    return nullptr;
}

// The first field not in `known`, if any: unknown fields are refused so that a typo
// ("quantiy") is an error instead of a silently different order.
std::optional<std::string> unknown_field(
    const std::vector<std::pair<std::string, json_value>>& obj,
    std::initializer_list<std::string_view> known) {
    for (const auto& [key, _] : obj) {
        bool found = false;
        for (const auto k : known) found = found || key == k;
        if (!found) return key;
    }
    return std::nullopt;
}

}  // namespace

unsigned http_status_for(errc e) {
    switch (e) {
        case errc::ok: return 200;
        case errc::customer_not_found:
        case errc::trade_not_found: return 404;
        case errc::customer_exists_different:
        case errc::trade_not_in_progress:
        case errc::fill_mismatch: return 409;
        case errc::stale_request: return 503;
        default: return 422;
    }
}

namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// RFC 3986 percent-decoding of one query component ('+' stays '+': client order ids may hold it).
std::optional<std::string> percent_decode(std::string_view in) {
    std::string out;
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
        if (in[i] != '%') {
            out.push_back(in[i]);
            continue;
        }
        if (i + 2 >= in.size()) return std::nullopt;
        const int hi = hex_value(in[i + 1]);
        const int lo = hex_value(in[i + 2]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
    }
    return out;
}

// The query string as (name, value) pairs; nullopt when malformed, repeated or too long.
std::optional<std::vector<std::pair<std::string, std::string>>> parse_query(std::string_view target) {
    std::vector<std::pair<std::string, std::string>> out;
    const auto q = target.find('?');
    if (q == std::string_view::npos) return out;
    std::string_view rest = target.substr(q + 1);
    while (!rest.empty()) {
        const auto amp = rest.find('&');
        const std::string_view part = rest.substr(0, amp);
        rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
        if (part.empty()) continue;
        const auto eq = part.find('=');
        auto name = percent_decode(part.substr(0, eq));
        auto value = percent_decode(eq == std::string_view::npos ? "" : part.substr(eq + 1));
        if (!name || !value || out.size() == 8) return std::nullopt;
        for (const auto& [seen, _] : out) {
            if (seen == *name) return std::nullopt;
        }
        out.emplace_back(std::move(*name), std::move(*value));
    }
    return out;
}

const std::string* param(const std::vector<std::pair<std::string, std::string>>& q,
                         std::string_view name) {
    for (const auto& [k, v] : q) {
        if (k == name) return &v;
    }
    return nullptr;
}

// Walks the pattern's segments in place (no allocation: this runs for every route on every
// request); a "{name}" segment matches any one path segment.
bool matches(std::string_view pattern, const std::vector<std::string_view>& seg) {
    std::size_t i = 0;
    while (!pattern.empty()) {
        if (pattern.front() == '/') {
            pattern.remove_prefix(1);
            continue;
        }
        const auto end = pattern.find('/');
        const std::string_view want = pattern.substr(0, end);
        // A "{name}" takes any segment but an empty one ("/v1/trades/" names no trade).
        if (i >= seg.size() || seg[i].empty() || (!want.starts_with('{') && want != seg[i])) {
            return false;
        }
        ++i;
        pattern = end == std::string_view::npos ? std::string_view{} : pattern.substr(end);
    }
    return i == seg.size();
}

http_response invalid_parameter(std::string_view message) {
    return error(422, "invalid_parameter", message);
}

}  // namespace

namespace {
std::atomic<std::uint64_t> routers_made{0};
}  // namespace

router::router(services& svc, router_config config)
    : id_(++routers_made),
      svc_(svc),
      config_(std::move(config)),
      limiter_(config_.rate_limit_per_s, config_.rate_limit_burst) {
    BROKER_ASSERT(config_.list_scan_max >= 1);
}

std::optional<router::caller> router::authenticate(std::string_view authorization,
                                                   const responder& respond) {
    // The scheme's name is case-insensitive (RFC 9110 11.1): "bearer" and "BEARER" are Bearer.
    constexpr std::string_view scheme = "bearer ";
    if (authorization.size() <= scheme.size() ||
        !iequals(authorization.substr(0, scheme.size()), scheme)) {
        respond(error(401, "unauthorized", "a Bearer token is required"));
        return std::nullopt;
    }
    const std::string_view token = authorization.substr(scheme.size());
    const std::int64_t now_s = svc_.now() / 1000;
    // Clients send the same token on every request; remembering the ones already verified
    // saves an HMAC and two decodes per request. A hit still honours `exp`. One cache per IO
    // thread, bounded, so nothing is shared and nothing grows.
    struct verified {
        claims who;
        std::uint64_t by = 0;  // the router (and so the secret) that verified it
    };
    thread_local std::unordered_map<std::string, verified> cache;
    if (const auto hit = cache.find(std::string(token)); hit != cache.end() && hit->second.by == id_) {
        if (hit->second.who.exp == 0 || now_s < hit->second.who.exp) {
            return caller{hit->second.who.sub, hit->second.who.role == "admin",
                          hit->second.who.exp};
        }
        cache.erase(hit);
    }
    auto claims = verify_jwt(token, config_.jwt_secret, now_s);
    if (!claims) {
        respond(error(401, "unauthorized", to_string(claims.error())));
        return std::nullopt;
    }
    if (cache.size() >= 4096) cache.clear();
    cache.emplace(std::string(token), verified{*claims, id_});
    return caller{claims->sub, claims->role == "admin", claims->exp};
}

void router::count_response(unsigned status) {
    counters_.responses[std::clamp<unsigned>(status / 100, 1, 5)].fetch_add(
        1, std::memory_order_relaxed);
}

void router::handle(const http_request& req, responder respond) {
    const auto seg = path_segments(req.target);
    const route_spec* path_match = nullptr;
    const route_spec* route = nullptr;
    std::string allow;
    // HEAD is GET without the body (RFC 9110 9.3.2): the server writes the same header with the
    // body's length and leaves the body out.
    const std::string_view method = req.method == "HEAD" ? std::string_view("GET") : req.method;
    for (const auto& r : routes) {
        if (!matches(r.path, seg)) continue;
        path_match = &r;
        if (!allow.empty()) allow += ", ";
        allow += r.method;
        if (r.method == "GET") allow += ", HEAD";
        if (r.method == method) route = &r;
    }
    if (path_match == nullptr) return respond(error(404, "not_found", "no such route"));
    if (route == nullptr) {
        http_response r = error(405, "method_not_allowed", fmt::format("use {} on this path", allow));
        r.allow = std::move(allow);
        return respond(std::move(r));
    }
    if (takes_json_body(route->id) && !json_media_type(req.content_type)) {
        return respond(error(415, "unsupported_media_type",
                             "the body must be JSON: send Content-Type: application/json"));
    }
    const auto q = parse_query(req.target);
    if (!q) return respond(invalid_parameter("the query string is malformed or repeats a name"));
    switch (route->who) {
        case access::open:
            if (route->id == route_id::metrics) {
                return respond(http_response{200, metrics_text(), {}, 0,
                                             "text/plain; version=0.0.4; charset=utf-8"});
            }
            return respond(http_response{200, R"({"status":"ok"})", {}, 0});
        case access::exchange:
            return handle_exchange_callback(req.signature, req.body, std::move(respond));
        case access::customer:
        case access::admin: break;
    }
    const auto who = authenticate(req.authorization, respond);
    if (!who) return;
    if (route->who == access::admin && !who->admin) {
        return respond(error(403, "forbidden", "this route needs an admin token"));
    }
    if (auto wait = limiter_.acquire(who->customer_id, svc_.now())) {
        counters_.rate_limited.fetch_add(1, std::memory_order_relaxed);
        http_response r = error(429, "rate_limited", "too many requests; retry after Retry-After");
        r.retry_after_s = *wait;
        return respond(std::move(r));
    }
    dispatch(*route, *who, seg, *q, req, std::move(respond));
}

void router::dispatch(const route_spec& r, const caller& who, const std::vector<std::string_view>& seg,
                      const query& q, const http_request& req, responder respond) {
    // Routes that take no query parameters refuse them, so a typo is an error, not ignored.
    const bool takes_query = r.id == route_id::list_trades ||
                             r.id == route_id::trade_by_client_order_id || r.id == route_id::stream;
    if (!takes_query && !q.empty()) {
        return respond(invalid_parameter(
            fmt::format("unknown query parameter '{}'", echoed(q.front().first))));
    }
    switch (r.id) {
        case route_id::place_trade: return place_trade(who, req.body, std::move(respond));
        case route_id::list_trades: return list_trades(who, q, std::move(respond));
        case route_id::trade_by_client_order_id:
            return trade_by_client_order_id(who, q, std::move(respond));
        case route_id::get_trade: return get_trade(who, seg[2], std::move(respond));
        case route_id::cancel_trade: return cancel_trade(who, seg[2], std::move(respond));
        case route_id::modify_trade: return modify_trade(who, seg[2], req.body, std::move(respond));
        case route_id::account: return get_account(who, false, std::move(respond));
        case route_id::positions: return get_account(who, true, std::move(respond));
        case route_id::stream:
            return respond(error(426, "upgrade_required", "GET /v1/stream is a WebSocket"));
        case route_id::open_customer: return open_customer(seg[3], req.body, std::move(respond));
        case route_id::digest: return get_digest(std::move(respond));
        case route_id::healthz:
        case route_id::readyz:
        case route_id::metrics:
        case route_id::exchange_callback: break;
    }
    respond(error(404, "not_found", "no such route"));
}

bool router::is_stream_target(std::string_view target) {
    return matches("/v1/stream", path_segments(target));
}

void router::authorize_stream(const http_request& req, stream_decision done) {
    auto checked = check_stream_request(req);
    if (!checked) return done(unexpected{std::move(checked.error())});
    // A stream of a customer that was never opened would stay open and silent for good: the
    // app would show an empty, healthy-looking feed instead of the 404 GET /v1/account gives.
    const std::string customer_id = checked->request.customer_id;
    auto answer = [done, checked = std::move(*checked)](outcome o) mutable {
        if (o.code != errc::ok) return done(unexpected{error_for(o.code)});
        if (checked.refusal) return done(unexpected{std::move(*checked.refusal)});
        done(std::move(checked.request));
    };
    if (!svc_.submit(::broker::get_account{customer_id}, std::move(answer))) {
        done(unexpected{refused()});
    }
}

result<router::checked_stream, http_response> router::check_stream_request(
    const http_request& req) {
    const auto q = parse_query(req.target);
    if (!q) return unexpected{invalid_parameter("the query string is malformed")};
    std::string header(req.authorization);
    if (const std::string* token = param(*q, "access_token"); token != nullptr && header.empty()) {
        header = "Bearer " + *token;
    }
    std::optional<http_response> refused;
    const auto who = authenticate(header, [&](http_response r) { refused = std::move(r); });
    if (!who) return unexpected{std::move(*refused)};
    // A token may say any date, up to the end of int64 seconds: past what milliseconds hold, it
    // is the far future.
    constexpr std::int64_t ms_max_s = std::numeric_limits<std::int64_t>::max() / 1000;
    stream_request out{who->customer_id, std::nullopt,
                       who->expires_s > ms_max_s ? std::numeric_limits<std::int64_t>::max()
                                                 : who->expires_s * 1000};
    for (const auto& [name, value] : *q) {
        if (name == "access_token") continue;
        if (name != "since") {
            return unexpected{
                invalid_parameter(fmt::format("unknown query parameter '{}'", echoed(name)))};
        }
        std::uint64_t since = 0;
        const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), since);
        if (ec != std::errc{} || end != value.data() + value.size() || value.empty()) {
            return unexpected{invalid_parameter("since must be a non-negative integer")};
        }
        out.since = since;
    }
    if (auto wait = limiter_.acquire(who->customer_id, svc_.now())) {
        http_response r = error(429, "rate_limited", "too many requests; retry after Retry-After");
        r.retry_after_s = *wait;
        return unexpected{std::move(r)};
    }
    if (out.since && *out.since > 0) {
        // Resuming after N needs update N to exist. A cursor past the customer's last update
        // (kept from before a data reset, or made up) would otherwise hold back every update
        // up to it without a word.
        // The read is done here, on the IO thread, not where the engine answers; what it finds
        // wrong waits for the engine to say whether the customer exists at all.
        const auto at = svc_.updates_since(out.customer_id, *out.since - 1, 1);
        if (!at) {
            auto unreadable = error(503, "storage_error", "updates could not be read; retry later");
            return checked_stream{std::move(out), std::move(unreadable)};
        }
        if (at->empty()) {
            auto ahead = error(422, "since_ahead",
                               fmt::format("since {} is past this customer's last update; resume "
                                           "from a sequence the stream has sent, or without since",
                                           *out.since));
            return checked_stream{std::move(out), std::move(ahead)};
        }
    }
    return checked_stream{std::move(out), std::nullopt};
}

std::string router::metrics_text() {
    std::string out =
        "# HELP broker_http_responses_total HTTP answers by status class.\n"
        "# TYPE broker_http_responses_total counter\n";
    for (unsigned c = 1; c <= 5; ++c) {
        out += fmt::format("broker_http_responses_total{{class=\"{}xx\"}} {}\n", c,
                           counters_.responses[c].load(std::memory_order_relaxed));
    }
    auto counter = [&](std::string_view name, std::string_view help, const std::atomic<std::uint64_t>& v) {
        out += fmt::format("# HELP {0} {1}\n# TYPE {0} counter\n{0} {2}\n", name, help,
                           v.load(std::memory_order_relaxed));
    };
    counter("broker_exchange_callbacks_applied_total", "Execution reports that settled a trade.",
            counters_.callbacks_applied);
    counter("broker_exchange_callbacks_duplicate_total",
            "Execution reports for trades already settled (acknowledged, no change).",
            counters_.callbacks_duplicate);
    counter("broker_exchange_callbacks_refused_total",
            "Callbacks refused with 401: unsigned, forged or stale.", counters_.callbacks_refused);
    counter("broker_exchange_callbacks_invalid_total",
            "Signed callbacks refused as malformed or inconsistent with the trade.",
            counters_.callbacks_invalid);
    counter("broker_rate_limited_total", "Requests answered 429.", counters_.rate_limited);
    out += svc_.metrics_text();
    return out;
}

http_response router::store_unreadable_error() {
    return error(503, "storage_error", "the journal could not be read; retry later");
}

http_response router::refused() const {
    if (svc_.storage_full()) {
        return error(503, "storage_full", "the journal's disk is nearly full; retry later");
    }
    return error(503, "overloaded", "the engine queue is full; retry shortly");
}

lookup<trade> router::trade_of(const caller& who, const outcome& o) {
    if (o.trade_view) return o.trade_view;
    if (!o.trade_ref) return std::optional<trade>{};
    return svc_.find_closed_trade(who.customer_id, *o.trade_ref);
}

void router::submit(command c, responder respond, std::function<http_response(outcome&)> render) {
    auto done = [respond, render = std::move(render)](outcome o) mutable {
        respond(render(o));
    };
    if (!svc_.submit(std::move(c), std::move(done))) {
        respond(refused());
    }
}

void router::place_trade(const caller& who, std::string_view body, responder respond) {
    auto obj = parse_object(body);
    if (!obj) return respond(error(400, obj.error().code, obj.error().message));
    if (auto extra = unknown_field(*obj, {"symbol", "side", "quantity", "client_order_id"})) {
        return respond(
            error(422, "unknown_field", fmt::format("unknown field '{}'", echoed(*extra))));
    }
    const json_value* sym_v = field(*obj, "symbol");
    const json_value* side_v = field(*obj, "side");
    const json_value* qty_v = field(*obj, "quantity");
    const json_value* coid_v = field(*obj, "client_order_id");
    if (sym_v == nullptr || side_v == nullptr || qty_v == nullptr) {
        return respond(error(422, "missing_field", "symbol, side and quantity are required"));
    }
    if (sym_v->type != json_value::kind::string) {
        return respond(error(422, "invalid_symbol", "symbol must be a string"));
    }
    const auto sym = parse_symbol(sym_v->text);
    if (!sym) return respond(error(422, "invalid_symbol", "symbol must be 1-8 of A-Z, 0-9, '.'"));
    const auto trade_side =
        side_v->type == json_value::kind::string ? parse_side(side_v->text) : std::nullopt;
    if (!trade_side) return respond(error(422, "invalid_side", "side must be \"BUY\" or \"SELL\""));
    if (qty_v->type != json_value::kind::integer || qty_v->out_of_range || qty_v->integer <= 0 ||
        qty_v->integer > limits::quantity_max) {
        return respond(error(422, "invalid_quantity",
                             fmt::format("quantity must be a whole number from 1 to {}",
                                         limits::quantity_max)));
    }
    std::string coid;
    if (coid_v != nullptr && coid_v->type != json_value::kind::null) {
        if (coid_v->type != json_value::kind::string || !valid_client_order_id(coid_v->text)) {
            return respond(error(422, "invalid_client_order_id",
                                 "client_order_id must be 1-64 printable ASCII characters"));
        }
        coid = coid_v->text;
    }
    const auto price = svc_.quote(*sym);
    if (!price) return respond(no_quote(sym_v->text));
    ::broker::place_trade cmd{who.customer_id, coid, *sym, *trade_side, quantity{qty_v->integer},
                              price, svc_.market_open(svc_.now()), svc_.collar_bps()};
    if (!coid.empty()) {
        // Trades closed long ago are remembered by the store, not the engine (see place_trade).
        cmd.client_order_checked_at = svc_.now();
        auto known = svc_.find_client_order(who.customer_id, coid);
        // Without the store's answer a repeated request could become a second trade.
        if (!known) return respond(store_unreadable_error());
        cmd.known_client_order = *known;
    }
    const symbol want_sym = *sym;
    const side want_side = *trade_side;
    const quantity want_qty{qty_v->integer};
    submit(std::move(cmd), std::move(respond), [this, who, want_sym, want_side, want_qty](outcome& o) {
        if (o.code != errc::ok) return error_for(o.code);
        const auto found = trade_of(who, o);
        if (!found) return store_unreadable_error();
        const std::optional<trade>& t = *found;
        if (!t) return error(404, "trade_not_found", "no such trade");
        if (!o.repeated) return http_response{201, trade_json(*t), {}, 0};
        // The same client_order_id again: the original trade if the request is the same one
        // (its quantity as placed, whatever a PATCH made of it since).
        if (t->sym != want_sym || t->trade_side != want_side || t->placed_qty != want_qty) {
            return error(422, "client_order_id_conflict",
                         "this client_order_id was used for a different trade");
        }
        return http_response{200, trade_json(*t), {}, 0};
    });
}

void router::get_trade(const caller& who, std::string_view id_text, responder respond) {
    const auto id = parse_trade_id(id_text);
    if (!id) return respond(error(404, "trade_not_found", "no such trade"));
    submit(::broker::get_trade{who.customer_id, *id}, std::move(respond),
           [this, who, id = *id](outcome& o) {
               if (o.code == errc::ok && o.trade_view) {
                   return http_response{200, trade_json(*o.trade_view), {}, 0};
               }
               // Not open: it is either closed (and in the store, durably, since it closed in an
               // earlier batch than this answer) or unknown.
               const auto closed = svc_.find_closed_trade(who.customer_id, id);
               if (!closed) return store_unreadable_error();
               if (!*closed) return error(404, "trade_not_found", "no such trade");
               return http_response{200, trade_json(**closed), {}, 0};
           });
}

void router::list_trades(const caller& who, const query& q, responder respond) {
    trade_filter filter = trade_filter::all;
    std::optional<symbol> sym;
    std::size_t limit = 50;
    trade_id after{0};
    for (const auto& [name, value] : q) {
        if (name == "status") {
            if (value == "open") filter = trade_filter::open;
            else if (value == "closed") filter = trade_filter::closed;
            else if (value != "all") return respond(invalid_parameter("status is open, closed or all"));
        } else if (name == "symbol") {
            sym = parse_symbol(value);
            if (!sym) return respond(invalid_parameter("symbol must be 1-8 of A-Z, 0-9, '.'"));
        } else if (name == "limit") {
            const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), limit);
            if (ec != std::errc{} || end != value.data() + value.size() || limit < 1 || limit > 500) {
                return respond(invalid_parameter("limit is a whole number from 1 to 500"));
            }
        } else if (name == "after") {
            const auto id = parse_trade_id(value);
            if (!id || id->value == 0) return respond(invalid_parameter("after is a trade_id"));
            after = *id;
        } else {
            return respond(
                invalid_parameter(fmt::format("unknown query parameter '{}'", echoed(name))));
        }
    }
    auto render = [this, who, filter, sym, limit, after](outcome& o) {
        if (o.code != errc::ok) return error_for(o.code);
        // Open trades come from the engine (this outcome), closed ones from the store, read
        // after it; both sorted newest first and merged. A trade that closed in between is in
        // both lists, and only its closed version is kept.
        std::vector<trade> closed;
        // Where the store's read stopped short of the customer's oldest closed trade (0: it
        // did not). Below it nothing is known yet, so no open trade below it joins this page,
        // and the page ends there with a next_after, full or not.
        trade_id scanned_to{0};
        if (filter != trade_filter::open) {
            // Without a symbol every trade read is listed: the page's limit bounds the read.
            auto stored = svc_.closed_trades(who.customer_id, after, sym, limit,
                                             sym ? config_.list_scan_max : limit);
            if (!stored) {
                return error(503, "storage_error", "closed trades could not be read; retry later");
            }
            closed = std::move(stored->trades);
            scanned_to = stored->scanned_to;
        }
        std::vector<trade> open;
        if (filter != trade_filter::closed) {
            for (auto& t : o.open_trades) {
                if ((after.value == 0 || t.id < after) && !(t.id < scanned_to) &&
                    (!sym || t.sym == *sym)) {
                    open.push_back(t);
                }
            }
        }
        std::sort(open.begin(), open.end(),
                  [](const trade& a, const trade& b) { return b.id < a.id; });
        std::vector<trade> page;
        page.reserve(std::min(limit, open.size() + closed.size()));
        auto oi = open.begin();
        auto ci = closed.begin();
        while (page.size() < limit && (oi != open.end() || ci != closed.end())) {
            if (ci == closed.end() || (oi != open.end() && ci->id < oi->id)) {
                page.push_back(std::move(*oi++));
                continue;
            }
            if (oi != open.end() && oi->id == ci->id) ++oi;  // closed since the engine answered
            page.push_back(std::move(*ci++));
        }
        std::string body = R"({"trades":[)";
        for (std::size_t i = 0; i < page.size(); ++i) {
            if (i > 0) body += ',';
            body += trade_json(page[i]);
        }
        std::optional<trade_id> next;
        if (page.size() == limit) {
            next = page.back().id;
        } else if (scanned_to.value != 0) {
            next = scanned_to;
        }
        body +=
            fmt::format(R"(],"next_after":{}}})",
                        next ? fmt::format("\"{}\"", format_trade_id(*next)) : std::string("null"));
        return http_response{200, std::move(body), {}, 0};
    };
    submit(::broker::list_open_trades{who.customer_id}, std::move(respond), std::move(render));
}

void router::trade_by_client_order_id(const caller& who, const query& q, responder respond) {
    const std::string* coid = param(q, "client_order_id");
    if (coid == nullptr || q.size() != 1 || !valid_client_order_id(*coid)) {
        return respond(invalid_parameter("client_order_id (1-64 printable ASCII) is required"));
    }
    // The engine knows open and recent trades; the store knows every durable one.
    submit(::broker::find_client_order{who.customer_id, *coid}, std::move(respond),
           [this, who, c = *coid](outcome& o) {
               std::optional<trade> t = o.trade_view;
               if (!t) {
                   const auto id = svc_.find_client_order(who.customer_id, c);
                   if (!id) return store_unreadable_error();
                   if (*id) {
                       outcome closed;
                       closed.trade_ref = *id;
                       auto found = trade_of(who, closed);
                       if (!found) return store_unreadable_error();
                       t = std::move(*found);
                   }
               }
               if (!t) return error(404, "trade_not_found", "no trade has this client_order_id");
               return http_response{200, trade_json(*t), {}, 0};
           });
}

void router::cancel_trade(const caller& who, std::string_view id_text, responder respond) {
    const auto id = parse_trade_id(id_text);
    if (!id) return respond(error(404, "trade_not_found", "no such trade"));
    submit(::broker::cancel_trade{who.customer_id, *id}, std::move(respond),
           [this, who, id = *id](outcome& o) { return trade_answer(who, id, o); });
}

void router::modify_trade(const caller& who, std::string_view id_text, std::string_view body,
                          responder respond) {
    const auto id = parse_trade_id(id_text);
    if (!id) return respond(error(404, "trade_not_found", "no such trade"));
    auto obj = parse_object(body);
    if (!obj) return respond(error(400, obj.error().code, obj.error().message));
    if (auto extra = unknown_field(*obj, {"quantity"})) {
        return respond(
            error(422, "unknown_field", fmt::format("unknown field '{}'", echoed(*extra))));
    }
    const json_value* qty_v = field(*obj, "quantity");
    if (qty_v == nullptr) return respond(error(422, "missing_field", "quantity is required"));
    if (qty_v->type != json_value::kind::integer || qty_v->out_of_range || qty_v->integer <= 0 ||
        qty_v->integer > limits::quantity_max) {
        return respond(error(422, "invalid_quantity",
                             fmt::format("quantity must be a whole number from 1 to {}",
                                         limits::quantity_max)));
    }
    // The reference price is left empty: only the engine thread knows the trade's symbol, and
    // the node quotes it there (engine_runner::run_command).
    submit(::broker::modify_trade{who.customer_id, *id, quantity{qty_v->integer}, std::nullopt,
                                  svc_.collar_bps()},
           std::move(respond), [this, who, id = *id](outcome& o) { return trade_answer(who, id, o); });
}

http_response router::trade_answer(const caller& who, trade_id id, outcome& o) {
    if (o.code == errc::ok && o.trade_view) return http_response{200, trade_json(*o.trade_view), {}, 0};
    const bool not_open = !o.trade_ref && (o.code == errc::trade_not_cancelable ||
                                       o.code == errc::trade_not_modifiable);
    if (not_open) {
        // Closed (or never existed): only its owner may learn that it exists.
        const auto closed = svc_.find_closed_trade(who.customer_id, id);
        if (!closed) return store_unreadable_error();
        if (!*closed) return error(404, "trade_not_found", "no such trade");
    }
    return error_for(o.code);
}

http_response router::no_quote(std::string_view ticker) {
    // Before the exchange's first quotes (a networked exchange not reached yet) no symbol has a
    // price: that says nothing about what is listed, and the client should retry, not give up.
    if (!svc_.has_quotes()) {
        http_response r = error(503, "quotes_unavailable",
                                "no prices from the exchange yet; retry after Retry-After");
        r.retry_after_s = 1;
        return r;
    }
    return error(422, "unknown_symbol", fmt::format("{} is not listed", echoed(ticker)));
}

void router::get_account(const caller& who, bool positions, responder respond) {
    submit(::broker::get_account{who.customer_id}, std::move(respond), [positions](outcome& o) {
        if (o.code != errc::ok || !o.account) return error_for(o.code);
        return http_response{200, positions ? positions_json(*o.account) : account_json(*o.account),
                             {}, 0};
    });
}

void router::open_customer(std::string_view id, std::string_view body, responder respond) {
    if (!valid_customer_id(id)) {
        return respond(error(422, "invalid_customer_id", "customer ids are 1-64 of [A-Za-z0-9._-]"));
    }
    auto obj = parse_object(body, true);
    if (!obj) return respond(error(400, obj.error().code, obj.error().message));
    if (auto extra = unknown_field(*obj, {"cash", "positions"})) {
        return respond(
            error(422, "unknown_field", fmt::format("unknown field '{}'", echoed(*extra))));
    }
    const json_value* cash_v = field(*obj, "cash");
    if (cash_v == nullptr || cash_v->type != json_value::kind::string) {
        return respond(error(422, "invalid_amount", "cash must be a decimal string, e.g. \"100.00\""));
    }
    const auto cash = parse_money(cash_v->text, money{limits::opening_cash_max_ticks});
    if (!cash) {
        return respond(error(422, "invalid_amount",
                             "cash must be a non-negative decimal with at most 4 places, at most "
                             "10000000000"));
    }
    ::broker::open_customer cmd{std::string(id), *cash, {}};
    if (const json_value* pos_v = field(*obj, "positions")) {
        if (pos_v->type != json_value::kind::object) {
            return respond(error(422, "invalid_positions", "positions must be an object"));
        }
        for (const auto& [ticker, count] : pos_v->members) {
            const auto sym = parse_symbol(ticker);
            if (!sym || !svc_.quote(*sym)) return respond(no_quote(ticker));
            if (count.type != json_value::kind::integer || count.out_of_range ||
                count.integer < 0 || count.integer > limits::opening_position_max) {
                return respond(error(422, "invalid_quantity",
                                     "position quantities are whole numbers from 0"));
            }
            cmd.positions.push_back(position_amount{*sym, quantity{count.integer}});
        }
    }
    submit(std::move(cmd), std::move(respond), [](outcome& o) {
        if (o.code != errc::ok || !o.account) return error_for(o.code);
        return http_response{o.repeated ? 200u : 201u, account_json(*o.account), {}, 0};
    });
}

void router::get_digest(responder respond) {
    auto done = [respond](outcome o) {
        respond(http_response{
            200, fmt::format(R"({{"sequence":{},"digest":"{}"}})", o.sequence, o.digest), {}, 0});
    };
    if (!svc_.submit_digest(std::move(done))) {
        respond(refused());
    }
}

void router::handle_exchange_callback(std::string_view signature, std::string_view body,
                                      responder respond) {
    const auto verified = exchange::verify_callback(config_.exchange_secret, signature, body,
                                                    svc_.now() / 1000,
                                                    config_.callback_tolerance_s);
    if (!verified) {
        counters_.callbacks_refused.fetch_add(1, std::memory_order_relaxed);
        spdlog::warn("exchange callback refused: {}", exchange::to_string(verified.error()));
        auto refused = error(401, "invalid_signature", exchange::to_string(verified.error()));
        refused.challenge = R"(Exchange-Signature header="X-Exchange-Signature")";
        return respond(std::move(refused));
    }
    auto obj = parse_object(body);
    if (!obj) return respond(error(400, obj.error().code, obj.error().message));
    auto text = [&](std::string_view name) -> std::optional<std::string> {
        const json_value* v = field(*obj, name);
        if (v == nullptr || v->type != json_value::kind::string) return std::nullopt;
        return v->text;
    };
    const auto order_id = text("order_id");
    const auto status = text("status");
    const auto exec_id = text("exec_id");
    const auto executed_at_text = text("executed_at");
    const json_value* qty_v = field(*obj, "quantity");
    const auto id = order_id ? parse_trade_id(*order_id) : std::nullopt;
    const auto executed_at = executed_at_text ? parse_rfc3339_ms(*executed_at_text) : std::nullopt;
    if (!id || !status || (*status != "FILLED" && *status != "REJECTED") || !exec_id ||
        exec_id->empty() || !executed_at || qty_v == nullptr ||
        qty_v->type != json_value::kind::integer || qty_v->out_of_range) {
        return respond(error(422, "invalid_callback",
                             "order_id, exec_id, status, quantity and executed_at are required"));
    }
    apply_execution x;
    x.id = *id;
    x.filled = *status == "FILLED";
    x.qty = quantity{qty_v->integer};
    // An exec_id past the bound is cut as a status query's is (bounded_exec_id). Refusing it
    // would not stop the exchange repeating the report: the trade would settle only by a status
    // query, and the refused report would come back for good. The engine settles a trade once,
    // whatever its exec_id says.
    x.exec_id = bounded_exec_id(*exec_id);
    x.executed_at = *executed_at;
    if (x.filled) {
        const auto price_text = text("fill_price");
        const auto price =
            price_text ? parse_money(*price_text, money{limits::price_max_ticks}) : std::nullopt;
        if (!price) return respond(error(422, "invalid_callback", "a fill needs fill_price"));
        x.fill_price = *price;
    } else {
        const auto reason = text("reason");
        const auto code = reason ? parse_errc(*reason) : std::nullopt;
        // Reasons the broker knows keep their name; anything else is the generic exchange reject.
        x.reason = code && static_cast<int>(*code) >= 5000 ? *code : errc::exchange_rejected;
    }
    submit(std::move(x), std::move(respond), [this](outcome& o) {
        count_execution_report(o);
        if (o.code != errc::ok) {
            spdlog::warn("exchange callback not applied: {}", to_string(o.code));
            return error_for(o.code);
        }
        return http_response{200, o.repeated ? R"({"status":"duplicate"})" : R"({"status":"applied"})",
                             {}, 0};
    });
}

void router::count_execution_report(const outcome& o) {
    auto& counter = o.code != errc::ok ? counters_.callbacks_invalid
                    : o.repeated       ? counters_.callbacks_duplicate
                                       : counters_.callbacks_applied;
    counter.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace broker::api
