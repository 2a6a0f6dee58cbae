#!/usr/bin/python3
"""bench/report.py, the table bench/run prints, on raw results written here: what it concludes
about the 0.5x nginx goal must follow from the numbers it was given.

Run:  python3 tests/integration/test_bench_report.py [--bin-dir build] [-v]

  1. with alternated brokerd/nginx pairs: each pair's ratio, their order (brokerd first in odd
     pairs), the median of the ratios as the goal's measure, and whether it is met;
  2. a pair with one side missing or empty ends the list: it is not counted as a ratio;
  3. without pairs, the goal falls back to the ratio of the single closed-loop phases.
No load and no server: the inputs are written by the test.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REPORT = os.path.join(ROOT, "bench", "report.py")


def closed_loop(per_s, cpu_us):
    """The fields of a broker-bench closed-loop report that report.py reads."""
    return {"closed_loop": True, "throughput_per_s": per_s, "placed": int(per_s * 10),
            "answered": int(per_s * 10), "warmup_s": 1, "load_s": 5,
            "timeline": [{"t": t, "acks": per_s, "fills": 0} for t in range(5)],
            "latency_us": {"p50": 900.0, "p99": 2500.0, "p99_9": 4000.0, "max": 9000.0},
            "cpu": {"server_us_per_request": cpu_us, "others_share": 0.01}}


class ReportTest(unittest.TestCase):

    def setUp(self):
        self.results = tempfile.mkdtemp(prefix="bench-report-")
        self.raw = os.path.join(self.results, "raw")
        os.makedirs(self.raw)
        self.addCleanup(shutil.rmtree, self.results)
        self.write("params.json", {"connections": 64, "customers": 1000, "pair_duration_s": 10,
                                   "pair_warmup_s": 2})
        self.write("brokerd-closed.json", closed_loop(24000.0, 45.0))
        self.write("nginx-closed.json", closed_loop(60000.0, 12.0))

    def write(self, name, obj):
        with open(os.path.join(self.raw, name), "w") as f:
            json.dump(obj, f)

    def report(self):
        p = subprocess.run([sys.executable, REPORT, "compare", self.results],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(self.results, "summary.json")) as f:
            summary = json.load(f)
        with open(os.path.join(self.results, "summary.md")) as f:
            return summary, f.read()

    def nginx_goal(self, summary):
        goals = [g for g in summary["goals"] if "0.5x nginx" in g["goal"]]
        self.assertEqual(len(goals), 1)
        return goals[0]

    def test_goal_is_the_median_of_the_alternated_pairs(self):
        # Ratios 0.55, 0.40 and 0.52: the median (0.52) meets the goal although the single
        # phases (24,000 / 60,000 = 0.40) and one pair do not.
        for i, (b, n) in enumerate([(27500.0, 50000.0), (22000.0, 55000.0), (26000.0, 50000.0)],
                                   start=1):
            self.write("pair-%d-brokerd.json" % i, closed_loop(b, 44.0))
            self.write("pair-%d-nginx.json" % i, closed_loop(n, 12.5))
        summary, md = self.report()
        pairs = summary["nginx_pairs"]
        self.assertEqual([p["pair"] for p in pairs], [1, 2, 3])
        self.assertEqual([p["order"] for p in pairs],
                         ["brokerd, nginx", "nginx, brokerd", "brokerd, nginx"])
        self.assertEqual([round(p["ratio"], 4) for p in pairs], [0.55, 0.4, 0.52])
        self.assertEqual(pairs[1]["brokerd_cpu_us"], 44.0)
        self.assertEqual(pairs[1]["nginx_cpu_us"], 12.5)
        goal = self.nginx_goal(summary)
        self.assertAlmostEqual(goal["measured"], 0.52)
        self.assertAlmostEqual(goal["single_phases"], 0.4)
        self.assertTrue(goal["met"])
        self.assertIn("0.52x (median of 3 alternated pairs, 0.40-0.55x; single phases 0.40x) "
                      "| yes |", md)
        self.assertIn("| 2 | nginx, brokerd | 22,000 | 55,000 | 0.40x | 44.0 | 12.5 |", md)

        # The same pairs with a lower median: not met.
        self.write("pair-3-brokerd.json", closed_loop(20000.0, 44.0))
        summary, md = self.report()
        goal = self.nginx_goal(summary)
        self.assertAlmostEqual(goal["measured"], 0.4)
        self.assertFalse(goal["met"])
        self.assertIn("| NO |", md)

    def test_an_incomplete_pair_is_not_counted(self):
        self.write("pair-1-brokerd.json", closed_loop(30000.0, 44.0))
        self.write("pair-1-nginx.json", closed_loop(50000.0, 12.0))
        self.write("pair-2-brokerd.json", closed_loop(30000.0, 44.0))
        self.write("pair-2-nginx.json", {})  # nginx's side of pair 2 broke
        self.write("pair-3-brokerd.json", closed_loop(10000.0, 44.0))
        self.write("pair-3-nginx.json", closed_loop(50000.0, 12.0))
        summary, _ = self.report()
        self.assertEqual([p["pair"] for p in summary["nginx_pairs"]], [1])
        goal = self.nginx_goal(summary)
        self.assertAlmostEqual(goal["measured"], 0.6)
        self.assertEqual(goal["pairs"], [0.6])

    def test_without_pairs_the_single_phases_decide(self):
        summary, md = self.report()
        self.assertEqual(summary["nginx_pairs"], [])
        self.assertIsNone(summary["nginx_pairs_median_ratio"])
        goal = self.nginx_goal(summary)
        self.assertAlmostEqual(goal["measured"], 0.4)
        self.assertIsNone(goal["pairs"])
        self.assertFalse(goal["met"])
        self.assertNotIn("alternated pair", md)


if __name__ == "__main__":
    harness.strip_bin_dir_arg(sys.argv)
    unittest.main(argv=sys.argv)
