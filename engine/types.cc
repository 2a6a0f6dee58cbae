#include "engine/types.h"

#include <array>
#include <utility>


namespace broker {

std::string format_trade_id(trade_id id) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out(16, '0');
    for (int i = 15; i >= 0; --i) {
        out[static_cast<std::size_t>(i)] = digits[(id.value >> (4 * (15 - i))) & 0x0f];
    }
    return out;
}

std::optional<trade_id> parse_trade_id(std::string_view text) {
    if (text.size() != 16) return std::nullopt;
    std::uint64_t v = 0;
    for (const char c : text) {
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= static_cast<std::uint64_t>(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v |= static_cast<std::uint64_t>(c - 'a' + 10);
        } else {
            return std::nullopt;
        }
    }
    return trade_id{v};
}

bool valid_customer_id(std::string_view id) {
    if (id.empty() || id.size() > limits::customer_id_max) return false;
    for (const char c : id) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                        c == '.' || c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

bool valid_client_order_id(std::string_view id) {
    if (id.empty() || id.size() > limits::client_order_id_max) return false;
    for (const char c : id) {
        if (c < 0x21 || c > 0x7e || c == '"' || c == '\\') return false;
    }
    return true;
}

std::optional<symbol> parse_symbol(std::string_view text) {
    if (text.empty() || text.size() > limits::symbol_max) return std::nullopt;
    std::uint64_t packed = 0;
    for (std::size_t i = 0; i < limits::symbol_max; ++i) {
        std::uint64_t c = 0;
        if (i < text.size()) {
            const char ch = text[i];
            if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.')) {
                return std::nullopt;
            }
            c = static_cast<unsigned char>(ch);
        }
        packed = (packed << 8) | c;
    }
    return symbol{packed};
}

bool valid_symbol(symbol s) {
    const auto parsed = parse_symbol(to_string(s));
    return parsed.has_value() && *parsed == s;
}

std::string to_string(symbol s) {
    std::string out;
    for (int shift = 56; shift >= 0; shift -= 8) {
        const char c = static_cast<char>((s.packed >> shift) & 0xff);
        if (c == 0) break;
        out.push_back(c);
    }
    return out;
}

std::string_view to_string(side s) { return s == side::buy ? "BUY" : "SELL"; }

std::optional<side> parse_side(std::string_view text) {
    if (text == "BUY") return side::buy;
    if (text == "SELL") return side::sell;
    return std::nullopt;
}

std::string_view to_string(trade_status s) {
    switch (s) {
        case trade_status::placed: return "PLACED";
        case trade_status::in_progress: return "IN_PROGRESS";
        case trade_status::filled: return "FILLED";
        case trade_status::rejected: return "REJECTED";
        case trade_status::canceled: return "CANCELED";
    }
    return "UNKNOWN";
}

namespace {
constexpr std::array<std::pair<errc, std::string_view>, 26> errc_names{{
    {errc::ok, "ok"},
    {errc::invalid_quantity, "invalid_quantity"},
    {errc::invalid_symbol, "invalid_symbol"},
    {errc::unknown_symbol, "unknown_symbol"},
    {errc::invalid_price, "invalid_price"},
    {errc::invalid_customer_id, "invalid_customer_id"},
    {errc::invalid_client_order_id, "invalid_client_order_id"},
    {errc::invalid_amount, "invalid_amount"},
    {errc::notional_too_large, "notional_too_large"},
    {errc::insufficient_funds, "insufficient_funds"},
    {errc::insufficient_shares, "insufficient_shares"},
    {errc::market_closed, "market_closed"},
    {errc::too_many_open_trades, "too_many_open_trades"},
    {errc::too_many_positions, "too_many_positions"},
    {errc::customer_not_found, "customer_not_found"},
    {errc::trade_not_found, "trade_not_found"},
    {errc::customer_exists_different, "customer_exists_different"},
    {errc::trade_not_cancelable, "trade_not_cancelable"},
    {errc::trade_not_in_progress, "trade_not_in_progress"},
    {errc::fill_mismatch, "fill_mismatch"},
    {errc::trade_not_modifiable, "trade_not_modifiable"},
    {errc::client_order_id_conflict, "client_order_id_conflict"},
    {errc::stale_request, "stale_request"},
    {errc::exchange_rejected, "exchange_rejected"},
    {errc::limit_not_marketable, "limit_not_marketable"},
    {errc::expired, "expired"},
}};
}  // namespace

std::string_view to_string(errc e) {
    for (const auto& [code, name] : errc_names) {
        if (code == e) return name;
    }
    return "unknown";
}

std::optional<errc> parse_errc(std::string_view text) {
    for (const auto& [code, name] : errc_names) {
        if (name == text) return code;
    }
    return std::nullopt;
}

}  // namespace broker
