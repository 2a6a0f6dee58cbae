// Force-included (-include) into every file of the fuzz build; not part of brokerd.
//
// api/json.h's json_value holds a std::vector<std::pair<std::string, json_value>>. In C++20 mode
// libstdc++ 12 gives std::pair a conditionally explicit default constructor, whose condition asks
// whether json_value is implicitly default-constructible; answering that needs the vector's
// destructor, which needs the very pair being instantiated. GCC (the main build) accepts the
// cycle, clang 14 (the only compiler with libFuzzer here) rejects it. Stating the answer up front,
// true since json_value is an aggregate with default member initializers, breaks the cycle.
// Remove once json_value has a user-provided default constructor, which clang accepts as is.
#pragma once

#include <type_traits>

namespace broker::api {
struct json_value;
}

template <>
struct std::__is_implicitly_default_constructible<broker::api::json_value> : std::true_type {};
