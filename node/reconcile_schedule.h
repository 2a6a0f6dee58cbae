#pragma once

// When the watchdog asks the exchange again about a trade that stays IN_PROGRESS without news.
//
// The watchdog finds the stuck trades every round (a few times a second). Asking about each of
// them every round would send one status query per trade per round for as long as the exchange
// is slow or silent, just when it can least take the load. Instead each trade is asked at once
// when first found stuck, then after `first` and after twice as long each time, up to `most`;
// a trade that is no longer stuck is forgotten, so one that gets stuck again starts over.
//
// Not thread-safe: one caller at a time.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

namespace broker::node {

class reconcile_schedule {
  public:
    using clock = std::chrono::steady_clock;

    reconcile_schedule(clock::duration first, clock::duration most)
        : first_(first), most_(std::max(first, most)) {}

    // `stuck`: the ids of every trade stuck now. Returns those to ask about now, in the order
    // given, and forgets the trades not in `stuck`.
    [[nodiscard]] std::vector<std::uint64_t> due(const std::vector<std::uint64_t>& stuck,
                                                 clock::time_point now) {
        std::vector<std::uint64_t> ask;
        std::unordered_map<std::uint64_t, entry> kept;
        kept.reserve(stuck.size());
        for (const std::uint64_t id : stuck) {
            const auto known = asked_.find(id);
            entry e = known == asked_.end() ? entry{now, first_} : known->second;
            if (now >= e.next) {
                ask.push_back(id);
                e.next = now + e.wait;
                e.wait = std::min<clock::duration>(e.wait * 2, most_);
            }
            kept.insert_or_assign(id, e);
        }
        asked_ = std::move(kept);
        return ask;
    }

    [[nodiscard]] std::size_t tracked() const { return asked_.size(); }

  private:
    struct entry {
        clock::time_point next;  // ask again from then on
        clock::duration wait;    // the wait after that ask
    };

    clock::duration first_;
    clock::duration most_;
    std::unordered_map<std::uint64_t, entry> asked_;
};

}  // namespace broker::node
