#pragma once

// A stream adapter that hands several small writes to the kernel as one: while held, what is
// written is copied aside and reported written at once; the first write after release() sends
// the held bytes and its own in one gathered write of the next layer.
//
// The stream session puts it under Beast's WebSocket stream, so that the frames of one commit
// (a placement and its submission; a batch of the backlog) leave in one sendmsg instead of one
// each. Every sendmsg costs a system call, and on loopback the sender also runs the receiver's
// TCP input; TCP_CORK saved the segments but not the calls (two setsockopt calls more per batch).
//
// Rules for the writer (Beast's stream keeps them: one write at a time, in order):
//   - hold() only while more writes will follow, and release() before the last of them;
//   - bytes held when the writer stops writing stay held: release() and write again (Beast's
//     close frame does) or close the socket.
// Reads, the executor and the WebSocket teardown go straight to the next layer.

#include <algorithm>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/buffers_cat.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/beast/websocket/teardown.hpp>
#include <cstddef>
#include <string>
#include <utility>

namespace broker::api {

template <class NextLayer>
class gathered_stream {
  public:
    using next_layer_type = NextLayer;
    using executor_type = typename NextLayer::executor_type;

    template <class... Args>
    explicit gathered_stream(Args&&... args) : next_(std::forward<Args>(args)...) {}

    gathered_stream(gathered_stream&&) = default;
    gathered_stream& operator=(gathered_stream&&) = default;
    gathered_stream(const gathered_stream&) = delete;
    gathered_stream& operator=(const gathered_stream&) = delete;
    ~gathered_stream() = default;

    executor_type get_executor() noexcept { return next_.get_executor(); }
    next_layer_type& next_layer() noexcept { return next_; }
    const next_layer_type& next_layer() const noexcept { return next_; }

    void hold() noexcept { holding_ = true; }
    void release() noexcept { holding_ = false; }
    [[nodiscard]] bool holding() const noexcept { return holding_; }
    [[nodiscard]] std::size_t held_bytes() const noexcept { return held_.size(); }

    template <class MutableBufferSequence, class ReadHandler>
    auto async_read_some(const MutableBufferSequence& buffers, ReadHandler&& handler) {
        return next_.async_read_some(buffers, std::forward<ReadHandler>(handler));
    }

    template <class ConstBufferSequence, class WriteHandler>
    auto async_write_some(const ConstBufferSequence& buffers, WriteHandler&& handler) {
        return boost::asio::async_initiate<WriteHandler,
                                           void(boost::beast::error_code, std::size_t)>(
            [this](auto h, const ConstBufferSequence& b) { start_write(std::move(h), b); }, handler,
            buffers);
    }

  private:
    template <class Handler, class Buffers>
    void start_write(Handler h, const Buffers& buffers) {
        namespace net = boost::asio;
        if (holding_) {
            const std::size_t n = net::buffer_size(buffers);
            const std::size_t at = held_.size();
            held_.resize(at + n);
            net::buffer_copy(net::buffer(held_.data() + at, n), buffers);
            // Done, but never inside the call that started it (Asio's rule for completions).
            const auto ex = net::get_associated_executor(h, next_.get_executor());
            net::post(
                ex, boost::beast::bind_front_handler(std::move(h), boost::beast::error_code{}, n));
            return;
        }
        if (held_.empty()) {
            next_.async_write_some(buffers, std::move(h));
            return;
        }
        write_gathered(std::move(h), buffers);
    }

    // The held bytes lead, in the same write. The count reported is of the caller's bytes only,
    // and never 0 for bytes given (Asio's write loops take 0 as the end): a write that takes no
    // more than held bytes is followed by another, until one takes some of the caller's.
    template <class Handler, class Buffers>
    void write_gathered(Handler h, const Buffers& buffers) {
        namespace net = boost::asio;
        next_.async_write_some(
            boost::beast::buffers_cat(net::const_buffer(held_.data(), held_.size()), buffers),
            [this, h = std::move(h), buffers](boost::beast::error_code ec, std::size_t n) mutable {
                const std::size_t from_held = std::min(n, held_.size());
                held_.erase(0, from_held);
                const std::size_t mine = n - from_held;
                if (!ec && mine == 0 && net::buffer_size(buffers) > 0) {
                    return write_gathered(std::move(h), buffers);
                }
                std::move(h)(ec, mine);
            });
    }

    NextLayer next_;
    std::string held_;
    bool holding_ = false;
};

// Beast's WebSocket close ends with a teardown of the layer beneath; found here by argument-
// dependent lookup, it tears down the next layer.
template <class NextLayer>
void teardown(boost::beast::role_type role, gathered_stream<NextLayer>& stream,
              boost::beast::error_code& ec) {
    using boost::beast::websocket::teardown;
    teardown(role, stream.next_layer(), ec);
}

template <class NextLayer, class TeardownHandler>
void async_teardown(boost::beast::role_type role, gathered_stream<NextLayer>& stream,
                    TeardownHandler&& handler) {
    using boost::beast::websocket::async_teardown;
    async_teardown(role, stream.next_layer(), std::forward<TeardownHandler>(handler));
}

}  // namespace broker::api
