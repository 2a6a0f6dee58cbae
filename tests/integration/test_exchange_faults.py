#!/usr/bin/python3
"""Process-level fault tests: brokerd against exchange-sim, two processes on loopback.

Run:  python3 tests/integration/test_exchange_faults.py --bin-dir build [-v] [TestCase.test_name]
      (or set BROKER_BIN_DIR; BROKER_KEEP_TMP=1 keeps the work dirs.)

brokerd runs with `--exchange http://127.0.0.1:PORT` against the real exchange-sim binary, whose
fault knobs (latency, rejects, duplicate / delayed / reordered / dropped callbacks, outages) are
turned on one at a time and all together while many customers trade. Both processes are also
killed with -9 mid-load, and forged or stale callbacks are POSTed to brokerd directly.

What every load scenario asserts (see `FaultTestCase.verify_load`):
  * every acknowledged trade is listed by brokerd as placed, and every trade ends terminal within
    a bound stated by the scenario (per trade: updated_at - created_at; and the whole book drains
    within the same bound after the last placement);
  * brokerd and the exchange agree on every trade: FILLED at the exchange's fill price and quantity,
    or REJECTED with the exchange's reason; a trade brokerd rejected itself (e.g. "expired") was
    never sent (the exchange answers 404);
  * one order per customer at the exchange, in placement order: the exchange's executed_at of a
    customer's orders never goes backwards in trade id order (placement order), and each was
    executed only after brokerd had settled the customer's previous one (its updated_at);
  * no fill applied twice or lost: for every customer, cash == opening cash - sum(qty * fill) over
    FILLED BUYs + the same over FILLED SELLs, exactly in ticks of 1/10,000 USD, positions likewise,
    nothing reserved at the end;
  * the digest does not move once the book is settled (late duplicates change nothing), brokerd
    exits 0 on SIGTERM, and broker-replay on its data dir reproduces the same digest.
On failure the tails of both processes' logs are printed and the work dir is kept.
"""

import functools
import hashlib
import hmac
import json
import os
import random
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import test_core  # noqa: E402  (BrokerTestCase: account/positions/settlement/replay checks)
from harness import TERMINAL, money_ticks, parse_timestamp_ms  # noqa: E402

EXCHANGE_SECRET = "faults-exchange-secret-4f1c-9b03d7e2"
# Symbols exchange-sim lists (GET /v1/quotes).
SYMBOLS = ["AAPL", "MSFT", "AMZN", "GOOGL", "META", "NVDA", "TSLA", "JPM"]
OPENING_CASH = "10000000.0000"
OPENING_POS = {"AAPL": 3000, "MSFT": 3000, "JPM": 3000}
# Rejections decided by brokerd itself: such a trade never reaches the exchange.
BROKER_SIDE_REASONS = frozenset({"insufficient_funds", "insufficient_shares", "expired",
                                 "unknown_symbol", "market_closed"})
# Knobs that every load scenario shares unless the scenario overrides them.
BASE_SIM = {"--seed": "1", "--latency-ms": "20"}
# brokerd's watchdog (ms): short, so that reconciliation by status query races the callbacks.
WATCHDOG_MS = 2000

# Bounds (seconds) within which every trade must be terminal: per trade (created_at to the
# terminal updated_at) and for the book to drain after the last placement.
KNOB_BOUND_S = 20            # single knobs and all knobs together (with a 3 s outage)
OUTAGE_S = 10
OUTAGE_BOUND_S = OUTAGE_S + 20   # a 10 s outage, then the breaker's cool-down and backoff (<= 5 s)
CRASH_BOUND_S = 30           # kill -9 of either process mid-load

_REPORT = []  # one line per scenario, printed at the end


def setUpModule():
    harness.check_binaries()
    if not os.access(harness.binary("exchange-sim"), os.X_OK):
        raise RuntimeError("missing binary %s (pass --bin-dir BUILD_DIR)"
                           % harness.binary("exchange-sim"))


def tearDownModule():
    if _REPORT:
        sys.stderr.write("\n[faults] summary\n" + "\n".join("  " + r for r in _REPORT) + "\n")


def report(line):
    _REPORT.append(line)
    sys.stderr.write("\n[faults] %s\n" % line)


def sign(secret, t, body):
    mac = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return "t=%d,v1=%s" % (t, mac)


def dump_logs_on_failure(fn):
    """On any failure or error: print the tail of every brokerd's and exchange-sim's logs and keep
    the work dir."""
    @functools.wraps(fn)
    def wrapper(self, *a, **kw):
        try:
            return fn(self, *a, **kw)
        except unittest.SkipTest:
            raise
        except BaseException:
            self._failed = True
            for p in self.brokers + self.sims:
                sys.stderr.write("\n" + p.log_tail() + "\n")
            sys.stderr.write("[test] work dir kept: %s\n" % self.workdir.path)
            raise
    return wrapper


