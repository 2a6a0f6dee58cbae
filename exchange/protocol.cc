// Parsers for the exchange's answers: see protocol.h.
#include "exchange/protocol.h"

#include <simdjson.h>

#include <string>

#include "engine/limits.h"
#include "engine/time.h"

namespace broker::exchange {

std::optional<apply_execution> parse_order_status(const order& o, std::string_view body) {
    thread_local simdjson::dom::parser parser;
    simdjson::dom::element doc;
    if (parser.parse(simdjson::padded_string(body)).get(doc)) return std::nullopt;
    std::string_view status, exec_id, executed_at;
    if (doc["status"].get(status) || (status != "FILLED" && status != "REJECTED")) return std::nullopt;
    apply_execution x;
    x.id = o.id;
    x.filled = status == "FILLED";
    x.qty = o.qty;
    std::int64_t qty = 0;
    if (!doc["quantity"].get(qty)) x.qty = quantity{qty};
    if (!doc["exec_id"].get(exec_id)) x.exec_id = bounded_exec_id(exec_id);
    if (!doc["executed_at"].get(executed_at)) x.executed_at = parse_rfc3339_ms(executed_at).value_or(0);
    if (x.filled) {
        std::string_view price;
        if (doc["fill_price"].get(price)) return std::nullopt;
        const auto p = parse_money(price, money{limits::price_max_ticks});
        if (!p) return std::nullopt;
        x.fill_price = *p;
    } else {
        std::string_view reason;
        const auto code = doc["reason"].get(reason) ? std::nullopt : parse_errc(reason);
        x.reason = code && static_cast<int>(*code) >= 5000 ? *code : errc::exchange_rejected;
    }
    return x;
}

std::optional<std::vector<std::pair<symbol, money>>> parse_quotes(std::string_view body) {
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    simdjson::dom::array quotes;
    if (parser.parse(simdjson::padded_string(body)).get(doc) || doc["quotes"].get(quotes)) {
        return std::nullopt;
    }
    std::vector<std::pair<symbol, money>> out;
    for (auto q : quotes) {
        std::string_view sym_text, price_text;
        if (q["symbol"].get(sym_text) || q["price"].get(price_text)) continue;
        const auto sym = parse_symbol(sym_text);
        const auto price = parse_money(price_text, money{limits::price_max_ticks});
        if (sym && price && price->ticks > 0) out.emplace_back(*sym, *price);
    }
    return out;
}

}  // namespace broker::exchange
