#include "exchange/sim/protocol.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <boost/asio/ip/address.hpp>

#include "engine/limits.h"
#include "engine/time.h"

namespace broker::exchange::sim {

namespace {

// Few enough that a forged body with thousands of keys is refused before any work on them.
constexpr std::size_t order_fields_max = 16;

protocol_error invalid(std::string code, std::string message) {
    return protocol_error{422, std::move(code), std::move(message)};
}

std::string quoted_or_null(std::string_view text) {
    return text.empty() ? std::string("null") : fmt::format("\"{}\"", json_escape(text));
}

// The fields of an order, as found; each at most once.
struct raw_order {
    std::optional<simdjson::dom::element> order_id, symbol, side, quantity, limit_price,
        callback_url;
};

result<raw_order, protocol_error> collect_fields(simdjson::dom::object obj) {
    raw_order raw;
    std::size_t count = 0;
    for (const auto field : obj) {
        if (++count > order_fields_max) {
            return unexpected{protocol_error{400, "too_many_fields", "an order has few fields"}};
        }
        const std::string_view key = field.key;
        std::optional<simdjson::dom::element>* slot = nullptr;
        if (key == "order_id") slot = &raw.order_id;
        if (key == "symbol") slot = &raw.symbol;
        if (key == "side") slot = &raw.side;
        if (key == "quantity") slot = &raw.quantity;
        if (key == "limit_price") slot = &raw.limit_price;
        if (key == "callback_url") slot = &raw.callback_url;
        if (slot == nullptr) continue;  // other fields are ignored: a client may send more
        if (slot->has_value()) {
            return unexpected{
                protocol_error{400, "duplicate_field", fmt::format("'{}' appears twice", key)}};
        }
        *slot = field.value;
    }
    return raw;
}

// The text of a string field; nullopt when absent or not a string.
std::optional<std::string_view> text_of(const std::optional<simdjson::dom::element>& e) {
    std::string_view s;
    if (!e || e->get_string().get(s) != simdjson::SUCCESS) return std::nullopt;
    return s;
}

result<new_order, protocol_error> check_fields(const raw_order& raw) {
    new_order o;
    const auto id_text = text_of(raw.order_id);
    const auto id = id_text ? parse_trade_id(*id_text) : std::nullopt;
    if (!id) {
        return unexpected{invalid("invalid_order_id", "order_id must be 16 lowercase hex digits")};
    }
    o.order_id = id->value;

    const auto sym = text_of(raw.symbol);
    if (!sym || !parse_symbol(*sym)) {
        return unexpected{
            invalid("invalid_symbol", "symbol must be 1-8 characters of A-Z, 0-9, '.'")};
    }
    o.symbol = std::string(*sym);

    const auto side_text = text_of(raw.side);
    const auto sd = side_text ? parse_side(*side_text) : std::nullopt;
    if (!sd) return unexpected{invalid("invalid_side", "side must be BUY or SELL")};
    o.order_side = *sd;

    std::int64_t qty = 0;
    if (!raw.quantity || raw.quantity->get_int64().get(qty) != simdjson::SUCCESS || qty < 1 ||
        qty > limits::quantity_max) {
        return unexpected{
            invalid("invalid_quantity",
                    fmt::format("quantity must be an integer 1..{}", limits::quantity_max))};
    }
    o.quantity = qty;

    if (raw.limit_price && !raw.limit_price->is_null()) {
        const auto text = text_of(raw.limit_price);
        const auto price = text ? parse_money(*text, money{limits::price_max_ticks}) : std::nullopt;
        if (!price || price->ticks <= 0) {
            return unexpected{
                invalid("invalid_price",
                        "limit_price must be a positive decimal string like \"190.5000\"")};
        }
        o.limit_price_ticks = price->ticks;
    }

    const auto url = text_of(raw.callback_url);
    if (!url || !parse_callback_url(*url)) {
        return unexpected{invalid("invalid_callback_url",
                                  "callback_url must be http://IP:PORT/path (at most 512 bytes)")};
    }
    o.callback_url = std::string(*url);
    return o;
}

}  // namespace

result<new_order, protocol_error> parse_new_order(std::string_view body) {
    // Single-threaded use per thread; simdjson's DOM validates the whole document (and its UTF-8)
    // before we look at a field.
    thread_local simdjson::dom::parser parser;
    const simdjson::padded_string padded(body);
    simdjson::dom::element doc;
    if (const auto err = parser.parse(padded).get(doc); err) {
        return unexpected{protocol_error{400, "invalid_json", simdjson::error_message(err)}};
    }
    simdjson::dom::object obj;
    if (doc.get_object().get(obj) != simdjson::SUCCESS) {
        return unexpected{protocol_error{400, "invalid_json", "the body must be a JSON object"}};
    }
    auto raw = collect_fields(obj);
    if (!raw) return unexpected{raw.error()};
    return check_fields(*raw);
}

std::optional<callback_target> parse_callback_url(std::string_view url) {
    constexpr std::string_view scheme = "http://";
    if (url.size() > callback_url_max || !url.starts_with(scheme)) return std::nullopt;
    for (const char c : url) {
        if (c < '!' || c > '~') return std::nullopt;  // no spaces, controls or non-ASCII
    }
    std::string_view rest = url.substr(scheme.size());
    const std::size_t slash = rest.find('/');
    std::string_view authority = rest.substr(0, slash);
    callback_target t;
    t.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
    if (t.target.find('#') != std::string::npos) return std::nullopt;

    std::string_view host = authority;
    std::string_view port_text;
    if (authority.starts_with('[')) {
        const std::size_t close = authority.find(']');
        if (close == std::string_view::npos) return std::nullopt;
        host = authority.substr(1, close - 1);
        const std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (!after.starts_with(':')) return std::nullopt;
            port_text = after.substr(1);
            if (port_text.empty()) return std::nullopt;
        }
    } else if (const std::size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
        host = authority.substr(0, colon);
        port_text = authority.substr(colon + 1);
        if (port_text.empty()) return std::nullopt;
    }
    if (host == "localhost") host = "127.0.0.1";
    boost::system::error_code ec;
    const auto address = boost::asio::ip::make_address(std::string(host), ec);
    if (ec) return std::nullopt;
    t.host = address.to_string();
    if (!port_text.empty()) {
        if (port_text.size() > 5) return std::nullopt;
        unsigned port = 0;
        for (const char c : port_text) {
            if (c < '0' || c > '9') return std::nullopt;
            port = port * 10 + static_cast<unsigned>(c - '0');
        }
        if (port == 0 || port > 65535) return std::nullopt;
        t.port = static_cast<std::uint16_t>(port);
    }
    return t;
}

