#!/usr/bin/python3
"""Crash-consistency test of brokerd: kill -9 at random moments under load, 20 times in a row on
one data dir.

Run:  python3 tests/integration/test_crash.py --bin-dir build [-v]
      (or set BROKER_BIN_DIR; BROKER_KEEP_TMP=1 keeps the work dir; BROKER_CRASH_SEED=N repeats a
      run's random choices; BROKER_CRASH_ROUNDS=N runs fewer or more rounds.)

Every round, on the same data dir, with the embedded simulated exchange (5 ms latency, 30% of the
callbacks delivered twice, 5% rejected by the exchange):

  1. start brokerd; its digest equals the one it had when it was last stopped cleanly;
  2. client threads place trades for many customers, some with a client_order_id, some of those
     sent twice in a row (the second must answer 200 with the first's trade); every 201/200 is
     recorded as acknowledged;
  3. kill -9 at a random moment 0.2-1.0 s into the round; broker-replay verifies the crashed
     journal (exit 0) and brokerd's recovery starts from exactly the events broker-replay saw;
  4. restart, and check:
     * every trade acknowledged this round (in the last round: in any round) is there for its
       owner with the fields it was acknowledged with;
     * requests cut off by the kill that had a client_order_id are looked up and sent again: the
       lookup and the retry agree (404 then 201, or 200 then 200 with the same trade), and a
       sample of older client_order_ids sent again answers 200 with the original trade;
     * every trade id the node handed out (ids are one dense counter; a probe trade bounds them)
       is enumerated and owned by exactly one customer; no client_order_id has two trades;
  5. once nothing is open (all trades terminal): each customer's cash equals the opening cash
     minus the FILLED BUY notional plus the FILLED SELL notional, exactly, in ticks of 1/10,000
     USD (nothing executed twice despite duplicate callbacks and crashes), positions likewise,
     nothing reserved;
  6. SIGTERM (exit 0), and broker-replay reproduces the live digest exactly.

Everything listens and connects on 127.0.0.1 only; every loop is bounded in count and time.
"""

import functools
import os
import random
import re
import sys
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import sanitizer_reports  # noqa: E402
from harness import TERMINAL  # noqa: E402
from test_core import BrokerTestCase, SYMBOLS, dump_logs_on_failure, run_threads  # noqa: E402

ROUNDS = int(os.environ.get("BROKER_CRASH_ROUNDS", "20"))
SIM_ARGS = ["--sim-latency-ms", "5", "--sim-duplicate-rate", "0.3", "--sim-reject-rate", "0.05"]
N_THREADS = 6
CUSTOMERS_PER_THREAD = 4
CADENCE_S = 0.02            # each customer places a trade at most this often
KILL_WINDOW_S = (0.2, 1.0)  # the kill comes this long into the round
LOAD_MAX_S = 3.0            # workers stop on their own after this long (the kill comes first)
COID_SHARE = 0.4            # share of placements with a client_order_id
RETRY_SHARE = 0.35          # share of those sent twice in a row
OLD_COID_RETRIES = 8        # client_order_ids of earlier rounds sent again after each restart
OPENING_CASH = "5000000.0000"
OPENING_POS = {"AAPL": 5000, "MSFT": 5000, "KO": 5000}
PROBE = "crash-probe"       # no cash: its BUY is REJECTED at once; its trade id bounds all ids
# What an acknowledged trade must keep forever.
FIXED_FIELDS = ("trade_id", "customer_id", "client_order_id", "symbol", "side", "quantity",
                "created_at")
RECOVERED = re.compile(r"recovered (\d+) events, \d+ customers, (\d+) open trades")
BANNER = "=== [test harness]"


def setUpModule():
    harness.check_binaries()


class Ack:
    """An acknowledged trade: who placed it, what was asked, what the first answer said."""
    __slots__ = ("cid", "req", "body", "round")

    def __init__(self, cid, req, body, rnd):
        self.cid, self.req, self.body, self.round = cid, req, body, rnd


