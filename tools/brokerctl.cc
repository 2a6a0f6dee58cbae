// brokerctl: the command line for developers and operators of brokerd.
//
//   brokerctl token --secret S --sub ID [--role admin] [--ttl SECONDS]   print a JWT
//
// One subcommand per verb. Each `add_*_command` registers its options on the app and returns the
// action to run when that subcommand was chosen, so a new verb (place, watch, promote) is one more
// function and one more line in `main`. Exit codes: 0 success, 2 bad arguments (always one line on
// stderr, as scripts expect), 1 anything else.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/jwt.h"
#include "engine/types.h"

namespace {

constexpr int exit_failure = 1;
constexpr int exit_usage = 2;

// Ten years: long enough for any test fixture, and `now + ttl` cannot overflow.
constexpr std::int64_t token_ttl_seconds_max = 10LL * 365 * 24 * 3600;
constexpr std::int64_t token_ttl_seconds_default = 3600;

using command_action = std::function<int()>;

struct command {
    CLI::App* app;
    command_action run;
};

// A usage error is reported once, on one line, with the program's name so it can be grepped in
// logs of scripts that call several tools.
[[nodiscard]] int usage_error(std::string_view message) {
    std::string line{message};
    for (char& c : line) {
        if (c == '\n' || c == '\r') c = ' ';
    }
    fmt::print(stderr, "brokerctl: {} (see --help)\n", line);
    return exit_usage;
}

[[nodiscard]] std::int64_t unix_seconds_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

struct token_options {
    std::string secret;
    std::string sub;
    std::string role;
    std::int64_t ttl_seconds = token_ttl_seconds_default;
};

[[nodiscard]] int run_token(const token_options& options) {
    // Checked here rather than with ->required() because the secret may come from the environment
    // and an empty one must be refused too: an empty HMAC key would sign tokens anyone can forge.
    if (options.secret.empty()) {
        return usage_error("token: a secret is required: pass --secret or set BROKER_JWT_SECRET");
    }
    // brokerd refuses a JWT secret under 32 bytes (RFC 7518 3.2), so a token signed with one could
    // never be accepted: say so here rather than leave the 401 to explain it.
    if (options.secret.size() < 32) {
        return usage_error(fmt::format("token: the secret is {} bytes; brokerd needs at least 32",
                                       options.secret.size()));
    }
    const std::int64_t now = unix_seconds_now();
    broker::api::claims claims;
    claims.sub = options.sub;
    claims.role = options.role;
    claims.iat = now;
    claims.exp = now + options.ttl_seconds;
    fmt::print("{}\n", broker::api::sign_jwt(claims, options.secret));
    // A token lost to a full disk or closed pipe must not look like success to a script.
    if (std::fflush(stdout) != 0) {
        fmt::print(stderr, "brokerctl: token: cannot write to standard output\n");
        return exit_failure;
    }
    return 0;
}

[[nodiscard]] command add_token_command(CLI::App& app) {
    auto options = std::make_shared<token_options>();
    CLI::App* cmd = app.add_subcommand("token", "Print an HS256 JWT for the client API");
    cmd->add_option("--secret", options->secret,
                    "JWT secret shared with brokerd (default: $BROKER_JWT_SECRET; prefer the "
                    "variable, command lines are visible to other users)")
        ->envname("BROKER_JWT_SECRET");
    const CLI::Validator customer_id{[](std::string& value) -> std::string {
                                         if (broker::valid_customer_id(value)) return {};
                                         return "must be 1..64 characters of [A-Za-z0-9._-]";
                                     },
                                     "CUSTOMER_ID"};
    cmd->add_option("--sub", options->sub, "Customer id the token speaks for")
        ->required()
        ->check(customer_id);
    cmd->add_option("--role", options->role, "Grant a role: admin may call /admin/...")
        ->check(CLI::IsMember({"admin"}));
    cmd->add_option("--ttl", options->ttl_seconds, "Seconds until the token expires")
        ->capture_default_str()
        ->check(CLI::Range(std::int64_t{1}, token_ttl_seconds_max));
    return {cmd, [options] { return run_token(*options); }};
}

[[nodiscard]] int run(int argc, char** argv) {
    CLI::App app{"brokerctl: tokens and administration for brokerd"};
    app.require_subcommand(1);
    const std::vector<command> commands{add_token_command(app)};
    // CLI11 reports a misspelt verb as a missing one; name it and list what exists.
    std::string known;
    for (const command& c : commands) known += (known.empty() ? "" : ", ") + c.app->get_name();
    if (argc < 2) return usage_error(fmt::format("a subcommand is required: {}", known));
    if (const std::string_view verb = argv[1];
        !verb.starts_with('-') &&
        std::none_of(commands.begin(), commands.end(),
                     [&](const command& c) { return c.app->get_name() == verb; })) {
        return usage_error(fmt::format("unknown subcommand '{}' (known: {})", verb, known));
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // --help and --help-all are "errors" with exit code 0 in CLI11; let it print them.
        if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
        return usage_error(e.what());
    }
    for (const command& c : commands) {
        if (c.app->parsed()) return c.run();
    }
    return usage_error("no subcommand given");  // unreachable: require_subcommand(1)
}

}  // namespace

int main(int argc, char** argv) {
    // Bad arguments are values (exit 2 above); anything thrown past them is an environment
    // failure such as a closed stdout, reported on one line instead of std::terminate.
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        fmt::print(stderr, "brokerctl: {}\n", e.what());
        return exit_failure;
    }
}
