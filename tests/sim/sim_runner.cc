// Running simulations in child processes, shrinking failures, and reporting.
//
// The engine asserts (and aborts) on an illegal event; a simulation that provokes that must still
// report its seed and history and be shrunk, so every run happens in a forked child that streams
// its history to the parent line by line. The parent never opens RocksDB itself, so the children
// fork from a process without RocksDB's background threads.
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string_view>

#include "tests/sim/simulator.h"

namespace broker::sim {
namespace {

bool fork_enabled() {
    const char* v = std::getenv("BROKER_SIM_FORK");
    return v == nullptr || std::string_view(v) != "0";
}

void write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        const ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            ::_exit(3);  // the parent is gone
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
}

std::string one_line(std::string_view text) {
    std::string out(text);
    std::replace(out.begin(), out.end(), '\n', ' ');
    return out;
}

// The child's side of the protocol: "H <history line>", "C <name> <value>",
// "F <step> <kind> <message>", and "E" when the run ended normally. Anything else on the pipe is
// the child's stderr (an assertion message).
[[noreturn]] void run_child(const sim_options& o, int fd) {
    // The parent's crash handlers (doctest's) must not report a child's abort as the parent's.
    for (const int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTERM, SIGINT}) {
        std::signal(sig, SIG_DFL);
    }
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    const sim_result r = run_simulation(
        o, [fd](const std::string& line) { write_all(fd, "H " + one_line(line) + "\n"); });
    std::string tail;
    for (const auto& [name, value] : r.counters) tail += fmt::format("C {} {}\n", name, value);
    if (r.failure) {
        tail += fmt::format("F {} {} {}\n", r.failure->step, r.failure->kind,
                            one_line(r.failure->message));
    }
    tail += "E\n";
    write_all(fd, tail);
    ::_exit(0);
}

struct child {
    pid_t pid = -1;
    int fd = -1;
    std::string out;
    std::size_t index = 0;
};

child spawn(const sim_options& o) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("sim: pipe failed");
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("sim: fork failed");
    if (pid == 0) {
        ::close(fds[0]);
        run_child(o, fds[1]);
    }
    ::close(fds[1]);
    return child{pid, fds[0], {}, 0};
}

std::int64_t step_of_line(std::string_view line, std::size_t steps) {
    if (line.starts_with("setup")) return -1;
    const bool quiet = line.starts_with("q");
    if (!quiet && !line.starts_with("s")) return -1;
    std::int64_t n = 0;
    for (std::size_t i = 1; i < line.size() && line[i] >= '0' && line[i] <= '9'; ++i) {
        n = n * 10 + (line[i] - '0');
    }
    return quiet ? static_cast<std::int64_t>(steps) + n : n;
}

sim_result parse_child(const sim_options& o, const std::string& out, int status) {
    sim_result r;
    r.seed = o.seed;
    r.steps = o.steps;
    r.skip = o.skip;
    bool ended = false;
    std::string stderr_text;
    std::int64_t last_step = -1;
    std::size_t pos = 0;
    while (pos < out.size()) {
        std::size_t end = out.find('\n', pos);
        if (end == std::string::npos) end = out.size();
        const std::string_view line(out.data() + pos, end - pos);
        pos = end + 1;
        if (line.starts_with("H ")) {
            r.history.emplace_back(line.substr(2));
            last_step = step_of_line(line.substr(2), o.steps);
        } else if (line.starts_with("C ")) {
            const auto space = line.rfind(' ');
            r.counters[std::string(line.substr(2, space - 2))] =
                std::stoull(std::string(line.substr(space + 1)));
        } else if (line.starts_with("F ")) {
            const auto a = line.find(' ', 2);
            const auto b = line.find(' ', a + 1);
            r.failure = sim_failure{std::string(line.substr(a + 1, b - a - 1)),
                                    std::string(line.substr(b + 1)),
                                    std::stoll(std::string(line.substr(2, a - 2)))};
        } else if (line == "E") {
            ended = true;
        } else if (!line.empty()) {
            stderr_text += fmt::format(" | {}", line);
        }
    }
    if (!ended) {
        const std::string how = WIFSIGNALED(status)
                                    ? fmt::format("killed by signal {} ({})", WTERMSIG(status),
                                                  ::strsignal(WTERMSIG(status)))
                                    : fmt::format("exit status {}", WEXITSTATUS(status));
        r.failure =
            sim_failure{"abort", fmt::format("the run died: {}{}", how, stderr_text), last_step};
        r.history.push_back(fmt::format("ABORT: {}{}", how, stderr_text));
    }
    return r;
}

