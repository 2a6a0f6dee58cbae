// Trade JSON as clients read it: every field parses back to the trade's value, for awkward text too.
#include <doctest/doctest.h>

#include <simdjson.h>

#include <string>

#include "api/json.h"
#include "engine/money.h"
#include "engine/time.h"

using namespace broker;

namespace {

trade sample() {
    trade t;
    t.id = trade_id{0x0001'8f2a'3b4c'5d6eULL};
    t.customer_id = "alice";
    t.sym = *parse_symbol("BRK.B");
    t.trade_side = side::sell;
    t.qty = quantity{42};
    t.status = trade_status::placed;
    t.created_at = 1'700'000'000'123;
    t.updated_at = 1'700'000'000'456;
    return t;
}

std::string text(simdjson::dom::element e, const char* key) {
    std::string_view v;
    REQUIRE(e[key].get(v) == simdjson::SUCCESS);
    return std::string(v);
}

bool is_null(simdjson::dom::element e, const char* key) {
    return e[key].is_null();
}

}  // namespace

TEST_CASE("trade JSON parses back to every field of an open trade") {
    const trade t = sample();
    simdjson::dom::parser parser;
    const std::string json = api::trade_json(t);
    simdjson::dom::element doc;
    REQUIRE(parser.parse(json).get(doc) == simdjson::SUCCESS);
    CHECK(text(doc, "trade_id") == format_trade_id(t.id));
    CHECK(is_null(doc, "client_order_id"));
    CHECK(text(doc, "customer_id") == "alice");
    CHECK(text(doc, "symbol") == "BRK.B");
    CHECK(text(doc, "side") == "SELL");
    std::int64_t qty = 0;
    REQUIRE(doc["quantity"].get(qty) == simdjson::SUCCESS);
    CHECK(qty == 42);
    CHECK(text(doc, "status") == "PLACED");
    CHECK(is_null(doc, "reason"));
    CHECK(text(doc, "created_at") == "2023-11-14T22:13:20.123Z");
    CHECK(text(doc, "updated_at") == "2023-11-14T22:13:20.456Z");
    CHECK(is_null(doc, "filled_price"));
    CHECK(is_null(doc, "filled_at"));
    simdjson::dom::object obj;
    REQUIRE(doc.get(obj) == simdjson::SUCCESS);
    CHECK(obj.size() == 12);
}

TEST_CASE("trade JSON of filled and rejected trades, with text that needs escaping") {
    trade t = sample();
    t.status = trade_status::filled;
    t.fill_price = money{1'875'500};
    t.filled_at = 1'700'000'001'000;
    t.client_order_id = "a\"b\\c\nd\x01 e";
    t.customer_id = "bob\t";
    simdjson::dom::parser parser;
    std::string json = api::trade_json(t);
    simdjson::dom::element doc;
    REQUIRE(parser.parse(json).get(doc) == simdjson::SUCCESS);
    CHECK(text(doc, "client_order_id") == t.client_order_id);
    CHECK(text(doc, "customer_id") == "bob\t");
    CHECK(text(doc, "filled_price") == "187.5500");
    CHECK(text(doc, "filled_at") == "2023-11-14T22:13:21.000Z");
    CHECK(json.find("\\u0001") != std::string::npos);

    t.status = trade_status::rejected;
    t.fill_price.reset();
    t.reason = errc::insufficient_funds;
    t.client_order_id = "\xff\xfe_x";  // not UTF-8: shown with '?' so the output stays valid
    json = api::trade_json(t);
    REQUIRE(parser.parse(json).get(doc) == simdjson::SUCCESS);
    CHECK(text(doc, "status") == "REJECTED");
    CHECK(text(doc, "reason") == "insufficient_funds");
    CHECK(text(doc, "client_order_id") == "??_x");
    CHECK(is_null(doc, "filled_price"));

    std::string appended = "prefix:";
    api::append_trade_json(appended, t);
    CHECK(appended == "prefix:" + json);
}
