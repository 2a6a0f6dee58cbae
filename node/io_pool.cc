#include "node/io_pool.h"

#include <pthread.h>

#include <string>

#include <boost/asio/post.hpp>

namespace broker::node {

namespace {
thread_local std::size_t current_index = io_pool::none;
}

io_pool::io_pool(std::size_t threads) {
    contexts_.reserve(threads);
    // Concurrency hint 1: each context is run by one thread, so its scheduler never hands work
    // to another thread.
    for (std::size_t i = 0; i < threads; ++i) {
        contexts_.push_back(std::make_unique<boost::asio::io_context>(1));
        work_.push_back(boost::asio::make_work_guard(*contexts_.back()));
    }
}

io_pool::~io_pool() {
    stop();
    join();
}

std::vector<boost::asio::io_context*> io_pool::contexts() const {
    std::vector<boost::asio::io_context*> out;
    out.reserve(contexts_.size());
    for (const auto& c : contexts_) out.push_back(c.get());
    return out;
}

std::size_t io_pool::current() { return current_index; }

void io_pool::post(std::size_t index, std::function<void()> fn) {
    boost::asio::post(*contexts_[index < contexts_.size() ? index : 0], std::move(fn));
}

void io_pool::run(const std::function<void()>& on_start) {
    for (std::size_t i = 0; i < contexts_.size(); ++i) {
        threads_.emplace_back([this, i, on_start] {
            const std::string name = "io-" + std::to_string(i);  // as top -H and perf show it
            pthread_setname_np(pthread_self(), name.c_str());
            current_index = i;
            if (on_start) on_start();
            contexts_[i]->run();
        });
    }
}

void io_pool::stop() {
    for (auto& w : work_) w.reset();
    for (auto& c : contexts_) c->stop();
}

void io_pool::stop_after_queued() {
    for (auto& w : work_) w.reset();
    for (auto& c : contexts_) {
        boost::asio::post(*c, [&c = *c] { c.stop(); });
    }
}

void io_pool::join() {
    for (auto& t : threads_) {
        if (t.joinable()) t.join();
    }
    threads_.clear();
}

}  // namespace broker::node
