// sim_soak: runs the deterministic simulation for as many seeds as asked, or replays one.
//
//   sim_soak [--seeds N] [--first S] [--steps K] [--jobs J]      many seeds (a soak)
//   sim_soak --seed S [--steps K] [--skip 3,17,40] [--history]  one seed, as a failure report
//                                                                 names it
//   --sabotage NAME  break the simulated node on purpose (ack_before_append, double_fill,
//                    wrong_fill_price) to watch the checks fire
//   --no-shrink      report the first failure as found, without shrinking it
// Exit status: 0 when every seed passed, 1 when one failed, 2 on bad arguments.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "tests/sim/simulator.h"

namespace {

using namespace broker::sim;

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "sim_soak: %s\nusage: sim_soak [--seeds N] [--first S] [--steps K] [--jobs J] "
                 "[--seed S [--skip a,b,...] [--history]] [--sabotage NAME] [--no-shrink]\n",
                 why);
    std::exit(2);
}

std::uint64_t number(const char* text) {
    char* end = nullptr;
    const auto v = std::strtoull(text, &end, 10);
    if (end == text || *end != '\0') usage("expected a number");
    return v;
}

}  // namespace

int main(int argc, char** argv) {
    std::uint64_t seeds = 200, first = 1, steps = 200, jobs = 2;
    std::optional<std::uint64_t> one;
    std::set<std::size_t> skip;
    bool history = false, do_shrink = true;
    sabotage broken = sabotage::none;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        auto value = [&] {
            if (i + 1 >= argc) usage("missing value");
            return argv[++i];
        };
        if (a == "--help" || a == "-h") {
            std::printf(
                "sim_soak: the deterministic broker simulation (tests/sim/README.md)\n"
                "  --seeds N --first S --steps K --jobs J   run seeds S..S+N-1, J at a time\n"
                "  --seed S [--skip a,b,...] [--history]    replay one seed (a failure's replay: "
                "line)\n"
                "  --sabotage ack_before_append|double_fill|wrong_fill_price   break the node\n"
                "  --no-shrink                              report failures unshrunk\n"
                "exit status: 0 all passed, 1 a seed failed, 2 bad arguments\n");
            return 0;
        } else if (a == "--seeds") {
            seeds = number(value());
        } else if (a == "--first") {
            first = number(value());
        } else if (a == "--steps") {
            steps = number(value());
        } else if (a == "--jobs") {
            jobs = number(value());
        } else if (a == "--seed") {
            one = number(value());
        } else if (a == "--skip") {
            std::string list = value();
            for (std::size_t pos = 0; pos < list.size();) {
                const auto comma = list.find(',', pos);
                skip.insert(number(list.substr(pos, comma - pos).c_str()));
                pos = comma == std::string::npos ? list.size() : comma + 1;
            }
        } else if (a == "--history") {
            history = true;
        } else if (a == "--no-shrink") {
            do_shrink = false;
        } else if (a == "--sabotage") {
            const auto s = parse_sabotage(value());
            if (!s) usage("unknown sabotage");
            broken = *s;
        } else {
            usage("unknown argument");
        }
    }
    if (one) {
        sim_options o;
        o.seed = *one;
        o.steps = steps;
        o.skip = skip;
        o.broken = broken;
        const sim_result r = run_isolated(o);
        if (history || r.failure) {
            std::printf("%s", describe(r, broken).c_str());
            if (!r.failure) {
                for (const auto& line : r.history) std::printf("  %s\n", line.c_str());
            }
        }
        std::printf("%s", format_counters(r.counters).c_str());
        return r.failure ? 1 : 0;
    }
    std::map<std::string, std::uint64_t> totals;
    std::size_t failed = 0;
    std::size_t lost = 0;
    const std::uint64_t chunk = 50;  // progress now and then on long soaks
    for (std::uint64_t done = 0; done < seeds; done += chunk) {
        std::vector<std::uint64_t> batch;
        for (std::uint64_t s = done; s < std::min(seeds, done + chunk); ++s)
            batch.push_back(first + s);
        for (const auto& r : run_seeds(batch, steps, jobs, broken)) {
            add_counters(totals, r);
            if (!r.failure) continue;
            if (r.failure->kind == "durability") ++lost;
            if (failed++ == 0) {
                sim_options o;
                o.seed = r.seed;
                o.steps = r.steps;
                o.broken = broken;
                std::printf("%s", describe(do_shrink ? shrink(o, r) : r, broken).c_str());
            } else {
                std::printf("sim: seed %llu also failed [%s]: %s\n",
                            static_cast<unsigned long long>(r.seed), r.failure->kind.c_str(),
                            r.failure->message.c_str());
            }
        }
        std::fprintf(stderr, "sim_soak: %llu/%llu seeds, %zu failed\n",
                     static_cast<unsigned long long>(std::min(seeds, done + chunk)),
                     static_cast<unsigned long long>(seeds), failed);
    }
    std::printf("sim: seeds %llu.. with %llu steps each; all counters:\n%s%s",
                static_cast<unsigned long long>(first), static_cast<unsigned long long>(steps),
                format_counters(totals).c_str(),
                format_summary(totals, seeds, failed, lost).c_str());
    return failed == 0 ? 0 : 1;
}
