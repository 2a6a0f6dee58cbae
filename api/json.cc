#include "api/json.h"

#include <fmt/format.h>
#include <simdjson.h>

#include "engine/time.h"

namespace broker::api {

json_value::json_value() = default;

void append_json_escaped(std::string& out, std::string_view text) {
    // Text that echoes client input may hold invalid UTF-8 (e.g. a percent-decoded %FF); JSON
    // output must not, so such text keeps its ASCII and shows every other byte as '?'.
    const bool valid_utf8 = simdjson::validate_utf8(text.data(), text.size());
    static constexpr char hex[] = "0123456789abcdef";
    for (const char c : text) {
        if (!valid_utf8 && static_cast<unsigned char>(c) >= 0x80) {
            out.push_back('?');
            continue;
        }
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    out += "\\u00";
                    out.push_back(hex[static_cast<unsigned char>(c) >> 4]);
                    out.push_back(hex[static_cast<unsigned char>(c) & 0x0f]);
                } else {
                    out.push_back(c);
                }
        }
    }
}

std::string json_escape(std::string_view text) {
    std::string out;
    out.reserve(text.size() + 2);
    append_json_escaped(out, text);
    return out;
}

std::string echoed(std::string_view text) {
    if (text.size() <= echo_max) return std::string(text);
    std::size_t end = echo_max;
    // Back off over continuation bytes (10xxxxxx) to the start of the sequence that was cut.
    while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
    return std::string(text.substr(0, end)) + "...";
}

std::string error_json(std::string_view code, std::string_view message) {
    return fmt::format(R"({{"code":"{}","message":"{}"}})", json_escape(code),
                       json_escape(message));
}


void append_trade_json(std::string& out, const trade& t) {
    // Built by appending rather than through one format string: trade JSON is the most frequent
    // output (every answer and every stream frame), and this is several times cheaper.
    const auto quoted = [&out](std::string_view text) {
        out.push_back('"');
        append_json_escaped(out, text);
        out.push_back('"');
    };
    const bool filled = t.status == trade_status::filled && t.fill_price.has_value();
    out += R"({"trade_id":")";
    out += format_trade_id(t.id);
    out += R"(","client_order_id":)";
    if (t.client_order_id.empty()) {
        out += "null";
    } else {
        quoted(t.client_order_id);
    }
    out += R"(,"customer_id":)";
    quoted(t.customer_id);
    out += R"(,"symbol":")";
    out += to_string(t.sym);
    out += R"(","side":")";
    out += to_string(t.trade_side);
    out += R"(","quantity":)";
    out += std::to_string(t.qty.shares);
    out += R"(,"status":")";
    out += to_string(t.status);
    out += R"(","reason":)";
    if (t.reason != errc::ok) {
        quoted(to_string(t.reason));
    } else {
        out += "null";
    }
    out += R"(,"created_at":")";
    out += format_rfc3339_ms(t.created_at);
    out += R"(","updated_at":")";
    out += format_rfc3339_ms(t.updated_at);
    out += R"(","filled_price":)";
    if (filled) {
        quoted(format_money(*t.fill_price));
        out += R"(,"filled_at":")";
        out += format_rfc3339_ms(t.filled_at);
        out += R"("})";
    } else {
        out += R"(null,"filled_at":null})";
    }
}

std::string trade_json(const trade& t) {
    std::string out;
    out.reserve(320);
    append_trade_json(out, t);
    return out;
}

std::string account_json(const account_view& a) {
    return fmt::format(
        R"({{"customer_id":"{}","cash":"{}","reserved_cash":"{}","buying_power":"{}",)"
        R"("currency":"USD"}})",
        json_escape(a.customer_id), format_money(a.cash), format_money(a.reserved_cash),
        format_money(money{a.cash.ticks - a.reserved_cash.ticks}));
}

std::string positions_json(const account_view& a) {
    std::string out = "[";
    for (const auto& p : a.positions) {
        if (out.size() > 1) out += ',';
        out += fmt::format(
            R"({{"symbol":"{}","quantity":{},"reserved_quantity":{},"available_quantity":{}}})",
            to_string(p.sym), p.shares, p.reserved, p.shares - p.reserved);
    }
    out += ']';
    return out;
}

namespace {

constexpr std::size_t fields_max = 32;

result<json_value, json_error> convert(simdjson::dom::element e, bool allow_nested);

result<std::vector<std::pair<std::string, json_value>>, json_error> convert_object(
    simdjson::dom::object obj, bool allow_nested) {
    std::vector<std::pair<std::string, json_value>> out;
    for (auto [key, value] : obj) {
        if (out.size() == fields_max) {
            return unexpected{json_error{"too_many_fields", "an object may have 32 fields"}};
        }
        for (const auto& [seen, _] : out) {
            if (seen == key) {
                return unexpected{json_error{"duplicate_field",
                                             fmt::format("field '{}' appears twice", echoed(key))}};
            }
        }
        auto v = convert(value, allow_nested);
        if (!v) return unexpected{v.error()};
        out.emplace_back(std::string(key), std::move(*v));
    }
    return out;
}

result<json_value, json_error> convert(simdjson::dom::element e, bool allow_nested) {
    json_value v;
    switch (e.type()) {
        case simdjson::dom::element_type::NULL_VALUE: v.type = json_value::kind::null; break;
        case simdjson::dom::element_type::BOOL: v.type = json_value::kind::boolean; break;
        case simdjson::dom::element_type::INT64:
            v.type = json_value::kind::integer;
            v.integer = e.get_int64().value_unsafe();
            break;
        case simdjson::dom::element_type::UINT64:
            v.type = json_value::kind::integer;
            v.out_of_range = true;
            break;
        case simdjson::dom::element_type::DOUBLE: v.type = json_value::kind::number; break;
        case simdjson::dom::element_type::STRING:
            v.type = json_value::kind::string;
            v.text = std::string(e.get_string().value_unsafe());
            break;
        case simdjson::dom::element_type::ARRAY: v.type = json_value::kind::array; break;
        case simdjson::dom::element_type::OBJECT: {
            v.type = json_value::kind::object;
            if (!allow_nested) break;
            auto members = convert_object(e.get_object().value_unsafe(), false);
            if (!members) return unexpected{members.error()};
            v.members = std::move(*members);
            break;
        }
    }
    return v;
}

}  // namespace

result<std::vector<std::pair<std::string, json_value>>, json_error> parse_object(
    std::string_view body, bool allow_nested) {
    // One parser per thread: simdjson parsers reuse their buffers and are not thread-safe.
    thread_local simdjson::dom::parser parser;
    simdjson::dom::element doc;
    const simdjson::padded_string padded(body);
    if (const auto err = parser.parse(padded).get(doc)) {
        if (err == simdjson::NUMBER_ERROR || err == simdjson::NUMBER_OUT_OF_RANGE) {
            return unexpected{json_error{"invalid_json", "a number is malformed or too large"}};
        }
        return unexpected{json_error{"invalid_json", fmt::format("the body is not valid JSON: {}",
                                                                 simdjson::error_message(err))}};
    }
    simdjson::dom::object obj;
    if (doc.get_object().get(obj)) {
        return unexpected{json_error{"invalid_json", "the body must be a JSON object"}};
    }
    return convert_object(obj, allow_nested);
}

}  // namespace broker::api
