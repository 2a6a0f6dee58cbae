// result<T, E>: a value or an error, for everything fallible (C++20 has no std::expected).
//
// Modelled on RocksDB's Status and std::expected: functions that can fail return one of these and
// are [[nodiscard]], so an error cannot be dropped silently.
#pragma once

#include <utility>
#include <variant>

#include "engine/assert.h"

namespace broker {

template <class E>
struct unexpected {
    E error;
};
template <class E>
unexpected(E) -> unexpected<E>;

template <class T, class E>
class [[nodiscard]] result {
public:
    result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
    result(unexpected<E> e) : v_(std::in_place_index<1>, std::move(e.error)) {}  // NOLINT

    [[nodiscard]] bool has_value() const { return v_.index() == 0; }
    explicit operator bool() const { return has_value(); }

    T& value() & {
        BROKER_ASSERT(has_value());
        return std::get<0>(v_);
    }
    const T& value() const& {
        BROKER_ASSERT(has_value());
        return std::get<0>(v_);
    }
    T&& value() && {
        BROKER_ASSERT(has_value());
        return std::get<0>(std::move(v_));
    }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    const E& error() const {
        BROKER_ASSERT(!has_value());
        return std::get<1>(v_);
    }

private:
    std::variant<T, E> v_;
};

// For operations that return nothing but can fail.
struct ok_t {};
inline constexpr ok_t ok_v{};

}  // namespace broker
