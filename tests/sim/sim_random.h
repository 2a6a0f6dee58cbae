// Random draws for the simulator that are the same on every standard library.
//
// std::mt19937_64 is specified exactly, but the std::*_distribution classes are not, so a seed
// could replay differently elsewhere. These helpers derive everything from raw generator output.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace broker::sim {

// Uniform in [0, n); n > 0. The modulo bias is irrelevant for a simulation.
inline std::uint64_t below(std::mt19937_64& rng, std::uint64_t n) {
    return rng() % n;
}

// Uniform in [lo, hi].
inline std::int64_t between(std::mt19937_64& rng, std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(below(rng, static_cast<std::uint64_t>(hi - lo) + 1));
}

// True with probability p.
inline bool chance(std::mt19937_64& rng, double p) {
    return static_cast<double>(rng() >> 11) * 0x1.0p-53 < p;
}

template <class T>
void shuffle(std::vector<T>& v, std::mt19937_64& rng) {
    for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(rng, i)]);
}

// SplitMix64: turns a seed and a salt into an independent seed.
inline std::uint64_t mix(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

}  // namespace broker::sim
