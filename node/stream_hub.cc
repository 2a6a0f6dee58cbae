#include "node/stream_hub.h"

#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace broker::node {

// Subscribers per customer, under one mutex. `publish` copies the customer's sinks out under the
// lock and calls them outside it, so a sink may subscribe or unsubscribe without deadlocking, and
// subscribe/unsubscribe from IO threads never wait for a sink to run.
//
// Consequence: a publish already in flight may still call a sink for a moment after its
// subscription was dropped. Sinks must tolerate that (the stream session's sink holds only a
// weak_ptr to its session).
struct stream_hub::impl {
    struct subscriber {
        std::uint64_t id = 0;
        std::shared_ptr<const api::update_sink> sink;  // shared: publish copies it cheaply
    };

    mutable std::mutex mutex;
    std::unordered_map<std::string, std::vector<subscriber>> by_customer;  // guarded by mutex
    std::uint64_t next_id = 1;                                             // guarded by mutex
    std::size_t count = 0;                                                 // guarded by mutex

    void remove(const std::string& customer_id, std::uint64_t id) {
        std::lock_guard lock(mutex);
        auto it = by_customer.find(customer_id);
        if (it == by_customer.end()) return;
        auto& subs = it->second;
        for (auto s = subs.begin(); s != subs.end(); ++s) {
            if (s->id != id) continue;
            subs.erase(s);
            --count;
            break;
        }
        if (subs.empty()) by_customer.erase(it);
    }

    // Unsubscribes on destruction. Holds the hub weakly, so it may outlive the hub. (Nested here
    // because impl is private to stream_hub.)
    class handle final : public api::subscription {
    public:
        handle(std::weak_ptr<impl> hub, std::string customer_id, std::uint64_t id)
            : hub_(std::move(hub)), customer_id_(std::move(customer_id)), id_(id) {}
        handle(const handle&) = delete;
        handle& operator=(const handle&) = delete;

        ~handle() override {
            if (auto hub = hub_.lock()) hub->remove(customer_id_, id_);
        }

    private:
        std::weak_ptr<impl> hub_;
        std::string customer_id_;
        std::uint64_t id_;
    };
};

stream_hub::stream_hub() : impl_(std::make_shared<impl>()) {}

stream_hub::~stream_hub() = default;

void stream_hub::publish(const std::string& customer_id, const api::trade_update& update) {
    publish(customer_id, std::make_shared<const std::vector<api::trade_update>>(1, update));
}

void stream_hub::publish(const std::string& customer_id, const api::update_batch& updates) {
    // Copy the sinks out so that none runs under the lock (see impl).
    std::vector<std::shared_ptr<const api::update_sink>> sinks;
    {
        std::lock_guard lock(impl_->mutex);
        auto it = impl_->by_customer.find(customer_id);
        if (it == impl_->by_customer.end()) return;
        sinks.reserve(it->second.size());
        for (const auto& s : it->second) sinks.push_back(s.sink);
    }
    for (const auto& sink : sinks) (*sink)(updates);
}

std::unique_ptr<api::subscription> stream_hub::subscribe(const std::string& customer_id,
                                                         api::update_sink sink) {
    auto shared_sink = std::make_shared<const api::update_sink>(std::move(sink));
    std::unique_ptr<impl::handle> handle;
    {
        std::lock_guard lock(impl_->mutex);
        const std::uint64_t id = impl_->next_id++;
        // The handle first: if the insertion throws, its destructor finds nothing to remove.
        handle = std::make_unique<impl::handle>(impl_, customer_id, id);
        impl_->by_customer[customer_id].push_back(impl::subscriber{id, std::move(shared_sink)});
        ++impl_->count;
    }
    return handle;
}

std::size_t stream_hub::subscribers() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->count;
}

}  // namespace broker::node