class CrashTest(BrokerTestCase):

    @dump_logs_on_failure
    def test_kill_nine_twenty_times_under_load(self):
        seed = int(os.environ.get("BROKER_CRASH_SEED") or random.SystemRandom().randrange(1 << 31))
        sys.stderr.write("[crash] seed %d (BROKER_CRASH_SEED=%d repeats the test's random "
                         "choices)\n" % (seed, seed))
        self.rng = random.Random(seed)
        self.cids = ["crash-%02d" % i for i in range(N_THREADS * CUSTOMERS_PER_THREAD)]
        self.cids_of_thread = [self.cids[t::N_THREADS] for t in range(N_THREADS)]
        self.thread_rngs = [random.Random(seed * 100 + t) for t in range(N_THREADS)]
        self.budget = {cid: dict(OPENING_POS) for cid in self.cids}  # shares a SELL may still take
        self.coid_counter = [0] * N_THREADS
        self.lock = threading.Lock()
        self.acked = {}       # trade_id -> Ack
        self.coid_trade = {}  # (cid, client_order_id) -> trade_id, from every 201/200
        self.owner = {}       # trade_id -> cid, for every trade id ever handed out
        self.final = {}       # trade_id -> terminal trade json (terminal trades never change)
        self.failures = []
        self.bound = 0        # the last probe trade's id: every id up to it was enumerated

        b = harness.Broker(self.workdir.path, name="node", args=SIM_ARGS)
        self.brokers.append(b)
        self.b = b
        self.base_args = list(b.args)  # SIM_ARGS and what the harness adds (no rate limit)
        last_digest = None
        t_start = time.monotonic()
        for rnd in range(1, ROUNDS + 1):
            t_round = time.monotonic()
            b.args = self.base_args + ["--sim-seed", str(self.rng.randrange(1 << 31))]
            b.start(port=b.port)
            if last_digest is None:
                for cid in self.cids:
                    self.open_customer(b, cid, OPENING_CASH, OPENING_POS)
                    b.token(cid)
                self.open_customer(b, PROBE, "0.0000")
            else:
                self.assertEqual(b.digest(), last_digest,
                                 "round %d: digest after a clean restart differs from the one at "
                                 "the SIGTERM" % rnd)
            stats = self.load_and_kill(rnd)
            stats.update(self.recover_and_verify(rnd, last=(rnd == ROUNDS)))
            last_digest = stats.pop("digest")
            stats["seconds"] = time.monotonic() - t_round
            sys.stderr.write(
                "[crash] round %(round)2d: kill at %(kill_at).2fs | sent %(sent)d: 201 %(new)d, "
                "200 %(repeat)d (retries), cut off %(cut)d | recovered %(recovered)d events "
                "(= replay of the crashed journal), %(in_flight)d trades open at the crash | "
                "after restart: %(open)d acked trades open, %(verified)d acked verified, "
                "cut-off retries %(coid_retried)d (%(coid_found)d "
                "already journaled), old ids resent %(old_resent)d | %(unacked)d journaled "
                "without an answer, %(gaps)d unused ids | total %(total)d trades (FILLED "
                "%(filled)d, REJECTED %(rejected)d) | seq %(sequence)d digest == replay | "
                "%(seconds).1fs\n" % stats)
        elapsed = time.monotonic() - t_start
        self.assertEqual(sanitizer_reports(b.stderr_path), [], "sanitizer reports in brokerd's log")
        sys.stderr.write("[crash] %d rounds in %.1fs: %d trades acknowledged, %d trades in all, "
                         "0 lost, 0 executed twice\n"
                         % (ROUNDS, elapsed, len(self.acked), len(self.owner)))

    # --- one round: load, kill -9 -------------------------------------------------------------

    def new_request(self, t, rnd, cid):
        rng = self.thread_rngs[t]
        qty = rng.randint(1, 5)
        budget = self.budget[cid]  # only thread t touches cid's budget
        sellable = [s for s, q in budget.items() if q >= qty]
        if sellable and rng.random() < 0.5:
            side, sym = "SELL", rng.choice(sellable)
            budget[sym] -= qty
        else:
            side, sym = "BUY", rng.choice(SYMBOLS)
        req = {"symbol": sym, "side": side, "quantity": qty}
        if rng.random() < COID_SHARE:
            self.coid_counter[t] += 1
            req["client_order_id"] = "r%02d-%s-%d" % (rnd, cid, self.coid_counter[t])
        return req

    def record_answer(self, rnd, cid, req, st, body, expect, first, counts):
        """Checks a placement's answer and records it as acknowledged; False on a failure."""
        what = "POST %r as %s -> %s %r" % (req, cid, st, body)
        with self.lock:
            if st != expect or not isinstance(body, dict) or "trade_id" not in body:
                self.failures.append("expected %d: %s" % (expect, what))
                return False
            self.check_trade(body, cid, req["symbol"], req["side"], req["quantity"])
            if body.get("client_order_id") != req.get("client_order_id"):
                self.failures.append("client_order_id not kept: " + what)
            tid = body["trade_id"]
            if first is not None and tid != first["trade_id"]:
                self.failures.append("a retried client_order_id produced a second trade %s "
                                     "(first %s): %s" % (tid, first["trade_id"], what))
            prior = self.acked.get(tid)
            if prior is None:
                self.acked[tid] = Ack(cid, req, body, rnd)
            elif [prior.body.get(f) for f in FIXED_FIELDS] != [body.get(f) for f in FIXED_FIELDS]:
                self.failures.append("trade %s answered differently: %r, then %r"
                                     % (tid, prior.body, body))
            if req.get("client_order_id"):
                known = self.coid_trade.setdefault((cid, req["client_order_id"]), tid)
                if known != tid:
                    self.failures.append("client_order_id %s of %s has two trades: %s and %s"
                                         % (req["client_order_id"], cid, known, tid))
            counts[st] = counts.get(st, 0) + 1
            return True

    def load_and_kill(self, rnd):
        b = self.b
        killed = threading.Event()
        counts = {}
        cut_off = []  # (cid, req) whose answer never came
        sent = [0]
        kill_at = self.rng.uniform(*KILL_WINDOW_S)
        t0 = time.monotonic()

        def worker(t):
            mine = self.cids_of_thread[t]
            next_at = {cid: t0 + self.thread_rngs[t].uniform(0, CADENCE_S) for cid in mine}
            i = 0
            while not killed.is_set() and time.monotonic() - t0 < LOAD_MAX_S:
                cid = mine[i % len(mine)]
                i += 1
                delay = next_at[cid] - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at[cid] = max(next_at[cid] + CADENCE_S, time.monotonic())
                req = self.new_request(t, rnd, cid)
                sends = 2 if req.get("client_order_id") and (
                    self.thread_rngs[t].random() < RETRY_SHARE) else 1
                first = None
                for attempt in range(sends):
                    with self.lock:
                        sent[0] += 1
                    try:
                        st, body = b.request("POST", "/v1/trades", req, token=b.token(cid),
                                             timeout=10.0)
                    except harness.HttpError as exc:
                        # Expected once brokerd is killed: not acknowledged, not a failure.
                        with self.lock:
                            cut_off.append((cid, req))
                            if not killed.is_set():
                                self.failures.append("request failed before the kill: %s" % exc)
                        return
                    if not self.record_answer(rnd, cid, req, st, body,
                                              201 if attempt == 0 else 200, first, counts):
                        return
                    first = body

        def killer():
            time.sleep(max(0.0, t0 + kill_at - time.monotonic()))
            killed.set()
            b.kill9()

        errors = run_threads([functools.partial(worker, t) for t in range(N_THREADS)] + [killer],
                             timeout=LOAD_MAX_S + 30)
        self.assertEqual(errors, [])
        self.assertEqual(self.failures, [])
        self.assertFalse(b.alive(), "brokerd survived kill -9?")
        self.assertNotEqual(b.proc.returncode, 0)
        self.cut_off = cut_off
        return {"round": rnd, "kill_at": kill_at, "sent": sent[0], "new": counts.get(201, 0),
                "repeat": counts.get(200, 0), "cut": len(cut_off)}

    # --- restart and verify -------------------------------------------------------------------

    def recovered_events(self):
        """(events, open trades) of the last 'recovered N events, C customers, K open trades'
        line of the current start."""
        with open(self.b.stderr_path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        text = text[text.rfind(BANNER):]
        found = RECOVERED.findall(text)
        self.assertTrue(found, "no 'recovered N events' line after the last start")
        return int(found[-1][0]), int(found[-1][1])

    def parallel(self, items, fn, timeout=120):
        """fn(item) for every item, on N_THREADS threads."""
        items = list(items)
        errors = run_threads([functools.partial(lambda part: [fn(x) for x in part],
                                                items[p::N_THREADS]) for p in range(N_THREADS)],
                             timeout=timeout)
        self.assertEqual(errors, [])
        self.assertEqual(self.failures, [])

    def recover_and_verify(self, rnd, last):
        b = self.b
        out = {}
        # The crashed journal is intact: broker-replay verifies every record and the hash chain.
        rc, crashed, stdout, stderr = harness.run_replay(b.data_dir)
        self.assertEqual(rc, 0, "round %d: broker-replay of the crashed journal exited %d\n%s\n%s"
                         % (rnd, rc, stdout[-2000:], stderr[-2000:]))
        b.args = self.base_args + ["--sim-seed", str(self.rng.randrange(1 << 31))]
        b.start(port=b.port)
        out["recovered"], out["in_flight"] = self.recovered_events()
        self.assertEqual(out["recovered"], crashed["sequence"],
                         "round %d: brokerd recovered %d events, broker-replay saw %d"
                         % (rnd, out["recovered"], crashed["sequence"]))

        # Every acknowledged trade is there for its owner, as it was acknowledged.
        to_verify = sorted(tid for tid, a in self.acked.items() if last or a.round == rnd)
        open_now = [0]

        def verify(tid):
            a = self.acked[tid]
            st, t = b.request("GET", "/v1/trades/" + tid, token=b.token(a.cid))
            with self.lock:
                if st != 200 or not isinstance(t, dict):
                    self.failures.append("round %d: acknowledged trade %s of %s lost: %s %r"
                                         % (rnd, tid, a.cid, st, t))
                    return
                for f in FIXED_FIELDS:
                    if t.get(f) != a.body.get(f):
                        self.failures.append("round %d: trade %s: %s was %r when acknowledged, "
                                             "now %r" % (rnd, tid, f, a.body.get(f), t.get(f)))
                if a.body["status"] in TERMINAL and (t.get("status"), t.get("reason"), t.get(
                        "filled_price")) != (a.body["status"], a.body["reason"],
                                             a.body["filled_price"]):
                    self.failures.append("round %d: terminal trade %s changed: %r -> %r"
                                         % (rnd, tid, a.body, t))
                if tid in self.final and t != self.final[tid]:
                    self.failures.append("round %d: closed trade %s changed: %r -> %r"
                                         % (rnd, tid, self.final[tid], t))
                if t.get("status") not in TERMINAL:
                    open_now[0] += 1

        self.parallel(to_verify, verify)
        out["verified"], out["open"] = len(to_verify), open_now[0]

        # Cut off with a client_order_id: look it up, then send it again; the two must agree.
        counts = {}
        out["coid_retried"] = out["coid_found"] = 0
        for cid, req in self.cut_off:
            coid = req.get("client_order_id")
            if not coid:
                continue
            st, t = b.request("GET", "/v1/trades:by_client_order_id?client_order_id="
                              + urllib.parse.quote(coid, safe=""), token=b.token(cid))
            self.assertIn(st, (200, 404), "lookup of %s as %s -> %s %r" % (coid, cid, st, t))
            first = None
            if st == 200:
                self.check_trade(t, cid, req["symbol"], req["side"], req["quantity"])
                self.assertEqual(t["client_order_id"], coid, t)
                first = t
                out["coid_found"] += 1
            st, body = b.request("POST", "/v1/trades", req, token=b.token(cid))
            self.record_answer(rnd, cid, req, st, body, 200 if first else 201, first, counts)
            out["coid_retried"] += 1
        self.assertEqual(self.failures, [])

        # Older client_order_ids, sent again after crashes and restarts: the original trade.
        old = sorted(k for k, tid in self.coid_trade.items() if self.acked[tid].round < rnd)
        sample = self.rng.sample(old, min(OLD_COID_RETRIES, len(old)))
        for cid, coid in sample:
            a = self.acked[self.coid_trade[(cid, coid)]]
            st, body = b.request("POST", "/v1/trades", a.req, token=b.token(cid))
            self.record_answer(rnd, cid, a.req, st, body, 200, a.body, counts)
        self.assertEqual(self.failures, [])
        out["old_resent"] = len(sample)

        # Enumerate every trade id handed out: ids come from one counter, so a fresh trade's id
        # bounds them. Ids nobody was told about are probed with the customers whose request was
        # cut off first, then with everyone (another customer's trade is a 404).
        st, pt = self.place(b, PROBE, "AAPL", "BUY", 1)
        self.assertEqual(st, 201, (st, pt))
        self.check_trade(pt, PROBE, "AAPL", "BUY", 1)
        self.assertEqual((pt["status"], pt["reason"]), ("REJECTED", "insufficient_funds"), pt)
        self.assertNotIn(pt["trade_id"], self.owner, "the node reused a trade id")
        bound = int(pt["trade_id"], 16)
        self.assertGreater(bound, max([self.bound] + [int(t, 16) for t in self.acked]),
                           "trade ids went backwards")
        self.assertLess(bound - self.bound, 50_000, "trade ids are not a dense counter")
        self.owner[pt["trade_id"]] = PROBE
        self.final[pt["trade_id"]] = pt
        suspects = list(dict.fromkeys(cid for cid, _ in self.cut_off))
        candidates = suspects + [c for c in self.cids if c not in suspects]
        out["unacked"] = out["gaps"] = 0
        for n in range(self.bound + 1, bound):
            tid = "%016x" % n
            if tid in self.acked:
                self.owner[tid] = self.acked[tid].cid
                continue
            for cid in candidates:
                st, t = b.request("GET", "/v1/trades/" + tid, token=b.token(cid))
                if st == 200:
                    self.check_trade(t, cid)
                    self.owner[tid] = cid
                    out["unacked"] += 1
                    break
                self.assertEqual(st, 404, "GET /v1/trades/%s as %s -> %s %r" % (tid, cid, st, t))
            else:
                out["gaps"] += 1
        self.bound = bound

        # Quiesce: everything in flight at the crash finishes.
        pending = [(cid, tid) for tid, cid in self.owner.items() if tid not in self.final]
        self.final.update(harness.wait_terminal(b, pending, timeout=60))
        for tid, a in self.acked.items():
            t = self.final[tid]
            self.assertEqual([t.get(f) for f in FIXED_FIELDS],
                             [a.body.get(f) for f in FIXED_FIELDS], "trade %s changed" % tid)

        # No client_order_id has two trades, and each has the trade its answers named.
        by_coid = {}
        for tid, t in self.final.items():
            if t.get("client_order_id"):
                by_coid.setdefault((t["customer_id"], t["client_order_id"]), []).append(tid)
        twice = {k: v for k, v in by_coid.items() if len(v) > 1}
        self.assertEqual(twice, {}, "client_order_ids with more than one trade")
        for key, tid in self.coid_trade.items():
            self.assertEqual(by_coid.get(key), [tid], "client_order_id %r" % (key,))

        # Nothing executed twice: the money moved by exactly the FILLED trades.
        per_cust = {cid: [] for cid in self.cids}
        for tid, t in self.final.items():
            if t["customer_id"] != PROBE:
                per_cust[t["customer_id"]].append(t)
        for cid in self.cids:
            self.assert_settled(b, cid, OPENING_CASH, OPENING_POS, per_cust[cid])
        statuses = [t["status"] for t in self.final.values()]
        out["total"] = len(self.final)
        out["filled"] = statuses.count("FILLED")
        out["rejected"] = statuses.count("REJECTED")

        # The live digest, quiesced, equals broker-replay's after a clean stop.
        digest = b.stable_digest()
        self.assertGreaterEqual(digest["sequence"], crashed["sequence"], digest)
        self.assertEqual(b.stop(), 0, "brokerd exit code after SIGTERM")
        self.assert_replay_matches(b, digest, customers=len(self.cids) + 1)
        out["sequence"] = digest["sequence"]
        out["digest"] = digest
        return out


if __name__ == "__main__":
    harness.strip_bin_dir_arg(sys.argv)
    unittest.main(argv=sys.argv)
