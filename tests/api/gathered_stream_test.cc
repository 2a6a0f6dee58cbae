// The write-gathering adapter under the WebSocket stream, on Beast's in-memory test stream, which
// counts the writes it is given and can take fewer bytes per write than asked.
#include "api/gathered_stream.h"

#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <string>

using broker::api::gathered_stream;
namespace net = boost::asio;
namespace beast = boost::beast;

namespace {

struct wrote {
    bool called = false;
    beast::error_code ec;
    std::size_t n = 0;
};

// One async_write_some, run to its completion.
wrote write_some(net::io_context& io, gathered_stream<beast::test::stream>& s,
                 const std::string& bytes) {
    wrote w;
    s.async_write_some(net::buffer(bytes), [&](beast::error_code ec, std::size_t n) {
        w = wrote{true, ec, n};
    });
    CHECK_FALSE(w.called);  // never completed inside the call
    io.restart();
    io.run();
    return w;
}

}  // namespace

TEST_CASE("held writes are done at once and reach the peer with the next write, in one write") {
    net::io_context io;
    gathered_stream<beast::test::stream> s(io);
    beast::test::stream peer(io);
    s.next_layer().connect(peer);

    s.hold();
    const auto one = write_some(io, s, "one,");
    const auto two = write_some(io, s, "two,");
    CHECK(one.called);
    CHECK_FALSE(one.ec);
    CHECK(one.n == 4);
    CHECK(two.n == 4);
    CHECK(peer.str().empty());
    CHECK(s.next_layer().nwrite() == 0);
    CHECK(s.held_bytes() == 8);

    s.release();
    const auto three = write_some(io, s, "three");
    CHECK_FALSE(three.ec);
    CHECK(three.n == 5);  // the caller's bytes only, not the held ones
    CHECK(peer.str() == "one,two,three");
    CHECK(s.next_layer().nwrite() == 1);
    CHECK(s.held_bytes() == 0);
}

TEST_CASE("without a hold every write goes straight to the next layer") {
    net::io_context io;
    gathered_stream<beast::test::stream> s(io);
    beast::test::stream peer(io);
    s.next_layer().connect(peer);

    CHECK(write_some(io, s, "a").n == 1);
    CHECK(write_some(io, s, "bc").n == 2);
    CHECK(peer.str() == "abc");
    CHECK(s.next_layer().nwrite() == 2);
}

TEST_CASE("a gathered write the next layer takes in part goes on from where it stopped") {
    net::io_context io;
    gathered_stream<beast::test::stream> s(io);
    beast::test::stream peer(io);
    s.next_layer().connect(peer);
    s.next_layer().write_size(3);  // at most 3 bytes per write

    s.hold();
    CHECK(write_some(io, s, "abcdefg").n == 7);
    s.release();

    SUBCASE("one write_some reports some of the caller's bytes, never none") {
        // "abc" (held only), then "def" (held only), then "g" + "hi": 2 of the caller's.
        const auto first = write_some(io, s, "hij");
        CHECK_FALSE(first.ec);
        CHECK(first.n == 2);
        CHECK(s.held_bytes() == 0);
        CHECK(peer.str() == "abcdefghi");
        CHECK(s.next_layer().nwrite() == 3);
    }
    SUBCASE("a write loop, as Beast's WebSocket stream uses, sends every byte once, in order") {
        const std::string rest = "hij";
        beast::error_code ec;
        std::size_t n = 0;
        net::async_write(s, net::buffer(rest), [&](beast::error_code e, std::size_t k) {
            ec = e;
            n = k;
        });
        io.restart();
        io.run();
        CHECK_FALSE(ec);
        CHECK(n == 3);
        CHECK(peer.str() == "abcdefghij");
        CHECK(s.held_bytes() == 0);
        CHECK(s.next_layer().nwrite() == 4);  // 10 bytes, 3 at a time
    }
}

TEST_CASE("a failed gathered write reports the failure and writes nothing more") {
    net::io_context io;
    beast::test::fail_count fails(0);  // the next layer's first operation fails
    gathered_stream<beast::test::stream> s(io, fails);
    beast::test::stream peer(io);
    s.next_layer().connect(peer);

    s.hold();
    CHECK(write_some(io, s, "held").n == 4);  // not yet given to the next layer
    s.release();
    const auto failed = write_some(io, s, "more");
    CHECK(failed.ec == beast::test::error::test_failure);
    CHECK(failed.n == 0);
    CHECK(peer.str().empty());
}