// A child that died (an engine abort) left its RocksDB directory behind; on tmpfs that is
// memory, with a preallocated WAL of some 17 MB, so it must go.
void remove_leftovers(const sim_options& o, pid_t pid) {
    const std::string prefix = fmt::format("broker-sim-{}-", pid);
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(tmp_root(o), ec)) {
        if (entry.path().filename().string().starts_with(prefix)) {
            std::filesystem::remove_all(entry.path(), ec);
        }
    }
}

std::vector<sim_result> run_all(const std::vector<sim_options>& runs, std::size_t jobs) {
    std::vector<sim_result> results(runs.size());
    if (!fork_enabled()) {
        for (std::size_t i = 0; i < runs.size(); ++i) results[i] = run_simulation(runs[i]);
        return results;
    }
    jobs = std::max<std::size_t>(jobs, 1);
    std::vector<child> running;
    std::size_t next = 0;
    while (next < runs.size() || !running.empty()) {
        while (running.size() < jobs && next < runs.size()) {
            running.push_back(spawn(runs[next]));
            running.back().index = next++;
        }
        std::vector<pollfd> fds;
        for (const auto& c : running) fds.push_back(pollfd{c.fd, POLLIN, 0});
        if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) {
            throw std::runtime_error("sim: poll failed");
        }
        for (std::size_t i = running.size(); i-- > 0;) {
            if (fds[i].revents == 0) continue;
            char buf[65536];
            const ssize_t n = ::read(running[i].fd, buf, sizeof buf);
            if (n > 0) {
                running[i].out.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            ::close(running[i].fd);
            int status = 0;
            ::waitpid(running[i].pid, &status, 0);
            remove_leftovers(runs[running[i].index], running[i].pid);
            results[running[i].index] = parse_child(runs[running[i].index], running[i].out, status);
            running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
        }
    }
    return results;
}

}  // namespace

sim_result run_isolated(const sim_options& o) {
    return run_all({o}, 1).front();
}

std::vector<sim_result> run_seeds(const std::vector<std::uint64_t>& seeds, std::size_t steps,
                                  std::size_t jobs, sabotage broken) {
    std::vector<sim_options> runs;
    for (const auto seed : seeds) {
        sim_options o;
        o.seed = seed;
        o.steps = steps;
        o.broken = broken;
        runs.push_back(o);
    }
    return run_all(runs, jobs);
}

sim_result shrink(const sim_options& o, const sim_result& failed, std::size_t max_runs) {
    if (!failed.failure) return failed;
    const std::string kind = failed.failure->kind;
    sim_options best_opts = o;
    sim_result best = failed;
    std::size_t runs = 0;
    // A candidate is kept when it fails the same way; it replaces the best at once.
    auto try_candidate = [&](const sim_options& cand) {
        ++runs;
        sim_result r = run_isolated(cand);
        if (!r.failure || r.failure->kind != kind) return false;
        best_opts = cand;
        best = std::move(r);
        // Steps after the failing one never ran; drop them from the options too.
        const auto at = best.failure->step;
        if (at >= 0 && static_cast<std::size_t>(at) < best_opts.steps) {
            best_opts.steps = static_cast<std::size_t>(at) + 1;
            std::erase_if(best_opts.skip, [&](std::size_t s) { return s >= best_opts.steps; });
            best.steps = best_opts.steps;
            best.skip = best_opts.skip;
        }
        return true;
    };
    const auto at = failed.failure->step;
    if (at >= 0 && static_cast<std::size_t>(at) + 1 < o.steps) {
        sim_options cand = o;
        cand.steps = static_cast<std::size_t>(at) + 1;
        std::erase_if(cand.skip, [&](std::size_t s) { return s >= cand.steps; });
        (void)try_candidate(cand);
    }
    auto kept_steps = [&] {
        std::vector<std::size_t> kept;
        for (std::size_t i = 0; i < best_opts.steps; ++i) {
            if (!best_opts.skip.contains(i)) kept.push_back(i);
        }
        return kept;
    };
    for (std::size_t chunk = std::max<std::size_t>(kept_steps().size() / 2, 1); runs < max_runs;
         chunk = std::max<std::size_t>(chunk / 2, 1)) {
        bool removed = false;
        std::size_t start = 0;
        while (runs < max_runs) {
            const auto kept = kept_steps();
            if (start >= kept.size()) break;
            sim_options cand = best_opts;
            for (std::size_t i = start; i < std::min(start + chunk, kept.size()); ++i) {
                cand.skip.insert(kept[i]);
            }
            if (try_candidate(cand)) {
                removed = true;  // same start: the next chunk slid into place
            } else {
                start += chunk;
            }
        }
        if (chunk == 1 && !removed) break;  // 1-minimal: no single step can go
    }
    best.counters["shrink_runs"] = runs;
    return best;
}

