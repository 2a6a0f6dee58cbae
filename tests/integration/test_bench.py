#!/usr/bin/python3
"""Process-level test of broker-bench, the load generator bench/run measures brokerd with: what it
reports must agree with itself and with what brokerd did.

Run:  python3 tests/integration/test_bench.py --bin-dir build [-v]

  1. setup: broker-bench opens funded customers; brokerd then knows every one of them;
  2. open loop with streams: every request sent is answered and counted once; per request, the
     latency from when it was due is exactly how late it was sent plus send -> answer, so the
     three histograms have equal counts and mean(latency) = mean(lag) + mean(send -> answer);
     every placement is followed by its FILLED on the stream; the per-second timeline adds up;
     brokerd holds as many trades, all FILLED, as broker-bench counted placements; brokerd's CPU
     by thread adds up to its process figure, and its commits come from its /metrics; context
     switches are counted per thread of brokerd's, and for broker-bench's ended threads too;
  3. closed loop bounded by --max-requests: exactly that many requests, no open-loop fields.
Loads are small (hundreds of requests) and bounded in count and time: this checks the harness,
not brokerd's speed.
"""

import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from test_core import BrokerTestCase, dump_logs_on_failure  # noqa: E402

ARGS = ["--sim-latency-ms", "1", "--sim-reject-rate", "0", "--sim-duplicate-rate", "0"]
CUSTOMERS = 12
CONNECTIONS = 4


def trades_by_status(broker):
    """Every bench customer's trades, from brokerd: {status: count}."""
    counts = {}
    for i in range(CUSTOMERS):
        after = None
        while True:
            path = "/v1/trades?status=all&limit=500" + ("&after=" + after if after else "")
            st, page = broker.request("GET", path, token=broker.token("bench-%08d" % i))
            if st != 200:
                raise AssertionError("GET %s -> %s %r" % (path, st, page))
            for t in page["trades"]:
                counts[t["status"]] = counts.get(t["status"], 0) + 1
            after = page["next_after"]
            if after is None:
                break
    return counts