class FaultTestCase(test_core.BrokerTestCase):
    maxDiff = 4000

    def node_log(self, b):
        with open(b.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def setUp(self):
        # As test_core.BrokerTestCase.setUp, with our own work dir prefix.
        self.workdir = harness.WorkDir(prefix="brokerd-faults-")
        self.brokers = []
        self._failed = False
        self.sims = []
        self.t_start = time.monotonic()

    def tearDown(self):
        for s in self.sims:
            s.kill9()
        super().tearDown()

    # --- processes -------------------------------------------------------------------------------

    def start_pair(self, sim_knobs=None, broker_args=(), name="x"):
        """exchange-sim with BASE_SIM overridden by sim_knobs (dict flag -> value, or a list of
        extra args), then brokerd against it. Returns (sim, broker)."""
        knobs = dict(BASE_SIM)
        extra = []
        if isinstance(sim_knobs, dict):
            knobs.update(sim_knobs)
        elif sim_knobs:
            extra = list(sim_knobs)
        args = []
        for k, v in knobs.items():
            args += [k, v]
        sim = harness.ExchangeSim(self.workdir.path, name=name + "-exchange",
                                  secret=EXCHANGE_SECRET, args=args + extra)
        self.sims.append(sim)
        sim.start()
        b = harness.Broker(self.workdir.path, name=name + "-brokerd",
                           args=["--exchange", sim.url, "--exchange-secret", EXCHANGE_SECRET,
                                 "--market-hours", "always"] + list(broker_args))
        self.brokers.append(b)
        b.start()
        return sim, b

    def open_customers(self, b, prefix, n):
        cids = ["%s-%02d" % (prefix, i) for i in range(n)]
        for cid in cids:
            self.open_customer(b, cid, OPENING_CASH, OPENING_POS)
            b.token(cid)
        return cids

    # --- load ------------------------------------------------------------------------------------

    def drive_load(self, b, cids, total, duration_s, n_threads=10, seed=1, killed=None,
                   extra_threads=(), sell_budget=None):
        """Places `total` market trades spread over `duration_s`, from n_threads threads each
        serving its own customers, in bursts of 1-4 trades per customer so that FIFOs build up.

        killed: an Event; once set, a request without an answer ends that thread quietly (the
        process was killed), a request that got one is still checked. Returns (placed, unacked)
        where placed = {cid: [(request, 201 body)]} in placement order."""
        lock = threading.Lock()
        placed = {cid: [] for cid in cids}
        failures = []
        unacked = [0]
        if sell_budget is None:
            sell_budget = {cid: dict(OPENING_POS) for cid in cids}
        t0 = time.monotonic()
        hard_deadline = t0 + duration_s * 3 + 60

        def worker(t):
            rng = random.Random(seed * 1000 + t)
            mine = cids[t::n_threads]
            if not mine:
                return
            quota = total // n_threads + (1 if t < total % n_threads else 0)
            interval = duration_s / max(1, quota)
            next_at = t0 + rng.random() * interval
            done, k = 0, 0
            while done < quota and time.monotonic() < hard_deadline:
                cid = mine[k % len(mine)]
                k += 1
                burst = min(quota - done, rng.randint(1, 4))
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += interval * burst
                for _ in range(burst):
                    qty = rng.randint(1, 10)
                    budget = sell_budget[cid]
                    sellable = [s for s, q in budget.items() if q >= qty]
                    if sellable and rng.random() < 0.4:
                        side, sym = "SELL", rng.choice(sellable)
                        budget[sym] -= qty  # before sending: an unacknowledged SELL may exist
                    else:
                        side, sym = "BUY", rng.choice(SYMBOLS)
                    req = {"symbol": sym, "side": side, "quantity": qty}
                    was_killed = killed is not None and killed.is_set()
                    try:
                        st, body = b.request("POST", "/v1/trades", req, token=b.token(cid),
                                             timeout=10.0)
                    except harness.HttpError as exc:
                        with lock:
                            unacked[0] += 1
                            if killed is None or not killed.is_set():
                                failures.append("POST %r as %s: no answer: %s" % (req, cid, exc))
                        return
                    done += 1
                    with lock:
                        if st == 201 and isinstance(body, dict):
                            placed[cid].append((req, body))
                        elif not was_killed and not (killed is not None and killed.is_set()):
                            failures.append("POST %r as %s -> %s %r" % (req, cid, st, body))
                        else:
                            unacked[0] += 1

        errors = test_core.run_threads(
            [functools.partial(worker, t) for t in range(n_threads)] + list(extra_threads),
            timeout=duration_s * 3 + 90)
        self.assertEqual(errors, [], "load threads failed")
        self.assertEqual(failures[:10], [], "%d placements failed" % len(failures))
        for cid in cids:
            for req, body in placed[cid]:
                self.check_trade(body, cid, req["symbol"], req["side"], req["quantity"])
                if body["status"] == "REJECTED":
                    self.assertNotIn(body["reason"], ("insufficient_funds", "insufficient_shares"),
                                     "load trade refused at placement: %r" % body)
            ids = [body["trade_id"] for _, body in placed[cid]]
            self.assertEqual(ids, sorted(ids), "%s: trade ids not increasing in placement order"
                             % cid)
        return placed, unacked[0]

    # --- settling ----------------------------------------------------------------------------------

    def wait_drained(self, b, sim, cids, timeout):
        """Waits until no customer has an open trade (GET /v1/trades?status=open). Fails after
        `timeout` seconds naming stuck trades and what the exchange says about them."""
        deadline = time.monotonic() + timeout
        rounds = 0
        while True:
            rounds += 1
            still = []
            for cid in cids:
                st, body = b.request("GET", "/v1/trades?status=open&limit=500", token=b.token(cid))
                self.assertEqual(st, 200, "GET open trades of %s -> %s %r" % (cid, st, body))
                if body["trades"]:
                    still.append((cid, body["trades"]))
            if not still:
                return rounds
            if time.monotonic() > deadline or rounds > 100000:
                lines = []
                for cid, trades in still[:4]:
                    for t in sorted(trades, key=lambda t: t["trade_id"])[:3]:
                        try:
                            xs = sim.request("GET", "/v1/orders/" + t["trade_id"], timeout=3.0)
                        except harness.HttpError as exc:
                            xs = ("no answer", str(exc))
                        lines.append("  %s %s %s created %s updated %s; exchange: %s %r"
                                     % (cid, t["trade_id"], t["status"], t["created_at"],
                                        t["updated_at"], xs[0], xs[1]))
                raise AssertionError(
                    "%d customers still have %d open trades %.0f s after the last placement "
                    "(bound)\n%s" % (len(still), sum(len(x) for _, x in still), timeout,
                                     "\n".join(lines)))
            time.sleep(0.2)

    def count_in_progress(self, b, cids):
        """Trades brokerd shows IN_PROGRESS (at the exchange) right now."""
        n = 0
        for cid in cids:
            st, body = b.request("GET", "/v1/trades?status=open&limit=500", token=b.token(cid))
            if st == 200:
                n += sum(t["status"] == "IN_PROGRESS" for t in body["trades"])
        return n

    def all_trades(self, b, cid):
        """Every trade of the customer (GET /v1/trades, all pages), sorted by trade id."""
        out, after = [], None
        for _ in range(1000):
            path = "/v1/trades?status=all&limit=500" + ("&after=" + after if after else "")
            st, body = b.request("GET", path, token=b.token(cid))
            self.assertEqual(st, 200, "GET %s as %s -> %s %r" % (path, cid, st, body))
            out.extend(body["trades"])
            after = body.get("next_after")
            if not after:
                break
        ids = [t["trade_id"] for t in out]
        self.assertEqual(len(ids), len(set(ids)), "%s: a trade listed twice" % cid)
        return sorted(out, key=lambda t: t["trade_id"])

    def verify_load(self, name, b, sim, cids, placed, bound_s, unacked=0, t_last_placement=None,
                    settle_s=0.5):
        """The checks listed in the module docstring. Returns the trades by customer."""
        t_wait = time.monotonic()
        self.wait_drained(b, sim, cids, timeout=bound_s)
        t_drained = time.monotonic()
        if settle_s:
            time.sleep(settle_s)  # late duplicates / reordered callbacks get a chance to arrive
        digest = b.stable_digest(settle=0.3)

        by_cust = {cid: self.all_trades(b, cid) for cid in cids}
        counts = {"FILLED": 0, "REJECTED": 0, "CANCELED": 0}
        reasons = {}
        extra = 0
        max_ms = 0
        for cid in cids:
            listed = {t["trade_id"]: t for t in by_cust[cid]}
            for req, body in placed[cid]:
                t = listed.get(body["trade_id"])
                self.assertIsNotNone(t, "%s: acknowledged trade %s is not listed"
                                     % (cid, body["trade_id"]))
                self.check_trade(t, cid, req["symbol"], req["side"], req["quantity"])
            extra += len(listed) - len(placed[cid])
            for t in by_cust[cid]:
                self.check_trade(t, cid)
                self.assertIn(t["status"], TERMINAL, t)
                counts[t["status"]] += 1
                if t["status"] == "REJECTED":
                    reasons[t["reason"]] = reasons.get(t["reason"], 0) + 1
                ms = parse_timestamp_ms(t["updated_at"]) - parse_timestamp_ms(t["created_at"])
                max_ms = max(max_ms, ms)
                self.assertLessEqual(ms, bound_s * 1000,
                                     "%s: trade %s took %d ms to become terminal (bound %d s): %r"
                                     % (cid, t["trade_id"], ms, bound_s, t))
        # Trades journaled although their 201 was lost (a kill): at most one per unanswered POST.
        self.assertGreaterEqual(extra, 0)
        self.assertLessEqual(extra, unacked, "%d trades listed that nobody placed" % extra)
        self.assertEqual(counts["CANCELED"], 0, counts)
        # How many trades were placed while the customer's previous trade was still open (so
        # queued in brokerd's FIFO): the per-customer ordering check below has teeth only if some.
        queued = 0
        for cid in cids:
            ts = by_cust[cid]
            for prev, cur in zip(ts, ts[1:]):
                queued += (parse_timestamp_ms(cur["created_at"])
                           < parse_timestamp_ms(prev["updated_at"]))

        xstats = self.check_against_exchange(sim, by_cust)

        for cid in cids:
            self.assert_settled(b, cid, OPENING_CASH, OPENING_POS, by_cust[cid])
        self.assertEqual(b.digest(), digest, "the digest moved after the book had settled")
        # exchange-sim keeps its books: every report brokerd saw again (duplicates, redeliveries
        # after drops, outages and restarts) repeated the one that settled the trade.
        self.assertEqual(self.read_metrics(b)["broker_exchange_contradicting_reports_total"], 0)

        self.assertEqual(b.stop(), 0, "brokerd exit code after SIGTERM")
        self.assert_replay_matches(b, digest, customers=len(cids))
        self.assertEqual(sim.stop(), 0, "exchange-sim exit code after SIGTERM")

        total = sum(len(v) for v in by_cust.values())
        placed_s = (t_last_placement - self.t_start) if t_last_placement else float("nan")
        report("%-28s %5d trades / %d customers: %d FILLED, %d REJECTED %s; %d journaled without "
               "a 201; drained %.1f s after the last placement (bound %d s); slowest trade %.1f s; "
               "%d placed behind an open trade; exchange executed_at ties %d; total %.1f s"
               % (name, total, len(cids), counts["FILLED"], counts["REJECTED"],
                  json.dumps(reasons, sort_keys=True), extra, t_drained - t_wait, bound_s,
                  max_ms / 1000.0, queued, xstats["ties"], time.monotonic() - self.t_start))
        self.assertGreater(counts["FILLED"], 0, counts)
        self.assertGreater(queued, 0, "no trade ever waited behind another: the load is too thin "
                           "to show per-customer ordering")
        return by_cust

    def check_against_exchange(self, sim, by_cust):
        """brokerd's terminal trades against GET /v1/orders/{id}; per-customer execution order."""
        ties = 0
        for cid, trades in by_cust.items():
            executed = []
            for t in trades:
                tid = t["trade_id"]
                st, o = sim.request("GET", "/v1/orders/" + tid)
                if t["status"] == "REJECTED" and t["reason"] in BROKER_SIDE_REASONS:
                    self.assertEqual(st, 404, "%s: trade %s rejected by brokerd (%s) but the "
                                     "exchange knows it: %s %r" % (cid, tid, t["reason"], st, o))
                    continue
                self.assertEqual(st, 200, "%s: trade %s is %s at brokerd but the exchange says "
                                 "%s %r" % (cid, tid, t["status"], st, o))
                self.assertEqual(o["status"], t["status"],
                                 "%s: trade %s: brokerd %r, exchange %r" % (cid, tid, t, o))
                self.assertEqual(o["quantity"], t["quantity"], (t, o))
                if t["status"] == "FILLED":
                    self.assertEqual(money_ticks(o["fill_price"]), money_ticks(t["filled_price"]),
                                     "%s: trade %s filled at %s, exchange says %s"
                                     % (cid, tid, t["filled_price"], o["fill_price"]))
                else:
                    self.assertIn(t["reason"], (o["reason"], "exchange_rejected"), (t, o))
                executed.append((tid, parse_timestamp_ms(o["executed_at"]),
                                 parse_timestamp_ms(t["updated_at"])))
            # One order at a time per customer, in placement (trade id) order: the exchange
            # executed a customer's orders in trade id order, and each only after brokerd had
            # settled the one before (same host clock; both in whole milliseconds).
            for (id1, x1, settled1), (id2, x2, _) in zip(executed, executed[1:]):
                self.assertLessEqual(x1, x2, "%s: exchange executed %s at %d ms, after the later "
                                     "trade %s (%d ms)" % (cid, id1, x1, id2, x2))
                self.assertLessEqual(settled1, x2, "%s: exchange executed %s at %d ms, before "
                                     "brokerd settled the previous trade %s (%d ms): two orders "
                                     "of one customer at the exchange at once"
                                     % (cid, id2, x2, id1, settled1))
                ties += x1 == x2
        return {"ties": ties}

    # --- one standard load scenario --------------------------------------------------------------

    def run_knob_scenario(self, name, knobs, n_customers=30, n_trades=600, duration_s=3.0,
                          bound_s=KNOB_BOUND_S, settle_s=0.5, seed=1):
        sim, b = self.start_pair(dict(knobs, **{"--seed": str(seed)}),
                                 ["--watchdog-ms", str(WATCHDOG_MS)], name=name)
        cids = self.open_customers(b, name, n_customers)
        placed, unacked = self.drive_load(b, cids, n_trades, duration_s, seed=seed)
        t_last = time.monotonic()
        self.assertEqual(sum(len(v) for v in placed.values()), n_trades)
        return self.verify_load(name, b, sim, cids, placed, bound_s, unacked=unacked,
                                t_last_placement=t_last, settle_s=settle_s)


class ExchangeKnobTest(FaultTestCase):
    """Every fault knob of exchange-sim on its own, and all of them together."""

    @dump_logs_on_failure
    def test_knob_latency_exponential(self):
        self.run_knob_scenario("latency-exponential",
                               {"--latency-ms": "40", "--latency-dist": "exponential"}, seed=11)

    @dump_logs_on_failure
    def test_knob_reject(self):
        by_cust = self.run_knob_scenario(
            "reject-30pct", {"--reject-rate": "0.3",
                             "--reject-reasons": "exchange_rejected,limit_not_marketable,halted"},
            seed=12)
        rejected = sum(t["status"] == "REJECTED" for ts in by_cust.values() for t in ts)
        self.assertGreater(rejected, 60, "the reject knob hardly fired")

    @dump_logs_on_failure
    def test_knob_duplicate_every_callback(self):
        # --duplicate-rate 1: every callback is delivered once more after it was acknowledged;
        # no fill may be applied twice (the cash equation is exact).
        self.run_knob_scenario("duplicate-100pct", {"--duplicate-rate": "1"}, seed=13,
                               settle_s=2.0)

    @dump_logs_on_failure
    def test_knob_delay(self):
        self.run_knob_scenario("delay-30pct-500ms", {"--delay-rate": "0.3", "--delay-ms": "500"},
                               seed=14)

    @dump_logs_on_failure
    def test_knob_reorder(self):
        self.run_knob_scenario("reorder-50pct", {"--reorder-rate": "0.5"}, seed=15)

    @dump_logs_on_failure
    def test_knob_drop(self):
        self.run_knob_scenario("drop-40pct", {"--drop-rate": "0.4"}, seed=16)

    @dump_logs_on_failure
    def test_all_knobs_together(self):
        self.run_knob_scenario(
            "all-knobs", {"--latency-ms": "30", "--latency-dist": "exponential",
                          "--reject-rate": "0.1", "--reject-reasons": "exchange_rejected,halted",
                          "--duplicate-rate": "0.5", "--delay-rate": "0.1", "--delay-ms": "400",
                          "--reorder-rate": "0.2", "--drop-rate": "0.2", "--outage": "4:3",
                          "--outage-mode": "503"},
            # 3,000 trades from 100 customers, placed over 10 s, through a 3 s outage.
            n_customers=100, n_trades=3000, duration_s=10.0, seed=17, settle_s=1.5)


class CallbackAuthTest(FaultTestCase):

    @dump_logs_on_failure
    def test_forged_and_stale_callbacks_are_refused_and_change_nothing(self):
        # The exchange holds the order for a minute, so the trade stays IN_PROGRESS while forged
        # executions for it are POSTed straight to brokerd.
        sim, b = self.start_pair({"--latency-ms": "60000", "--latency-dist": "fixed"},
                                 ["--watchdog-ms", "60000"], name="forged")
        cid = self.open_customers(b, "forged", 1)[0]
        st, t = self.place(b, cid, "AAPL", "BUY", 7)
        self.assertEqual(st, 201, (st, t))
        tid = t["trade_id"]
        deadline = time.monotonic() + 10
        while True:
            st, xo = sim.request("GET", "/v1/orders/" + tid)
            if st == 200:
                break
            self.assertLess(time.monotonic(), deadline, "the order never reached the exchange")
            time.sleep(0.05)
        self.assertEqual(xo["status"], "ACCEPTED", xo)
        st, t = b.request("GET", "/v1/trades/" + tid, token=b.token(cid))
        self.assertEqual((st, t["status"]), (200, "IN_PROGRESS"), t)
        before = (b.digest(), self.account(b, cid), self.positions(b, cid))

        def callback(price, exec_id):
            return json.dumps({"order_id": tid, "exec_id": exec_id, "status": "FILLED",
                               "quantity": 7, "fill_price": price, "reason": None,
                               "executed_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                                            time.gmtime())},
                              separators=(",", ":")).encode()

        body = callback("1.0000", "forged-exec-1")
        other = callback("2.0000", "forged-exec-2")
        now = int(time.time())
        wrong_secret_mac = hmac.new(b"not-the-exchange-secret", str(now).encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
        forged = [
            ("unsigned", None),
            ("empty signature", ""),
            ("garbage signature", "nonsense"),
            ("signed with another secret", "t=%d,v1=%s" % (now, wrong_secret_mac)),
            ("random mac", "t=%d,v1=%s" % (now, "ab" * 32)),
            ("valid mac, an hour old", sign(EXCHANGE_SECRET, now - 3600, body)),
            ("valid mac, an hour ahead", sign(EXCHANGE_SECRET, now + 3600, body)),
            ("valid mac for a different body", sign(EXCHANGE_SECRET, now, other)),
            ("valid mac, timestamp altered", sign(EXCHANGE_SECRET, now, body).replace(
                "t=%d," % now, "t=%d," % (now + 1))),
        ]
        for what, header in forged:
            headers = {} if header is None else {"X-Exchange-Signature": header}
            st, resp = b.request("POST", "/v1/exchange/callbacks", body, headers=headers)
            self.assertEqual(st, 401, "%s callback -> %s %r" % (what, st, resp))
            self.assertIsInstance(resp, dict, resp)
            self.assertIsInstance(resp.get("code"), str, resp)
            after = (b.digest(), self.account(b, cid), self.positions(b, cid))
            self.assertEqual(after, before, "a %s callback changed state" % what)
        st, t = b.request("GET", "/v1/trades/" + tid, token=b.token(cid))
        self.assertEqual((st, t["status"]), (200, "IN_PROGRESS"), t)

        # Control: the same report correctly signed is applied, so the refusals above were the
        # signature check and not a callback path that ignores everything.
        st, resp = b.request("POST", "/v1/exchange/callbacks", body,
                             headers={"X-Exchange-Signature": sign(EXCHANGE_SECRET, now, body)})
        self.assertEqual(st, 200, (st, resp))
        st, t = b.request("GET", "/v1/trades/" + tid, token=b.token(cid))
        self.assertEqual((t["status"], t["filled_price"]), ("FILLED", "1.0000"), t)
        applied = b.digest()
        self.assertNotEqual(applied, before[0])
        # The same report again (a duplicate) changes nothing; a stale replay of it is still 401.
        st, resp = b.request("POST", "/v1/exchange/callbacks", body,
                             headers={"X-Exchange-Signature": sign(EXCHANGE_SECRET, now, body)})
        self.assertEqual(st, 200, (st, resp))
        st, resp = b.request("POST", "/v1/exchange/callbacks", body,
                             headers={"X-Exchange-Signature": sign(EXCHANGE_SECRET, now - 3600,
                                                                   body)})
        self.assertEqual(st, 401, (st, resp))
        self.assertEqual(b.digest(), applied)
        # A second, different execution of the settled trade (another exec_id, another price),
        # correctly signed, is not applied either: one fill per trade.
        conflicting = callback("2.0000", "forged-exec-3")
        st, resp = b.request("POST", "/v1/exchange/callbacks", conflicting,
                             headers={"X-Exchange-Signature": sign(EXCHANGE_SECRET,
                                                                   int(time.time()), conflicting)})
        self.assertIn(st, (200, 409), (st, resp))
        self.assertEqual(b.digest(), applied, "a second execution of a FILLED trade changed state")
        # It is a break, counted and logged; the repeats of the fill before it were not.
        self.assertEqual(self.read_metrics(b)["broker_exchange_contradicting_reports_total"], 1)
        self.assertIn("reports trade %s filled (execution \"forged-exec-3\"), but it settled "
                      "filled by another execution" % tid, self.node_log(b))
        self.assert_settled(b, cid, OPENING_CASH, OPENING_POS, [t])
        refusals = 0
        with open(b.stderr_path, "rb") as f:
            refusals = f.read().decode(errors="replace").count("callback refused")
        digest = b.stable_digest()
        self.assertEqual(b.stop(), 0)
        self.assert_replay_matches(b, digest, customers=1)
        report("%-28s %d forged/stale callbacks -> 401, digest unchanged; control applied; "
               "%d refusals logged; total %.1f s"
               % ("forged-callbacks", len(forged) + 1, refusals, time.monotonic() - self.t_start))


    @dump_logs_on_failure
    def test_a_signed_fill_against_the_order_is_a_break_not_a_stuck_trade(self):
        # The exchange holds the orders for a minute; a correctly signed report that breaks the
        # order's terms (6 shares of 7) is POSTed for the first meanwhile.
        sim, b = self.start_pair({"--latency-ms": "60000", "--latency-dist": "fixed"},
                                 ["--watchdog-ms", "60000"], name="break")
        cid = self.open_customers(b, "break", 1)[0]
        st, first = self.place(b, cid, "AAPL", "BUY", 7)
        self.assertEqual(st, 201, (st, first))
        reserved_first = self.account(b, cid)["reserved_cash"]
        st, second = self.place(b, cid, "AAPL", "BUY", 1)
        self.assertEqual((st, second["status"]), (201, "PLACED"), second)
        reserved_both = self.account(b, cid)["reserved_cash"]
        tid = first["trade_id"]
        body = json.dumps({"order_id": tid, "exec_id": "break-1", "status": "FILLED",
                           "quantity": 6, "fill_price": "1.0000", "reason": None,
                           "executed_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())},
                          separators=(",", ":")).encode()
        for attempt in ("first", "repeat"):
            headers = {"X-Exchange-Signature": sign(EXCHANGE_SECRET, int(time.time()), body)}
            st, resp = b.request("POST", "/v1/exchange/callbacks", body, headers=headers)
            self.assertEqual(st, 200, "%s: %s %r" % (attempt, st, resp))
        st, t = b.request("GET", "/v1/trades/" + tid, token=b.token(cid))
        self.assertEqual((st, t["status"], t["reason"]), (200, "REJECTED", "fill_mismatch"), t)
        # Nothing of the fill applied; the reservation is the next trade's alone, and that trade
        # went to the exchange.
        st, nxt = b.request("GET", "/v1/trades/" + second["trade_id"], token=b.token(cid))
        self.assertEqual(nxt["status"], "IN_PROGRESS", nxt)
        account = self.account(b, cid)
        self.assertEqual(account["cash"], money_ticks(OPENING_CASH))
        self.assertEqual(account["reserved_cash"], reserved_both - reserved_first)
        self.assertEqual(self.positions(b, cid)["AAPL"][0], OPENING_POS["AAPL"])
        metrics = self.read_metrics(b)
        self.assertEqual(metrics["broker_exchange_fill_breaks_total"], 1)
        self.assertIn("against its terms", self.node_log(b))
        # The repeat above was a repeat. A fill of the whole order now, under another execution
        # id, contradicts the rejection: acknowledged, nothing applied, counted as a break.
        before = (b.digest(), self.account(b, cid))
        self.assertEqual(metrics["broker_exchange_contradicting_reports_total"], 0)
        late = body.replace(b'"quantity":6', b'"quantity":7').replace(b"break-1", b"break-2")
        headers = {"X-Exchange-Signature": sign(EXCHANGE_SECRET, int(time.time()), late)}
        st, resp = b.request("POST", "/v1/exchange/callbacks", late, headers=headers)
        self.assertEqual(st, 200, (st, resp))
        self.assertEqual((b.digest(), self.account(b, cid)), before)
        self.assertEqual(self.read_metrics(b)["broker_exchange_contradicting_reports_total"], 1)
        self.assertIn("reports trade %s filled (execution \"break-2\"), but it settled "
                      "without a fill" % tid, self.node_log(b))
        digest = b.stable_digest()
        self.assertEqual(b.stop(), 0)
        self.assert_replay_matches(b, digest, customers=1, open_trades=1)  # the second


class OutageAndCrashTest(FaultTestCase):

    def run_outage(self, mode, seed):
        name = "outage-%s" % mode
        sim, b = self.start_pair({"--outage": "2:%d" % OUTAGE_S, "--outage-mode": mode,
                                  "--seed": str(seed)},
                                 ["--watchdog-ms", str(WATCHDOG_MS)], name=name)
        cids = self.open_customers(b, name, 30)
        outage_start = sim.started_monotonic + 2
        outage_end_wall_ms = int((sim.started_wall + 2 + OUTAGE_S) * 1000)
        seen_down = []

        def probe():
            # Mid-outage, the exchange is really down (503 or refused).
            time.sleep(max(0.0, outage_start + OUTAGE_S / 2 - time.monotonic()))
            try:
                st, _ = harness.http_request(sim.port, "GET", "/healthz",
                                             generation=("probe", time.time()), timeout=2.0)
                seen_down.append(st)
            except harness.HttpError:
                seen_down.append("refused")
            harness.close_thread_connections()

        # Trades are placed from before the outage until well into it.
        placed, unacked = self.drive_load(b, cids, 600, 8.0, seed=seed, extra_threads=[probe])
        t_last = time.monotonic()
        self.assertEqual(seen_down, [503] if mode == "503" else ["refused"],
                         "the exchange was not down mid-outage")
        by_cust = self.verify_load(name, b, sim, cids, placed, OUTAGE_BOUND_S, unacked=unacked,
                                   t_last_placement=t_last)
        # The outage held trades: some created before its end were settled only after it.
        held = [t for ts in by_cust.values() for t in ts
                if parse_timestamp_ms(t["created_at"]) < outage_end_wall_ms - 1000
                and parse_timestamp_ms(t["updated_at"]) >= outage_end_wall_ms - 200]
        self.assertGreater(len(held), 0, "no trade was held by the outage")
        report("%-28s %d trades were held across the outage" % (name, len(held)))

    @dump_logs_on_failure
    def test_before_the_exchange_is_reached_a_placement_is_retryable_not_unlisted(self):
        # brokerd starts while its exchange is down: with no quote yet it cannot tell a listed
        # symbol from an unlisted one, so a placement is 503 quotes_unavailable (retry), not 422
        # unknown_symbol (give up), until the exchange's quotes come in.
        port = harness.free_port()
        b = harness.Broker(self.workdir.path, name="early-brokerd",
                           args=["--exchange", "http://127.0.0.1:%d" % port, "--exchange-secret",
                                 EXCHANGE_SECRET, "--market-hours", "always"])
        self.brokers.append(b)
        b.start()
        self.open_customer(b, "early-1", OPENING_CASH)
        order = {"symbol": "AAPL", "side": "BUY", "quantity": 1}
        st, body = b.request("POST", "/v1/trades", order, token=b.token("early-1"))
        self.assertEqual((st, body.get("code")), (503, "quotes_unavailable"), body)
        args = []
        for k, v in BASE_SIM.items():
            args += [k, v]
        sim = harness.ExchangeSim(self.workdir.path, name="early-exchange",
                                  secret=EXCHANGE_SECRET, args=args)
        self.sims.append(sim)
        sim.start(port=port)
        deadline = time.monotonic() + 30
        while True:
            st, body = b.request("POST", "/v1/trades", order, token=b.token("early-1"))
            if st == 201:
                break
            self.assertEqual((st, body.get("code")), (503, "quotes_unavailable"), body)
            self.assertLess(time.monotonic(), deadline, "no quotes 30 s after the exchange came")
            time.sleep(0.2)
        st, body = b.request("POST", "/v1/trades", dict(order, symbol="ZZZZ"),
                             token=b.token("early-1"))
        self.assertEqual((st, body.get("code")), (422, "unknown_symbol"), body)

    @dump_logs_on_failure
    def test_ten_second_outage_503(self):
        self.run_outage("503", seed=21)

    @dump_logs_on_failure
    def test_ten_second_outage_refuse(self):
        self.run_outage("refuse", seed=22)

    @dump_logs_on_failure
    def test_a_lone_trade_sent_into_a_short_outage_settles_after_it(self):
        # One trade meets the down exchange and nothing else is going on: its failed sends open
        # the breaker, and the gateway's connections idle with an empty queue while the trade
        # waits out its backoff. Once the exchange is back, the trade must be sent and settled,
        # and so must a trade placed after it.
        name = "lone-outage"
        outage_s = 5
        sim, b = self.start_pair({"--outage": "2:%d" % outage_s, "--outage-mode": "refuse"},
                                 name=name)
        cid = self.open_customers(b, name, 1)[0]
        deadline = time.monotonic() + 10
        while True:  # bounded: wait for the outage to begin
            try:
                harness.http_request(sim.port, "GET", "/healthz",
                                     generation=("probe", time.time()), timeout=1.0)
            except harness.HttpError:
                break
            self.assertLess(time.monotonic(), deadline, "the outage did not begin")
            time.sleep(0.1)
        harness.close_thread_connections()
        st, first = self.place(b, cid, "AAPL", "BUY", 1)
        self.assertEqual(st, 201, first)
        outage_end = sim.started_monotonic + 2 + outage_s
        time.sleep(max(0.0, outage_end - time.monotonic()) + 1.0)
        st, second = self.place(b, cid, "MSFT", "BUY", 1)
        self.assertEqual(st, 201, second)
        # The breaker's cool-down, the backoff (at most 5 s) and watchdog rounds, with slack.
        for trade in (first, second):
            t = self.wait_terminal_trade(b, cid, trade["trade_id"], timeout=25)
            self.assertEqual(t["status"], "FILLED", t)

    def wait_terminal_trade(self, b, cid, trade_id, timeout):
        deadline = time.monotonic() + timeout
        while True:
            st, t = b.request("GET", "/v1/trades/" + trade_id, token=b.token(cid))
            self.assertEqual(st, 200, t)
            if t["status"] in TERMINAL:
                return t
            self.assertLess(time.monotonic(), deadline,
                            "trade %s still %s after %d s" % (trade_id, t["status"], timeout))
            time.sleep(0.2)

    @dump_logs_on_failure
    def test_exchange_kill9_and_restart_mid_load(self):
        name = "exchange-kill9"
        # Executions 0-300 ms after acceptance: at the kill, some orders are accepted but not
        # executed, and some callbacks are owed.
        sim, b = self.start_pair({"--latency-ms": "150", "--seed": "31"},
                                 ["--watchdog-ms", str(WATCHDOG_MS)], name=name)
        cids = self.open_customers(b, name, 30)
        events = []

        def killer():
            time.sleep(2.5)
            events.append(("in progress", self.count_in_progress(b, cids)))
            sim.kill9()
            events.append(("killed", time.monotonic()))
            time.sleep(1.5)
            sim.start(port=sim.port)
            events.append(("restarted", time.monotonic()))

        placed, unacked = self.drive_load(b, cids, 600, 6.0, seed=31, extra_threads=[killer])
        t_last = time.monotonic()
        self.assertEqual([e for e, _ in events], ["in progress", "killed", "restarted"], events)
        self.assertGreater(events[0][1], 0, "no order was at the exchange at the kill")
        report("%-28s %d trades IN_PROGRESS at brokerd just before the kill"
               % (name, events[0][1]))
        self.verify_load(name, b, sim, cids, placed, CRASH_BOUND_S, unacked=unacked,
                         t_last_placement=t_last)

    @dump_logs_on_failure
    def test_brokerd_kill9_and_restart_with_orders_in_flight(self):
        name = "brokerd-kill9"
        sim, b = self.start_pair({"--latency-ms": "100", "--seed": "41"},
                                 ["--watchdog-ms", str(WATCHDOG_MS)], name=name)
        cids = self.open_customers(b, name, 30)
        killed = threading.Event()
        budget = {cid: dict(OPENING_POS) for cid in cids}
        in_progress = []

        def killer():
            time.sleep(2.0)
            in_progress.append(self.count_in_progress(b, cids))
            killed.set()
            b.kill9()

        placed1, unacked1 = self.drive_load(b, cids, 500, 4.0, seed=41, killed=killed,
                                            extra_threads=[killer], sell_budget=budget)
        self.assertFalse(b.alive(), "brokerd survived kill -9?")
        n1 = sum(len(v) for v in placed1.values())
        self.assertGreater(n1, 0, "nothing was acknowledged before the kill")
        self.assertGreater(in_progress[0], 0, "no order was at the exchange at the kill")
        # Down for a second: executions meanwhile find no callback receiver and are retried.
        time.sleep(1.0)
        b.start(port=b.port)  # the same port: callbacks owed by the exchange go to it
        for cid in cids:  # balances are sane with trades in flight
            self.account(b, cid)
            self.positions(b, cid)
        placed2, unacked2 = self.drive_load(b, cids, 200, 2.0, seed=42, sell_budget=budget)
        t_last = time.monotonic()
        placed = {cid: placed1[cid] + placed2[cid] for cid in cids}
        report("%-28s %d trades acknowledged before the kill (%d IN_PROGRESS just before it), "
               "%d requests cut off" % (name, n1, in_progress[0], unacked1))
        self.verify_load(name, b, sim, cids, placed, CRASH_BOUND_S, unacked=unacked1 + unacked2,
                         t_last_placement=t_last)

    @dump_logs_on_failure
    def test_trades_behind_a_stuck_trade_expire_during_a_long_outage(self):
        name = "expire-placed"
        max_age_ms = 3000
        watchdog_ms = 1000
        outage_s = 14
        sim, b = self.start_pair({"--outage": "2:%d" % outage_s, "--seed": "51"},
                                 ["--watchdog-ms", str(watchdog_ms),
                                  "--placed-max-age-ms", str(max_age_ms)], name=name)
        cids = self.open_customers(b, name, 10)
        # Wait for the outage to begin (bounded), then give each customer a head trade, which goes
        # IN_PROGRESS and sticks at the down exchange, and three trades queued behind it.
        deadline = time.monotonic() + 10
        while True:
            try:
                st = harness.http_request(sim.port, "GET", "/healthz",
                                          generation=("probe", time.time()), timeout=1.0)[0]
            except harness.HttpError:
                st = None
            if st == 503:
                break
            self.assertLess(time.monotonic(), deadline, "the outage did not begin")
            time.sleep(0.1)
        harness.close_thread_connections()
        placed = {}
        for i, cid in enumerate(cids):
            placed[cid] = []
            for j, (side, sym, qty) in enumerate([("BUY", "AAPL", 5), ("SELL", "MSFT", 3),
                                                   ("BUY", "NVDA", 2), ("SELL", "JPM", 4)]):
                st, body = self.place(b, cid, sym, side, qty)
                self.assertEqual(st, 201, (st, body))
                placed[cid].append(({"symbol": sym, "side": side, "quantity": qty}, body))
        t_placed = time.monotonic()
        outage_end = sim.started_monotonic + 2 + outage_s
        # Stated bound: a queued trade is expired within 2.5 s of reaching the maximum age (a
        # maintenance round, at most every second, plus slack for a loaded machine).
        expire_bound_ms = max_age_ms + 2500
        self.assertLess(time.monotonic() + expire_bound_ms / 1000.0, outage_end,
                        "the outage would end before the expiry bound; test setup too slow")
        # While the exchange is still down: the queued trades are REJECTED "expired", the heads
        # are still IN_PROGRESS, and only the heads hold reservations.
        deadline = t_placed + expire_bound_ms / 1000.0
        while True:
            states = {}
            for cid in cids:
                for _, body in placed[cid]:
                    st, t = b.request("GET", "/v1/trades/" + body["trade_id"], token=b.token(cid))
                    self.assertEqual(st, 200, (st, t))
                    states[body["trade_id"]] = t
            queued = [states[body["trade_id"]] for cid in cids for _, body in placed[cid][1:]]
            if all(t["status"] != "PLACED" for t in queued) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertLess(time.monotonic(), outage_end, "the outage ended before the checks")
        for cid in cids:
            head = states[placed[cid][0][1]["trade_id"]]
            self.assertEqual(head["status"], "IN_PROGRESS",
                             "%s: the head trade at the down exchange: %r" % (cid, head))
            for _, body in placed[cid][1:]:
                t = states[body["trade_id"]]
                self.assertEqual((t["status"], t["reason"]), ("REJECTED", "expired"),
                                 "%s: a trade queued behind a stuck one for more than %d ms: %r"
                                 % (cid, max_age_ms, t))
                age = parse_timestamp_ms(t["updated_at"]) - parse_timestamp_ms(t["created_at"])
                self.assertGreaterEqual(age, max_age_ms, "expired too early: %r" % t)
                self.assertLessEqual(age, expire_bound_ms, "expired too late: %r" % t)
            acct = self.account(b, cid)
            self.assertGreater(acct["reserved_cash"], 0, "%s: the head BUY reserves cash" % cid)
            pos = self.positions(b, cid)
            for sym in ("MSFT", "JPM"):
                self.assertEqual(pos[sym][1], 0, "%s: an expired SELL still reserves %s: %r"
                                 % (cid, sym, pos))
        # After the outage, the heads settle; the expired trades never reached the exchange.
        remaining = max(0.0, outage_end - time.monotonic())
        self.verify_load(name, b, sim, cids, placed, int(remaining) + OUTAGE_BOUND_S,
                         t_last_placement=t_placed)


if __name__ == "__main__":
    harness.strip_bin_dir_arg(sys.argv)
    unittest.main(argv=sys.argv)
