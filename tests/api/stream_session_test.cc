// The WebSocket stream session on a real loopback socket, against the in-memory services: what a
// client receives while the session replays the stored backlog, and how it learns that the store
// failed in the middle of it.
#include "api/stream_session.h"

#include <doctest/doctest.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "api/json.h"
#include "tests/api/memory_services.h"

using namespace broker;
using broker::testing::memory_services;
namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

namespace {

struct received {
    std::vector<std::uint64_t> sequences;  // of the trade_update frames, in arrival order
    bool bad_frame = false;                // a frame that is not a JSON object
    bool finished = false;                 // false: 10 s passed first
    beast::error_code ended;               // how reading ended (none: the client closed)
    websocket::close_reason reason;
};

// Runs one stream session of `customer` from `since` on a loopback socket and reads frames until
// the server closes, `want` updates have come (the client then closes), or 10 s pass. Both sides
// are asynchronous, each on its own io_context bounded in time, so that a session that stops
// sending fails the test instead of hanging it.
received stream_once(memory_services& svc, const std::string& customer, std::uint64_t since,
                     api::stream_config config, std::size_t want) {
    net::io_context server_io(1);
    tcp::acceptor acceptor(server_io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    tcp::socket accepted(server_io);
    beast::flat_buffer upgrade_buffer;
    http::request<http::string_body> upgrade;
    acceptor.async_accept(accepted, [&](beast::error_code ec) {
        if (ec) return;
        http::async_read(
            accepted, upgrade_buffer, upgrade, [&](beast::error_code ec2, std::size_t) {
                if (ec2) return;
                api::start_stream_session(beast::tcp_stream(std::move(accepted)),
                                          std::move(upgrade), svc, customer, since, config);
            });
    });
    std::thread server([&] { server_io.run_for(std::chrono::seconds(15)); });

    net::io_context client_io(1);
    websocket::stream<tcp::socket> ws(client_io);
    received out;
    beast::flat_buffer frame;
    std::function<void(beast::error_code, std::size_t)> on_frame = [&](beast::error_code ec,
                                                                       std::size_t) {
        if (ec) {
            out.ended = ec;
            out.reason = ws.reason();
            out.finished = true;
            return;
        }
        auto obj = api::parse_object(beast::buffers_to_string(frame.data()));
        frame.consume(frame.size());
        if (!obj) {
            out.bad_frame = true;
        } else {
            for (const auto& [key, value] : *obj) {
                if (key == "sequence") {
                    out.sequences.push_back(static_cast<std::uint64_t>(value.integer));
                }
            }
        }
        if (out.sequences.size() < want) return ws.async_read(frame, on_frame);
        ws.async_close(websocket::close_code::normal,
                       [&](beast::error_code) { out.finished = true; });
    };
    ws.next_layer().async_connect(acceptor.local_endpoint(), [&](beast::error_code ec) {
        if (ec) return;
        ws.async_handshake("127.0.0.1", "/v1/stream?since=" + std::to_string(since),
                           [&](beast::error_code ec2) {
                               if (ec2) return;
                               ws.async_read(frame, on_frame);
                           });
    });
    client_io.run_for(std::chrono::seconds(10));
    server_io.stop();
    server.join();
    return out;
}

void place_five(memory_services& svc) {
    svc.s = state{};
    REQUIRE(svc.submit(open_customer{"alice", money{1'000'000 * limits::ticks_per_usd}, {}},
                       [](api::outcome o) { REQUIRE(o.code == errc::ok); }));
    for (int i = 0; i < 5; ++i) {
        // The first is sent (PLACED, IN_PROGRESS); the others wait PLACED behind it.
        place_trade p{"alice",   "",          *parse_symbol("AAPL"),
                      side::buy, quantity{1}, money{100 * limits::ticks_per_usd},
                      true,      500};
        REQUIRE(svc.submit(p, [](api::outcome o) { REQUIRE(o.code == errc::ok); }));
    }
    REQUIRE(svc.updates["alice"].size() == 6);
}

}  // namespace

TEST_CASE("a stream replays the stored backlog in batches, in order, without gaps") {
    memory_services svc;
    place_five(svc);
    api::stream_config config;
    config.backlog_batch = 2;
    const auto got = stream_once(svc, "alice", 1, config, 5);
    CHECK(got.finished);
    CHECK_FALSE(got.bad_frame);
    CHECK(got.sequences == std::vector<std::uint64_t>{2, 3, 4, 5, 6});
    CHECK_FALSE(got.ended);
}

TEST_CASE("a store that fails during the catch-up closes the stream with 1013 storage_error") {
    memory_services svc;
    place_five(svc);
    api::stream_config config;
    config.backlog_batch = 2;
    int reads = 0;
    svc.before_updates_since = [&] {
        if (++reads == 2) svc.store_unreadable = true;  // the second batch cannot be read
    };
    const auto got = stream_once(svc, "alice", 0, config, 6);
    CHECK(got.finished);
    CHECK_FALSE(got.bad_frame);
    CHECK(got.sequences == std::vector<std::uint64_t>{1, 2});
    CHECK(got.ended == websocket::error::closed);
    CHECK(got.reason.code == websocket::close_code::try_again_later);
    CHECK(got.reason.reason == "storage_error");
}
