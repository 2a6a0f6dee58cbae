#include "node/demo.h"

#include <chrono>
#include <future>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "api/jwt.h"

namespace broker::node {

void open_demo_customers(engine_runner& runner, exchange::gateway*) {
    constexpr int customers = 5;
    for (int i = 1; i <= customers; ++i) {
        open_customer c{fmt::format("demo-{}", i), money{100'000 * limits::ticks_per_usd},
                        {{*parse_symbol("AAPL"), quantity{50}}, {*parse_symbol("MSFT"), quantity{20}}}};
        std::promise<api::outcome> done;
        auto answer = done.get_future();
        if (!runner.submit(std::move(c), [&done](api::outcome o) { done.set_value(std::move(o)); })) {
            spdlog::error("demo: the engine refused to queue demo-{}", i);
            return;
        }
        const auto o = answer.get();
        if (o.code != errc::ok) {
            spdlog::warn("demo: demo-{} not opened: {}", i, to_string(o.code));
        }
    }
    spdlog::info("demo: customers demo-1..demo-{} have $100,000.0000, 50 AAPL and 20 MSFT", customers);
}

void print_demo_banner(const std::string& jwt_secret, const boost::asio::ip::tcp::endpoint& at) {
    const auto now_s = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
    const std::string token = api::sign_jwt(api::claims{"demo-1", "", now_s + 86'400, now_s}, jwt_secret);
    const std::string host = at.address().is_v6() ? fmt::format("[{}]", at.address().to_string())
                                                  : at.address().to_string();
    const std::string base = fmt::format("http://{}:{}", host, at.port());
    fmt::print(
        "\nbrokerd is up with the embedded SIMULATED exchange and demo customers.\n"
        "Token for demo-1 (24 h):\n  export TOKEN={}\n"
        "Buy 5 AAPL:\n  curl -s -X POST {}/v1/trades -H \"Authorization: Bearer $TOKEN\" "
        "-H 'Content-Type: application/json' -d '{{\"symbol\":\"AAPL\",\"side\":\"BUY\",\"quantity\":5}}'\n"
        "Account and positions:\n  curl -s {}/v1/account -H \"Authorization: Bearer $TOKEN\"\n"
        "  curl -s {}/v1/positions -H \"Authorization: Bearer $TOKEN\"\n\n",
        token, base, base, base);
    std::fflush(stdout);
}

}  // namespace broker::node
