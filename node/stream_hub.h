// The stream hub: fans each customer's durable trade updates out to its live WebSocket streams.
//
// The engine thread calls `publish` right after a commit, in sequence order; subscribers get each
// update through their sink on that thread and must not block (they copy and post). Subscribe
// and unsubscribe may be called from any thread.
#pragma once

#include <memory>
#include <string>

#include "api/services.h"

namespace broker::node {

class stream_hub {
public:
    stream_hub();
    ~stream_hub();
    stream_hub(const stream_hub&) = delete;
    stream_hub& operator=(const stream_hub&) = delete;

    void publish(const std::string& customer_id, const api::trade_update& update);
    // Several updates of one customer at once, in sequence order: one call per subscriber.
    void publish(const std::string& customer_id, const api::update_batch& updates);
    [[nodiscard]] std::unique_ptr<api::subscription> subscribe(const std::string& customer_id,
                                                               api::update_sink sink);
    // Live subscriptions, for metrics and tests.
    [[nodiscard]] std::size_t subscribers() const;

private:
    struct impl;
    std::shared_ptr<impl> impl_;
};

}  // namespace broker::node
