#include "engine/events.h"

namespace broker {

event_type type_of(const event_body& body) {
    // The variant's alternatives are declared in event_type order, starting at 1.
    return static_cast<event_type>(body.index() + 1);
}

std::string_view to_string(event_type t) {
    switch (t) {
        case event_type::customer_opened: return "customer_opened";
        case event_type::trade_placed: return "trade_placed";
        case event_type::trade_refused: return "trade_refused";
        case event_type::trade_submitted: return "trade_submitted";
        case event_type::trade_filled: return "trade_filled";
        case event_type::trade_rejected: return "trade_rejected";
        case event_type::trade_canceled: return "trade_canceled";
        case event_type::trade_modified: return "trade_modified";
    }
    return "unknown";
}

static_assert(std::variant_size_v<event_body> == 8, "add the new event to event_type too");

}  // namespace broker
