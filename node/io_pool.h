// The HTTP threads: one io_context per thread, each run by that thread alone.
//
// A connection belongs to one context for its whole life, so its handlers never run
// concurrently and need no strand; an answer rendered on the connection's own thread is written
// at once instead of being queued to it. The engine hands each round's answers to the thread
// whose connection asked (`current` at submission), one hand-off per thread and round. One
// shared context run by several threads costs more on this path: its idle threads wait on a
// condition variable for the one in epoll_wait to hand them work, and every answer crosses a
// strand's queue.
//
// Thread-safety: construct, then run() on the main thread; post() and current() from any thread.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

namespace broker::node {

class io_pool {
public:
    static constexpr std::size_t none = static_cast<std::size_t>(-1);

    explicit io_pool(std::size_t threads);
    io_pool(const io_pool&) = delete;
    io_pool& operator=(const io_pool&) = delete;
    ~io_pool();

    [[nodiscard]] std::size_t size() const { return contexts_.size(); }
    [[nodiscard]] boost::asio::io_context& context(std::size_t i) { return *contexts_[i]; }
    [[nodiscard]] std::vector<boost::asio::io_context*> contexts() const;

    // The index of the pool thread running the caller, or `none` off the pool's threads.
    [[nodiscard]] static std::size_t current();

    // Runs `fn` on thread `index` (an index past the pool, such as `none`, means thread 0).
    void post(std::size_t index, std::function<void()> fn);

    // Starts the threads, named io-0, io-1, ...; `on_start` runs first on each.
    void run(const std::function<void()>& on_start = {});
    // Stops every context at once (queued handlers are dropped).
    void stop();
    // Stops each context once the handlers already queued on it have run.
    void stop_after_queued();
    void join();

private:
    using work_guard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;
    std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;
    std::vector<work_guard> work_;  // a context without connections keeps running
    std::vector<std::thread> threads_;
};

}  // namespace broker::node
