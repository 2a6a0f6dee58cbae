#include "exchange/sim/log_writer.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <cstdlib>

namespace broker::exchange::sim {

log_writer::log_writer(std::unique_ptr<order_log> log, boost::asio::io_context& io)
    : log_(std::move(log)), io_(io) {
    thread_ = std::thread([this] { run(); });
}

log_writer::~log_writer() {
    stop();
}

void log_writer::append(const log_record& r, std::function<void()> durable) {
    pending p;
    encode_record(r, p.framed);
    p.durable = std::move(durable);
    {
        std::lock_guard lock(mutex_);
        queue_.push_back(std::move(p));
    }
    wake_.notify_one();
}

void log_writer::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
}

void log_writer::run() {
    std::vector<pending> batch;
    std::string bytes;
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return;  // stopping, and everything is written
            batch.swap(queue_);
        }
        bytes.clear();
        for (const auto& p : batch) bytes += p.framed;
        if (auto ok = log_->append(bytes); !ok) {
            spdlog::critical("order log: {}; exiting so that a restart recovers from the file",
                             ok.error().what);
            std::_Exit(1);
        }
        for (auto& p : batch) {
            if (p.durable) boost::asio::post(io_, std::move(p.durable));
        }
        batch.clear();
    }
}

}  // namespace broker::exchange::sim