std::string json_escape(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
                } else {
                    out.push_back(c);
                }
        }
    }
    return out;
}

std::string error_json(std::string_view code, std::string_view message) {
    return fmt::format(R"({{"code":"{}","message":"{}"}})", json_escape(code),
                       json_escape(message));
}

std::string order_json(const order_accepted& a, const order_executed* exec) {
    const std::string id = format_trade_id(trade_id{a.order_id});
    if (exec == nullptr) {
        return fmt::format(
            R"({{"order_id":"{}","status":"ACCEPTED","quantity":{},"fill_price":null,)"
            R"("reason":null,"exec_id":null,"executed_at":null}})",
            id, a.quantity);
    }
    const bool filled = exec->outcome == order_outcome::filled;
    return fmt::format(
        R"({{"order_id":"{}","status":"{}","quantity":{},"fill_price":{},"reason":{},)"
        R"("exec_id":"{}","executed_at":"{}"}})",
        id, filled ? "FILLED" : "REJECTED", a.quantity,
        filled ? quoted_or_null(format_money(money{exec->fill_price_ticks})) : "null",
        quoted_or_null(exec->reason), json_escape(exec->exec_id),
        format_rfc3339_ms(exec->executed_at));
}

std::string callback_json(const order_accepted& a, const order_executed& e) {
    const bool filled = e.outcome == order_outcome::filled;
    return fmt::format(
        R"({{"order_id":"{}","exec_id":"{}","status":"{}","quantity":{},"fill_price":{},)"
        R"("reason":{},"executed_at":"{}"}})",
        format_trade_id(trade_id{a.order_id}), json_escape(e.exec_id),
        filled ? "FILLED" : "REJECTED", a.quantity,
        filled ? quoted_or_null(format_money(money{e.fill_price_ticks})) : "null",
        quoted_or_null(e.reason), format_rfc3339_ms(e.executed_at));
}

std::string quote_json(std::string_view symbol, money price, timestamp_ms at) {
    return fmt::format(R"({{"symbol":"{}","price":"{}","timestamp":"{}"}})", json_escape(symbol),
                       format_money(price), format_rfc3339_ms(at));
}

}  // namespace broker::exchange::sim