class BenchTest(BrokerTestCase):

    def bench(self, broker, *args, timeout=60):
        out = os.path.join(self.workdir.path, "bench-%d.json" % len(os.listdir(self.workdir.path)))
        cmd = [harness.binary("broker-bench"), "--target", "%s:%d" % (harness.HOST, broker.port),
               "--jwt-secret", broker.jwt_secret, "--customers", str(CUSTOMERS),
               "--connections", str(CONNECTIONS), "--customer-prefix", "bench-", "--quiet",
               "--out", out] + list(args)
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        self.assertEqual(p.returncode, 0, "broker-bench failed:\n%s\n%s" % (p.stdout, p.stderr))
        with open(out) as f:
            return json.load(f)

    @dump_logs_on_failure
    def test_reports_agree_with_themselves_and_with_brokerd(self):
        b = self.start_broker(args=ARGS)

        setup = self.bench(b, "--open-customers", "--duration-s", "0")
        self.assertEqual(setup["setup"]["opened_ok"], CUSTOMERS, setup["setup"])
        self.assertEqual(setup["setup"]["errors"], 0, setup["setup"])
        for i in range(CUSTOMERS):
            st, acct = b.request("GET", "/v1/account", token=b.token("bench-%08d" % i))
            self.assertEqual(st, 200, acct)

        r = self.bench(b, "--rate", "300", "--duration-s", "3", "--warmup-s", "1", "--e2e",
                       "--server-pid", str(b.proc.pid),
                       "--server-counter", "broker_journal_commits_total",
                       "--server-counter", "broker_journal_commit_seconds_sum",
                       "--server-counter", 'broker_journal_commit_seconds_bucket{le="+Inf"}',
                       "--server-counter", 'broker_trades_closed_total{status="FILLED"}',
                       "--server-counter", "broker_no_such_counter_total")
        self.assertEqual(r["errors"], 0, r)
        self.assertEqual(r["sent"], r["answered"])
        self.assertGreater(r["answered_measured"], 300)
        self.assertLess(r["answered_measured"], r["answered"])  # the warm-up is not counted
        self.assertEqual(r["http_status"], {"201": r["answered"]})
        self.assertEqual(r["placed"], r["answered"])
        self.assertEqual(trades_by_status(b), {"FILLED": r["placed"]})
        # Every fill the stream showed was journaled before it was sent, so within the load
        # brokerd counted as many as were placed.
        self.assertEqual(r["server_counters"]['broker_trades_closed_total{status="FILLED"}'],
                         r["placed"])

        lat, lag, service = r["latency_us"], r["send_lag_us"], r["service_us"]
        self.assertEqual(lat["count"], r["answered_measured"])
        self.assertEqual(lag["count"], lat["count"])
        self.assertEqual(service["count"], lat["count"])
        self.assertAlmostEqual(lat["mean"], lag["mean"] + service["mean"], delta=0.2)
        self.assertGreaterEqual(lat["max"], service["max"])
        self.assertGreater(service["min"], 0)

        self.assertEqual(sum(s["acks"] for s in r["timeline"]), r["answered"])

        # brokerd's CPU by thread: its named threads, adding up to no more than the process's
        # own figure (/proc counts in 10 ms ticks, per thread); and its commits from /metrics.
        cpu = r["cpu"]
        threads = {t["name"]: t for t in cpu["server_threads"]}
        for name in ("engine", "io-0", "io-1", "exchange-sim"):
            self.assertIn(name, threads, cpu["server_threads"])
        self.assertGreater(threads["engine"]["cpu_s"], 0, threads)
        ticks = 0.01 * (len(threads) + 1)
        self.assertTrue(all(t["cpu_s"] >= 0 for t in threads.values()), threads)
        self.assertLessEqual(sum(t["cpu_s"] for t in threads.values()), cpu["server_s"] + ticks)
        self.assertAlmostEqual(sum(t["cpu_s"] for t in threads.values())
                               + cpu["server_threads_ended_s"], cpu["server_s"], delta=0.002)
        self.assertAlmostEqual(threads["engine"]["us_per_request"],
                               threads["engine"]["cpu_s"] * 1e6 / r["answered"], delta=0.01)
        commits = r["server_counters"]["broker_journal_commits_total"]
        # Each commit carries at least one placement or fill; each placement at most two.
        self.assertGreater(commits, 0)
        self.assertLessEqual(commits, 2 * r["answered"] + 10)
        # Context switches by thread, and broker-bench's own. At 300 requests a second the engine
        # has nothing queued after most commits and sleeps until the next request or fill: at
        # least once per two commits.
        for t in threads.values():
            for k in ("voluntary_switches", "involuntary_switches"):
                self.assertIsInstance(t[k], int, t)
                self.assertGreaterEqual(t[k], 0, t)
        self.assertGreaterEqual(threads["engine"]["voluntary_switches"], commits // 2, threads)
        self.assertGreater(threads["io-0"]["voluntary_switches"], 0, threads)
        # broker-bench's io thread sleeps in epoll_wait for each request's due time, its answer and
        # its stream updates (about 3.6 times a request here); it has ended by the time the last
        # sample is taken and must still be counted (its main thread alone made about 150).
        self.assertGreaterEqual(cpu["client_voluntary_switches"], r["answered"], cpu)
        self.assertGreaterEqual(cpu["client_involuntary_switches"], 0, cpu)
        self.assertIsNone(r["server_counters"]["broker_no_such_counter_total"])
        # One series of a labelled family, named with its labels; a growth in fractions.
        self.assertEqual(r["server_counters"]['broker_journal_commit_seconds_bucket{le="+Inf"}'],
                         commits)
        took = r["server_counters"]["broker_journal_commit_seconds_sum"]
        self.assertGreater(took, 0)
        self.assertNotEqual(took, round(took), "the sum of commit times was rounded")
        e2e = r["e2e"]
        self.assertEqual(e2e["streams"], CUSTOMERS)
        self.assertEqual(e2e["stream_failures"], 0)
        self.assertEqual(e2e["unresolved_at_end"], 0)
        self.assertEqual(e2e["exchange_rejects"], 0)
        self.assertEqual(e2e["fills"], r["placed"])
        # Placement -> FILLED latency is kept for the placements due in the measured window (as
        # the acknowledgement latency is), every one of which was filled; fills_measured counts
        # the FILLED updates that arrived in it, a rate that differs at the window's edges.
        self.assertEqual(e2e["latency_us"]["count"], r["answered_measured"])
        self.assertLessEqual(e2e["fills_measured"], e2e["fills"])
        self.assertGreater(e2e["latency_us"]["min"], 0)

        closed = self.bench(b, "--duration-s", "30", "--max-requests", "200")
        self.assertEqual(closed["answered"], 200)
        self.assertEqual(closed["errors"], 0)
        self.assertTrue(closed["closed_loop"])
        self.assertIsNone(closed["send_lag_us"])
        self.assertIsNone(closed["service_us"])
        self.assertEqual(closed["server_counters"], {})
        self.assertIsNone(closed["cpu"]["server_s"])  # no --server-pid: nothing to account
        self.assertIsNone(closed["cpu"]["server_threads"])
        # Without --server-pid broker-bench still counts its own: it waited for 200 answers.
        self.assertGreater(closed["cpu"]["client_voluntary_switches"], 0, closed["cpu"])
        self.assertEqual(trades_by_status(b), {"FILLED": r["placed"] + 200})


    @dump_logs_on_failure
    def test_a_run_of_refused_requests_fails_instead_of_reporting_throughput(self):
        # Tokens signed with another secret: every PlaceTrade is answered 401. A load generator
        # that reported those answers as throughput and exited 0 would let a broken setup pass
        # for a measurement.
        b = self.start_broker(args=ARGS)
        cmd = [harness.binary("broker-bench"), "--target", "%s:%d" % (harness.HOST, b.port),
               "--customers", str(CUSTOMERS), "--connections", str(CONNECTIONS),
               "--customer-prefix", "bench-", "--quiet",
               "--out", os.path.join(self.workdir.path, "refused.json")]
        wrong = ["--jwt-secret", "another-secret-than-brokerds-0123456789abcdef"]
        p = subprocess.run(cmd + wrong + ["--open-customers", "--duration-s", "0"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("opened 0 of %d customers" % CUSTOMERS, p.stderr)
        p = subprocess.run(cmd + wrong + ["--duration-s", "1", "--warmup-s", "0"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("were not 2xx", p.stderr)
        self.assertIn('"401"', p.stderr)
        with open(os.path.join(self.workdir.path, "refused.json")) as f:
            report = json.load(f)
        self.assertEqual(report["placed"], 0)
        self.assertEqual(report["http_status"], {"401": report["answered"]})
        # And it loads only this machine unless told otherwise.
        p = subprocess.run([harness.binary("broker-bench"), "--target", "192.0.2.1:80",
                            "--jwt-secret", b.jwt_secret, "--duration-s", "1", "--warmup-s", "0"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("not a loopback address", p.stderr)

if __name__ == "__main__":
    harness.strip_bin_dir_arg(sys.argv)
    unittest.main(argv=sys.argv)
