// A log-linear latency histogram in the style of HdrHistogram (Debian packages one only for Java
// and Go, so this is the small C++ version the benchmark needs).
//
// Values are non-negative integers (broker-bench records nanoseconds). Values below 128 have a
// bucket each; above, every power-of-two range [2^k, 2^(k+1)) is split into 64 equal buckets, so
// any recorded value is known to within 1/64 (1.6%) of itself, over the whole range up to 2^62.
// Memory is fixed (a few thousand counters), recording is O(1) with no allocation, and two
// histograms merge by adding counters, which is how per-connection histograms are combined.
//
// Thread-safety: none; each connection records into its own histogram and the owner merges them
// after the run.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace broker::bench {

class histogram {
  public:
    static constexpr int sub_bucket_bits = 7;                           // 128 exact values below
    static constexpr std::uint64_t linear_max = 1u << sub_bucket_bits;  // 128
    static constexpr std::uint64_t half = linear_max / 2;               // 64 buckets per octave
    static constexpr int octaves = 62 - sub_bucket_bits + 1;
    static constexpr std::size_t bucket_count = linear_max + octaves * half;

    // The bucket that holds `v`.
    [[nodiscard]] static constexpr std::size_t index_of(std::uint64_t v) {
        if (v < linear_max) return static_cast<std::size_t>(v);
        const int msb = 63 - std::countl_zero(v);
        const int shift = msb - (sub_bucket_bits - 1);  // keeps the top 7 bits: 64..127
        return static_cast<std::size_t>(linear_max + static_cast<std::uint64_t>(shift - 1) * half +
                                        ((v >> shift) - half));
    }
    // The smallest value that lands in bucket `i`.
    [[nodiscard]] static constexpr std::uint64_t lowest_of(std::size_t i) {
        if (i < linear_max) return i;
        const std::uint64_t shift = (i - linear_max) / half + 1;
        const std::uint64_t sub = (i - linear_max) % half + half;
        return sub << shift;
    }
    // One past the largest value that lands in bucket `i`.
    [[nodiscard]] static constexpr std::uint64_t limit_of(std::size_t i) {
        if (i < linear_max) return i + 1;
        const std::uint64_t shift = (i - linear_max) / half + 1;
        return lowest_of(i) + (std::uint64_t{1} << shift);
    }

    void record(std::uint64_t v) {
        v = std::min<std::uint64_t>(v, std::uint64_t{1} << 62);
        ++counts_[index_of(v)];
        ++total_;
        max_ = std::max(max_, v);
        min_ = std::min(min_, v);
        sum_ += static_cast<double>(v);
    }

    void merge(const histogram& other) {
        for (std::size_t i = 0; i < bucket_count; ++i) counts_[i] += other.counts_[i];
        total_ += other.total_;
        max_ = std::max(max_, other.max_);
        min_ = std::min(min_, other.min_);
        sum_ += other.sum_;
    }

    [[nodiscard]] std::uint64_t count() const { return total_; }
    [[nodiscard]] std::uint64_t max() const { return total_ == 0 ? 0 : max_; }
    [[nodiscard]] std::uint64_t min() const { return total_ == 0 ? 0 : min_; }
    [[nodiscard]] double mean() const {
        return total_ == 0 ? 0.0 : sum_ / static_cast<double>(total_);
    }

    // The value at quantile q (0..1): the highest value equivalent to the bucket holding the
    // q-th recorded value (as HdrHistogram reports it), never above the true maximum.
    [[nodiscard]] std::uint64_t quantile(double q) const {
        if (total_ == 0) return 0;
        q = std::clamp(q, 0.0, 1.0);
        auto rank = static_cast<std::uint64_t>(q * static_cast<double>(total_) + 0.5);
        rank = std::clamp<std::uint64_t>(rank, 1, total_);
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < bucket_count; ++i) {
            seen += counts_[i];
            if (seen >= rank) return std::min(limit_of(i) - 1, max_);
        }
        return max_;
    }

    // Non-empty buckets as (lowest value, count), for plotting the distribution.
    [[nodiscard]] std::vector<std::pair<std::uint64_t, std::uint64_t>> buckets() const {
        std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
        for (std::size_t i = 0; i < bucket_count; ++i) {
            if (counts_[i] != 0) out.emplace_back(lowest_of(i), counts_[i]);
        }
        return out;
    }

  private:
    std::array<std::uint64_t, bucket_count> counts_{};
    std::uint64_t total_ = 0;
    std::uint64_t max_ = 0;
    std::uint64_t min_ = std::numeric_limits<std::uint64_t>::max();
    double sum_ = 0.0;
};

static_assert(histogram::index_of(127) == 127);
static_assert(histogram::index_of(128) == 128);
static_assert(histogram::index_of(255) == 191);
static_assert(histogram::index_of(256) == 192);
static_assert(histogram::lowest_of(histogram::index_of(1'000'000)) <= 1'000'000);
static_assert(histogram::limit_of(histogram::index_of(1'000'000)) > 1'000'000);
static_assert(histogram::index_of(std::uint64_t{1} << 62) < histogram::bucket_count);

}  // namespace broker::bench