std::string describe(const sim_result& r, sabotage broken) {
    std::string out;
    if (!r.failure) return fmt::format("sim: seed {} passed\n", r.seed);
    const auto& f = *r.failure;
    const std::string where =
        f.step < 0 ? std::string("in setup")
        : static_cast<std::size_t>(f.step) >= r.steps
            ? fmt::format("in quiescence step {}", static_cast<std::size_t>(f.step) - r.steps)
            : fmt::format("at step {}", f.step);
    std::string skip;
    for (const auto s : r.skip) skip += (skip.empty() ? "" : ",") + std::to_string(s);
    out += fmt::format("sim: seed {} FAILED {} [{}]: {}\n", r.seed, where, f.kind, f.message);
    out += fmt::format(
        "replay: sim_soak --seed {} --steps {}{}{}{}\n", r.seed, r.steps,
        skip.empty() ? "" : " --skip ", skip,
        broken == sabotage::none ? "" : fmt::format(" --sabotage {}", to_string(broken)));
    out += fmt::format("history ({} lines, {} of {} steps kept):\n", r.history.size(),
                       r.steps - r.skip.size(), r.steps);
    for (const auto& line : r.history) out += "  " + line + "\n";
    return out;
}

void add_counters(std::map<std::string, std::uint64_t>& into, const sim_result& r) {
    for (const auto& [name, value] : r.counters) into[name] += value;
}

std::string format_counters(const std::map<std::string, std::uint64_t>& c) {
    std::string out;
    std::string group;
    for (const auto& [name, value] : c) {
        const auto dot = name.find('.');
        const std::string g = dot == std::string::npos ? "" : name.substr(0, dot);
        if (g != group) {
            group = g;
            if (!g.empty()) out += fmt::format("  {}:\n", g);
        }
        out += fmt::format("  {}{:<44} {:>10}\n", g.empty() ? "" : "  ",
                           g.empty() ? name : name.substr(dot + 1), value);
    }
    return out;
}

std::string format_summary(const std::map<std::string, std::uint64_t>& totals, std::size_t seeds,
                           std::size_t failed, std::size_t lost) {
    auto get = [&](const std::string& name) {
        const auto it = totals.find(name);
        return it == totals.end() ? std::uint64_t{0} : it->second;
    };
    auto group = [&](const std::string& prefix, std::uint64_t& sum) {
        std::string parts;
        sum = 0;
        for (const auto& [name, value] : totals) {
            if (!name.starts_with(prefix)) continue;
            sum += value;
            parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", name.substr(prefix.size()),
                                 value);
        }
        return parts;
    };
    std::uint64_t crashes = 0;
    std::uint64_t faults = 0;
    const std::string crash_parts = group("crash.", crashes);
    const std::string fault_parts = group("fault.", faults);
    std::string out;
    out += fmt::format("sim: {} seeds, {} steps (+{} quiescence steps), {} failed\n", seeds,
                       get("steps"), get("quiescence_steps"), failed);
    out += fmt::format("  crashes injected {} ({}); restarts {}\n", crashes, crash_parts,
                       get("restarts"));
    out += fmt::format("  faults {} ({})\n", faults, fault_parts);
    out += fmt::format("  duplicate reports sent {} (+{} late), ignored by the engine {}\n",
                       get("fault.duplicate_report"), get("fault.late_duplicate_report"),
                       get("report.duplicate_ignored"));
    out += fmt::format("  events journaled {} in {} commits; trades filled {}, expired {}\n",
                       get("events"), get("commits"), get("trade.filled"), get("trade.expired"));
    out += fmt::format(
        "  acknowledged trades {} (checked after every step and restart, terminal at the end); "
        "lost {}\n",
        get("client.trades_acknowledged"), lost);
    return out;
}

std::string_view to_string(sabotage s) {
    switch (s) {
        case sabotage::none:
            return "none";
        case sabotage::ack_before_append:
            return "ack_before_append";
        case sabotage::double_fill:
            return "double_fill";
        case sabotage::wrong_fill_price:
            return "wrong_fill_price";
    }
    return "?";
}

std::optional<sabotage> parse_sabotage(std::string_view text) {
    for (const auto s : {sabotage::none, sabotage::ack_before_append, sabotage::double_fill,
                         sabotage::wrong_fill_price}) {
        if (to_string(s) == text) return s;
    }
    return std::nullopt;
}

}  // namespace broker::sim
