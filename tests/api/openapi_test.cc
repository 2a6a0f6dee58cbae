// docs/openapi.yaml against the router's route table (api/routes.h): the reference document must
// describe exactly the operations the server dispatches, so adding, removing or renaming a route
// without updating the document (or the other way round) fails here.
//
// The document is read as text with a small outline parser instead of a YAML library: it follows
// the indentation of block-style mappings, which is all the `paths` section needs. It knows
// quoted keys, keys that contain ':' (as in "/v1/trades:by_client_order_id"), list items, comments
// and block scalars (`description: |`), whose lines it skips whatever they contain.
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "api/routes.h"

#ifndef BROKER_SOURCE_DIR
#error "BROKER_SOURCE_DIR must name the source tree (tests/CMakeLists.txt defines it)"
#endif

namespace {

struct operation {
    std::string method;  // upper case, as in routes.h: "GET"
    std::string path;    // as written in the document: "/v1/trades/{trade_id}"

    auto operator<=>(const operation&) const = default;
};

std::string describe(const operation& op) { return op.method + " " + op.path; }

// What the outline parser found under the top-level `paths:` key.
struct api_outline {
    std::vector<std::string> paths;                             // in document order
    std::set<operation> operations;                             // method + path
    std::map<operation, std::vector<std::string>> responses;    // status codes per operation
    std::vector<std::string> problems;                          // what the parser could not read
};

constexpr std::string_view http_methods[] = {"get",  "put",     "post", "delete",
                                             "patch", "options", "head", "trace"};

bool is_http_method(std::string_view key) {
    return std::find(std::begin(http_methods), std::end(http_methods), key) !=
           std::end(http_methods);
}

std::string upper(std::string_view text) {
    std::string out(text);
    for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
}

// A mapping key line, "key: value" or "key:", with the key unquoted and the value trimmed.
struct key_line {
    std::string key;
    std::string_view value;
};

// `text` starts at the first non-blank character of a line. Returns nullopt for lines that are not
// a mapping key (plain list items, scalar continuations, flow collections).
std::optional<key_line> parse_key(std::string_view text) {
    std::size_t colon = std::string_view::npos;
    std::string key;
    if (!text.empty() && (text.front() == '"' || text.front() == '\'')) {
        const char quote = text.front();
        const auto close = text.find(quote, 1);
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            return std::nullopt;
        }
        key = std::string(text.substr(1, close - 1));
        colon = close + 1;
    } else {
        // The key ends at the first ':' followed by a blank or the end of the line, so a ':' inside
        // a path ("/v1/trades:by_client_order_id") stays part of the key.
        for (std::size_t i = 0; i < text.size(); ++i) {
            if (text[i] == ':' && (i + 1 == text.size() || text[i + 1] == ' ')) {
                colon = i;
                break;
            }
            if (text[i] == '#' && i > 0 && text[i - 1] == ' ') return std::nullopt;
        }
        if (colon == std::string_view::npos || colon == 0) return std::nullopt;
        key = std::string(text.substr(0, colon));
    }
    std::string_view value = text.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    return key_line{std::move(key), value};
}

bool starts_block_scalar(std::string_view value) {
    return !value.empty() && (value.front() == '|' || value.front() == '>');
}

api_outline parse_outline(std::istream& in) {
    api_outline out;
    struct level {
        std::size_t indent;
        std::string key;
    };
    std::vector<level> stack;  // the keys enclosing the current line, outermost first
    // npos: not inside a block scalar (a plain sentinel; GCC 12 misreads an optional here).
    std::size_t block_scalar_indent = std::string::npos;
    std::string line;
    int line_no = 0;
    while (std::getline(in, line)) {
        ++line_no;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        const auto first = line.find_first_not_of(' ');
        if (first == std::string::npos) continue;  // blank; also inside block scalars
        if (block_scalar_indent != std::string::npos) {
            if (first > block_scalar_indent) continue;  // a line of the block scalar's text
            block_scalar_indent = std::string::npos;
        }
        std::string_view text = std::string_view(line).substr(first);
        if (text.front() == '\t') {
            out.problems.push_back("line " + std::to_string(line_no) + ": tab in indentation");
            continue;
        }
        if (text.front() == '#' || text.starts_with("---") || text.starts_with("...")) continue;
        std::size_t indent = first;
        if (text.starts_with("- ")) {
            // "- key: value" opens a mapping whose keys sit two columns further in.
            text.remove_prefix(2);
            indent += 2;
        }
        auto parsed = parse_key(text);
        if (!parsed) continue;
        if (starts_block_scalar(parsed->value)) block_scalar_indent = first;

        while (!stack.empty() && stack.back().indent >= indent) stack.pop_back();
        stack.push_back(level{indent, parsed->key});

        if (stack.front().key != "paths" || stack.front().indent != 0) continue;
        if (stack.size() == 2) {
            if (!parsed->key.starts_with('/')) continue;  // e.g. an "x-" extension
            if (std::find(out.paths.begin(), out.paths.end(), parsed->key) != out.paths.end()) {
                out.problems.push_back("line " + std::to_string(line_no) + ": path " +
                                       parsed->key + " appears twice");
            }
            out.paths.push_back(parsed->key);
        } else if (stack.size() == 3 && is_http_method(parsed->key)) {
            operation op{upper(parsed->key), stack[1].key};
            if (!out.operations.insert(op).second) {
                out.problems.push_back("line " + std::to_string(line_no) + ": " + describe(op) +
                                       " appears twice");
            }
            out.responses[op];  // an operation without responses still shows up
        } else if (stack.size() == 5 && is_http_method(stack[2].key) &&
                   stack[3].key == "responses") {
            out.responses[operation{upper(stack[2].key), stack[1].key}].push_back(parsed->key);
        }
    }
    return out;
}

