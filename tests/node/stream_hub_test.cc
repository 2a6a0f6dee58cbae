#include "node/stream_hub.h"

#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

namespace broker::node {
namespace {

api::trade_update update(std::uint64_t sequence, const std::string& customer_id) {
    api::trade_update u;
    u.sequence = sequence;
    u.snapshot.customer_id = customer_id;
    return u;
}

// Records what a sink received. Sinks run on the publishing thread.
struct recorder {
    std::mutex mutex;
    std::vector<std::uint64_t> sequences;

    api::update_sink sink() {
        return [this](const api::update_batch& batch) {
            std::lock_guard lock(mutex);
            for (const auto& u : *batch) sequences.push_back(u.sequence);
        };
    }
    std::vector<std::uint64_t> seen() {
        std::lock_guard lock(mutex);
        return sequences;
    }
};

TEST_CASE("publish reaches only the customer's subscribers, in order") {
    stream_hub hub;
    recorder alice1, alice2, bob;
    auto s1 = hub.subscribe("alice", alice1.sink());
    auto s2 = hub.subscribe("alice", alice2.sink());
    auto s3 = hub.subscribe("bob", bob.sink());
    CHECK(hub.subscribers() == 3);

    for (std::uint64_t i = 1; i <= 5; ++i) hub.publish("alice", update(i, "alice"));
    hub.publish("bob", update(1, "bob"));
    hub.publish("carol", update(1, "carol"));  // nobody listens: no effect

    const std::vector<std::uint64_t> one_to_five{1, 2, 3, 4, 5};
    CHECK(alice1.seen() == one_to_five);
    CHECK(alice2.seen() == one_to_five);
    CHECK(bob.seen() == std::vector<std::uint64_t>{1});
}

TEST_CASE("the sink gets the published update") {
    stream_hub hub;
    api::trade_update got;
    auto s = hub.subscribe("alice", [&](const api::update_batch& b) {
        REQUIRE(b->size() == 1);
        got = b->front();
    });
    hub.publish("alice", update(7, "alice"));
    CHECK(got.sequence == 7);
    CHECK(got.snapshot.customer_id == "alice");
}

TEST_CASE("a batch reaches every subscriber of the customer once, in order, shared") {
    stream_hub hub;
    std::vector<api::update_batch> first, second;
    auto s1 = hub.subscribe("alice", [&](const api::update_batch& b) { first.push_back(b); });
    auto s2 = hub.subscribe("alice", [&](const api::update_batch& b) { second.push_back(b); });
    auto batch = std::make_shared<std::vector<api::trade_update>>();
    for (std::uint64_t i = 1; i <= 3; ++i) batch->push_back(update(i, "alice"));
    hub.publish("alice", api::update_batch(batch));
    hub.publish("bob", api::update_batch(batch));  // nobody listens to bob
    REQUIRE(first.size() == 1);
    REQUIRE(second.size() == 1);
    CHECK(first[0].get() == second[0].get());  // one copy of the trades, however many streams
    std::vector<std::uint64_t> seqs;
    for (const auto& u : *first[0]) seqs.push_back(u.sequence);
    CHECK(seqs == std::vector<std::uint64_t>{1, 2, 3});
}

TEST_CASE("dropping the subscription stops delivery") {
    stream_hub hub;
    recorder kept, dropped;
    auto keep = hub.subscribe("alice", kept.sink());
    auto drop = hub.subscribe("alice", dropped.sink());
    hub.publish("alice", update(1, "alice"));
    drop.reset();
    CHECK(hub.subscribers() == 1);
    hub.publish("alice", update(2, "alice"));

    CHECK(kept.seen() == std::vector<std::uint64_t>{1, 2});
    CHECK(dropped.seen() == std::vector<std::uint64_t>{1});

    keep.reset();
    CHECK(hub.subscribers() == 0);
    hub.publish("alice", update(3, "alice"));
    CHECK(kept.seen() == std::vector<std::uint64_t>{1, 2});
}

TEST_CASE("a subscription may outlive the hub") {
    recorder r;
    std::unique_ptr<api::subscription> s;
    {
        stream_hub hub;
        s = hub.subscribe("alice", r.sink());
        hub.publish("alice", update(1, "alice"));
    }
    s.reset();  // the hub is gone: nothing to remove, and no crash
    CHECK(r.seen() == std::vector<std::uint64_t>{1});
}

TEST_CASE("a sink may unsubscribe itself and subscribe others") {
    // publish does not hold the hub's lock while a sink runs.
    stream_hub hub;
    std::unique_ptr<api::subscription> self;
    std::unique_ptr<api::subscription> other;
    int calls = 0;
    self = hub.subscribe("alice", [&](const api::update_batch&) {
        ++calls;
        self.reset();
        other = hub.subscribe("alice", [](const api::update_batch&) {});
    });
    hub.publish("alice", update(1, "alice"));
    hub.publish("alice", update(2, "alice"));
    CHECK(calls == 1);
    CHECK(hub.subscribers() == 1);
}

TEST_CASE("concurrent publish, subscribe and unsubscribe") {
    stream_hub hub;
    constexpr int publishes = 2000;
    constexpr int churn_rounds = 500;

    // One long-lived subscriber per customer sees every update of its customer, in order.
    recorder alice, bob;
    auto sa = hub.subscribe("alice", alice.sink());
    auto sb = hub.subscribe("bob", bob.sink());

    std::atomic<std::uint64_t> churn_calls{0};
    std::vector<std::thread> threads;
    // The engine thread: one publisher, as in brokerd.
    threads.emplace_back([&] {
        for (std::uint64_t i = 1; i <= publishes; ++i) {
            hub.publish("alice", update(i, "alice"));
            hub.publish("bob", update(i, "bob"));
        }
    });
    // IO threads subscribing and dropping subscriptions meanwhile.
    for (int t = 0; t < 3; ++t) {
        threads.emplace_back([&, t] {
            const std::string customer = t % 2 == 0 ? "alice" : "bob";
            for (int i = 0; i < churn_rounds; ++i) {
                auto s = hub.subscribe(customer, [&](const api::update_batch&) {
                    churn_calls.fetch_add(1, std::memory_order_relaxed);
                });
                (void)hub.subscribers();
            }
        });
    }
    for (auto& t : threads) t.join();

    std::vector<std::uint64_t> expected;
    for (std::uint64_t i = 1; i <= publishes; ++i) expected.push_back(i);
    CHECK(alice.seen() == expected);
    CHECK(bob.seen() == expected);
    CHECK(hub.subscribers() == 2);
}

}  // namespace
}  // namespace broker::node
