#include "api/router.h"

#include <spdlog/spdlog.h>

#include "api/json.h"
#include "api/jwt.h"
#include "engine/time.h"
#include "exchange/signature.h"

namespace broker::api {

namespace {

http_response error(unsigned status, std::string_view code, std::string_view message) {
    return http_response{status, error_json(code, message), {}};
}

http_response error_for(errc e) {
    return error(http_status_for(e), to_string(e), to_string(e));
}

// Splits "/a/b?c" into path segments, ignoring the query (none of today's routes take one).
std::vector<std::string_view> path_segments(std::string_view target) {
    target = target.substr(0, target.find('?'));
    std::vector<std::string_view> out;
    while (!target.empty()) {
        if (target.front() == '/') {
            target.remove_prefix(1);
            continue;
        }
        const auto end = target.find('/');
        out.push_back(target.substr(0, end));
        if (out.size() > 8) break;  // no route is this deep; stop splitting hostile paths
        target = end == std::string_view::npos ? std::string_view{} : target.substr(end);
    }
    return out;
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
        default: return 422;
    }
}

router::router(services& svc, router_config config) : svc_(svc), config_(std::move(config)) {}

std::optional<router::caller> router::authenticate(const http_request& req,
                                                   const responder& respond) {
    constexpr std::string_view scheme = "Bearer ";
    if (req.authorization.size() <= scheme.size() ||
        req.authorization.substr(0, scheme.size()) != scheme) {
        respond(error(401, "unauthorized", "a Bearer token is required"));
        return std::nullopt;
    }
    auto claims = verify_jwt(req.authorization.substr(scheme.size()), config_.jwt_secret,
                             svc_.now() / 1000);
    if (!claims) {
        respond(error(401, "unauthorized", to_string(claims.error())));
        return std::nullopt;
    }
    return caller{claims->sub, claims->role == "admin"};
}

void router::handle(const http_request& req, responder respond) {
    const auto seg = path_segments(req.target);
    const auto method = req.method;
    auto only = [&](std::string_view allowed) {
        if (method == allowed) return true;
        http_response r = error(405, "method_not_allowed",
                                fmt::format("use {} on this path", allowed));
        r.allow = std::string(allowed);
        respond(std::move(r));
        return false;
    };
    const auto n = seg.size();
    if (n == 1 && (seg[0] == "healthz" || seg[0] == "readyz")) {
        if (only("GET")) respond(http_response{200, R"({"status":"ok"})", {}});
        return;
    }
    if (n == 3 && seg[0] == "v1" && seg[1] == "exchange" && seg[2] == "callbacks") {
        if (only("POST")) handle_exchange_callback(req.signature, req.body, std::move(respond));
        return;
    }
    const bool admin_route = n >= 1 && seg[0] == "admin";
    const bool known = (n == 2 && seg[0] == "v1" &&
                        (seg[1] == "trades" || seg[1] == "account" || seg[1] == "positions")) ||
                       (n == 3 && seg[0] == "v1" && seg[1] == "trades") ||
                       (n == 4 && admin_route && seg[1] == "v1" && seg[2] == "customers") ||
                       (n == 3 && admin_route && seg[1] == "v1" && seg[2] == "digest");
    if (!known) {
        respond(error(404, "not_found", "no such route"));
        return;
    }
    const auto who = authenticate(req, respond);
    if (!who) return;
    if (admin_route && !who->admin) {
        respond(error(403, "forbidden", "this route needs an admin token"));
        return;
    }
    if (n == 2 && seg[1] == "trades") {
        if (only("POST")) place_trade(*who, req.body, std::move(respond));
    } else if (n == 2) {
        if (only("GET")) get_account(*who, seg[1] == "positions", std::move(respond));
    } else if (n == 3 && seg[0] == "v1") {
        if (only("GET")) get_trade(*who, seg[2], std::move(respond));
    } else if (n == 4) {
        if (only("PUT")) open_customer(seg[3], req.body, std::move(respond));
    } else {
        if (only("GET")) get_digest(std::move(respond));
    }
}

void router::submit(command c, responder respond, std::function<http_response(outcome&)> render) {
    auto done = [respond, render = std::move(render)](outcome o) mutable {
        respond(render(o));
    };
    if (!svc_.submit(std::move(c), std::move(done))) {
        respond(error(503, "overloaded", "the engine queue is full; retry shortly"));
    }
}

void router::place_trade(const caller& who, std::string_view body, responder respond) {
    auto obj = parse_object(body);
    if (!obj) return respond(error(400, obj.error().code, obj.error().message));
    if (auto extra = unknown_field(*obj, {"symbol", "side", "quantity", "client_order_id"})) {
        return respond(error(422, "unknown_field",
                             fmt::format("unknown field '{}'", json_escape(*extra))));
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
    if (!price) {
        return respond(error(422, "unknown_symbol",
                             fmt::format("{} is not listed", json_escape(sym_v->text))));
    }
    command c = ::broker::place_trade{who.customer_id, std::move(coid), *sym, *trade_side,
                                      quantity{qty_v->integer}, price,
                                      svc_.market_open(svc_.now()), svc_.collar_bps()};
    submit(std::move(c), std::move(respond), [](outcome& o) {
        if (o.code != errc::ok || !o.trade_view) return error_for(o.code);
        return http_response{o.repeated ? 200u : 201u, trade_json(*o.trade_view), {}};
    });
}

void router::get_trade(const caller& who, std::string_view id_text, responder respond) {
    const auto id = parse_trade_id(id_text);
    if (!id) return respond(error(404, "trade_not_found", "no such trade"));
    submit(::broker::get_trade{who.customer_id, *id}, std::move(respond),
           [this, who, id = *id](outcome& o) {
               if (o.code == errc::ok && o.trade_view) {
                   return http_response{200, trade_json(*o.trade_view), {}};
               }
               // Not open: it is either closed (and in the store, durably, since it closed in an
               // earlier batch than this answer) or unknown.
               const auto closed = svc_.find_closed_trade(id);
               if (!closed || closed->customer_id != who.customer_id) {
                   return error(404, "trade_not_found", "no such trade");
               }
               return http_response{200, trade_json(*closed), {}};
           });
}

void router::get_account(const caller& who, bool positions, responder respond) {
    submit(::broker::get_account{who.customer_id}, std::move(respond), [positions](outcome& o) {
        if (o.code != errc::ok || !o.account) return error_for(o.code);
        return http_response{200, positions ? positions_json(*o.account) : account_json(*o.account),
                             {}};
    });
}

void router::open_customer(std::string_view id, std::string_view body, responder respond) {
    if (!valid_customer_id(id)) {
        return respond(error(422, "invalid_customer_id", "customer ids are 1-64 of [A-Za-z0-9._-]"));
    }
    auto obj = parse_object(body, true);
    if (!obj) return respond(error(400, obj.error().code, obj.error().message));
    if (auto extra = unknown_field(*obj, {"cash", "positions"})) {
        return respond(error(422, "unknown_field",
                             fmt::format("unknown field '{}'", json_escape(*extra))));
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
            if (!sym || !svc_.quote(*sym)) {
                return respond(error(422, "unknown_symbol",
                                     fmt::format("{} is not listed", json_escape(ticker))));
            }
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
        return http_response{o.repeated ? 200u : 201u, account_json(*o.account), {}};
    });
}

void router::get_digest(responder respond) {
    auto done = [respond](outcome o) {
        respond(http_response{
            200, fmt::format(R"({{"sequence":{},"digest":"{}"}})", o.sequence, o.digest), {}});
    };
    if (!svc_.submit_digest(std::move(done))) {
        respond(error(503, "overloaded", "the engine queue is full; retry shortly"));
    }
}

void router::handle_exchange_callback(std::string_view signature, std::string_view body,
                                      responder respond) {
    const auto verified = exchange::verify_callback(config_.exchange_secret, signature, body,
                                                    svc_.now() / 1000,
                                                    config_.callback_tolerance_s);
    if (!verified) {
        spdlog::warn("exchange callback refused: {}", exchange::to_string(verified.error()));
        return respond(error(401, "invalid_signature", exchange::to_string(verified.error())));
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
        exec_id->empty() || exec_id->size() > limits::exec_id_max || !executed_at ||
        qty_v == nullptr || qty_v->type != json_value::kind::integer || qty_v->out_of_range) {
        return respond(error(422, "invalid_callback",
                             "order_id, exec_id, status, quantity and executed_at are required"));
    }
    apply_execution x;
    x.id = *id;
    x.filled = *status == "FILLED";
    x.qty = quantity{qty_v->integer};
    x.exec_id = *exec_id;
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
    submit(std::move(x), std::move(respond), [](outcome& o) {
        if (o.code != errc::ok) {
            spdlog::warn("exchange callback not applied: {}", to_string(o.code));
            return error_for(o.code);
        }
        return http_response{200, o.repeated ? R"({"status":"duplicate"})" : R"({"status":"applied"})",
                             {}};
    });
}

}  // namespace broker::api