api_outline parse_outline(const std::string& text) {
    std::istringstream in(text);
    return parse_outline(in);
}

const api_outline& documented() {
    static const api_outline outline = [] {
        const std::string file = std::string(BROKER_SOURCE_DIR) + "/docs/openapi.yaml";
        std::ifstream in(file);
        if (!in) FAIL("cannot open " << file);
        return parse_outline(in);
    }();
    return outline;
}

std::set<operation> dispatched() {
    std::set<operation> out;
    for (const auto& r : broker::api::routes) {
        out.insert(operation{std::string(r.method), std::string(r.path)});
    }
    return out;
}

}  // namespace

TEST_CASE("the outline parser reads quoted keys, colons in paths, and skips block scalars") {
    const auto outline = parse_outline(
        "openapi: 3.1.0\n"
        "info:\n"
        "  description: |\n"
        "    paths:\n"
        "      /not/a/path:\n"
        "        get:\n"
        "paths:\n"
        "  # a comment\n"
        "  \"/a:b\":\n"
        "    parameters:\n"
        "      - name: x\n"
        "        in: path\n"
        "    get:\n"
        "      description: >-\n"
        "        responses:\n"
        "          \"500\": no\n"
        "      responses:\n"
        "        \"200\":\n"
        "          description: ok\n"
        "        '404':\n"
        "          description: missing\n"
        "  /c/{id}:x:\n"
        "    post:\n"
        "      responses:\n"
        "        201:\n"
        "          description: made\n"
        "    x-internal: true\n"
        "components:\n"
        "  paths:\n"
        "    /nor/this:\n"
        "      put: {}\n");
    CHECK(outline.problems.empty());
    CHECK(outline.paths == std::vector<std::string>{"/a:b", "/c/{id}:x"});
    CHECK(outline.operations ==
          std::set<operation>{{"GET", "/a:b"}, {"POST", "/c/{id}:x"}});
    CHECK(outline.responses.at({"GET", "/a:b"}) == std::vector<std::string>{"200", "404"});
    CHECK(outline.responses.at({"POST", "/c/{id}:x"}) == std::vector<std::string>{"201"});
}

TEST_CASE("the outline parser reports a path or an operation documented twice") {
    const auto outline = parse_outline(
        "paths:\n"
        "  /a:\n"
        "    get:\n"
        "    get:\n"
        "  /a:\n");
    CHECK(outline.problems.size() == 2);
}

TEST_CASE("openapi.yaml has a readable outline of paths and operations") {
    const auto& doc = documented();
    for (const auto& p : doc.problems) CHECK_MESSAGE(false, p);
    CHECK(!doc.paths.empty());
    CHECK(!doc.operations.empty());
}

TEST_CASE("every route the server dispatches is documented in openapi.yaml") {
    const auto& doc = documented();
    for (const auto& op : dispatched()) {
        CHECK_MESSAGE(doc.operations.contains(op),
                      (describe(op) + " is a route in api/routes.h but not in docs/openapi.yaml"));
    }
}

TEST_CASE("every documented operation is a route the server dispatches") {
    const auto routes = dispatched();
    for (const auto& op : documented().operations) {
        CHECK_MESSAGE(routes.contains(op),
                      (describe(op) + " is in docs/openapi.yaml but not a route in api/routes.h"));
    }
}

TEST_CASE("every documented operation except the health checks documents a 4xx response") {
    for (const auto& [op, codes] : documented().responses) {
        // Unauthenticated probes that take no input cannot be asked anything wrong.
        if (op.path == "/healthz" || op.path == "/readyz" || op.path == "/metrics") continue;
        const bool has_4xx = std::any_of(codes.begin(), codes.end(), [](const std::string& c) {
            return c.size() == 3 && c[0] == '4';
        });
        CHECK_MESSAGE(has_4xx, (describe(op) + " documents no 4xx response"));
    }
}
