// Group commit for exchange-sim's order log: one thread writes whatever records have queued up
// since its last fsync in one write and one fdatasync, then hands each completion back to the io
// thread. Many concurrent POSTs thus share one fsync instead of queueing behind one each.
//
// A failed write or fsync ends the process (exit 1): after a failed fsync the kernel may have
// dropped the dirty pages, so the only trustworthy state is what a restart recovers from the
// file -- and nothing that was not durable has been acknowledged to anyone.
//
// Bounds: the queue holds what its callers have in flight, which they bound (one request per
// connection, execute_inflight_max executions, one acknowledgement per delivery in flight).
//
// Thread-safety: `append` may be called from any thread; completions run on the io_context.
#pragma once

#include <boost/asio/io_context.hpp>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "exchange/sim/order_log.h"

namespace broker::exchange::sim {

class log_writer {
  public:
    log_writer(std::unique_ptr<order_log> log, boost::asio::io_context& io);
    ~log_writer();
    log_writer(const log_writer&) = delete;
    log_writer& operator=(const log_writer&) = delete;

    // Queues one record; `durable` is posted to the io_context once it is on disk.
    void append(const log_record& r, std::function<void()> durable);

    // Writes what is queued, then stops the thread. Completions not yet run are dropped.
    void stop();

  private:
    struct pending {
        std::string framed;
        std::function<void()> durable;
    };

    void run();

    std::unique_ptr<order_log> log_;
    boost::asio::io_context& io_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::vector<pending> queue_;  // guarded by mutex_
    bool stopping_ = false;       // guarded by mutex_
    std::thread thread_;
};

}  // namespace broker::exchange::sim
