#!/usr/bin/python3
"""Process-level integration tests of brokerd, brokerctl and broker-replay.

Run:  python3 tests/integration/test_core.py --bin-dir build [-v] [TestCase.test_name]
      (or set BROKER_BIN_DIR; BROKER_KEEP_TMP=1 keeps the work dirs.)

The tests talk to the binaries only through their contracts (DESIGN.md "Client API" and
"Command line"): HTTP + JSON on 127.0.0.1, JWTs from `brokerctl token`, and `broker-replay`'s one
JSON line. Money is compared in integer ticks of 1/10,000 USD, never as floats.
"""

import base64
import functools
import hashlib
import hmac
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import TERMINAL, STATUSES, money_ticks, format_ticks, parse_timestamp_ms  # noqa: E402

SYMBOLS = ["AAPL", "MSFT", "AMZN", "GOOGL", "TSLA", "NVDA", "META", "JPM", "V", "KO"]
TRADE_FIELDS = ("trade_id", "client_order_id", "customer_id", "symbol", "side", "quantity",
                "status", "reason", "created_at", "updated_at", "filled_price", "filled_at")
TRADE_ID = re.compile(r"^[0-9a-f]{16}$")
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
HEX = re.compile(r"^[0-9a-fA-F]+$")


def setUpModule():
    harness.check_binaries()


def dump_logs_on_failure(fn):
    """On any failure or error: print the tail of every brokerd's logs and keep the work dir."""
    @functools.wraps(fn)
    def wrapper(self, *a, **kw):
        try:
            return fn(self, *a, **kw)
        except unittest.SkipTest:
            raise
        except BaseException:
            self._failed = True
            for b in self.brokers:
                sys.stderr.write("\n" + b.log_tail() + "\n")
            sys.stderr.write("[test] work dir kept: %s\n" % self.workdir.path)
            raise
    return wrapper


def run_threads(targets, timeout):
    """Runs callables on threads; returns the exceptions they raised (as strings)."""
    errors = []
    lock = threading.Lock()

    def run(fn):
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            with lock:
                errors.append("%s: %s" % (type(exc).__name__, exc))
        finally:
            harness.close_thread_connections()

    threads = [threading.Thread(target=run, args=(fn,), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        errors.append("worker threads still running after %.0f s" % timeout)
    return errors


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft_jwt(secret, claims, alg="HS256"):
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = (header + "." + payload).encode()
    if alg == "none":
        return header + "." + payload + "."
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return header + "." + payload + "." + b64url(sig)


class BrokerTestCase(unittest.TestCase):
    maxDiff = 4000

    def setUp(self):
        self.workdir = harness.WorkDir()
        self.brokers = []
        self._failed = False

    def tearDown(self):
        for b in self.brokers:
            b.kill9()
        harness.close_thread_connections()
        self.workdir.cleanup(keep=self._failed)

    def start_broker(self, args=(), name="node"):
        b = harness.Broker(self.workdir.path, name=name, args=args)
        self.brokers.append(b)
        b.start()
        return b

    # --- helpers on the contract ---------------------------------------------------------------

    def open_customer(self, broker, cid, cash, positions=None, expect=201):
        st, body = broker.open_customer(cid, cash, positions)
        self.assertEqual(st, expect, "PUT /admin/v1/customers/%s -> %s %r" % (cid, st, body))

    def read_metrics(self, broker):
        """GET /metrics as {series: value}."""
        st, text = broker.request("GET", "/metrics")
        self.assertEqual(st, 200)
        if isinstance(text, bytes):
            text = text.decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def check_histogram(self, values, name, labels=""):
        """Checks a Prometheus histogram in read_metrics' values: cumulative buckets by
        increasing bound that never decrease, +Inf last and equal to the count, something within
        the largest finite bound. Returns (count, sum)."""
        prefix = name + "_bucket{" + (labels + "," if labels else "")
        buckets = [(k[len(prefix):].split('le="', 1)[1].split('"', 1)[0], v)
                   for k, v in values.items() if k.startswith(prefix + 'le="')]
        self.assertGreaterEqual(len(buckets), 5, (name, labels, buckets))
        bounds = [float(le) for le, _ in buckets]
        self.assertEqual(bounds, sorted(bounds), buckets)
        self.assertEqual(bounds[-1], float("inf"), buckets)
        counts = [v for _, v in buckets]
        self.assertEqual(counts, sorted(counts), buckets)
        self.assertGreater(counts[-2], 0, "nothing counted within the largest bound")
        braced = "{%s}" % labels if labels else ""
        self.assertEqual(counts[-1], values[name + "_count" + braced])
        return values[name + "_count" + braced], values[name + "_sum" + braced]

    def place(self, broker, cid, symbol, side, quantity):
        return broker.request("POST", "/v1/trades",
                              {"symbol": symbol, "side": side, "quantity": quantity},
                              token=broker.token(cid))

    def check_trade(self, t, cid, symbol=None, side=None, quantity=None):
        """Shape of a trade JSON; returns it."""
        self.assertIsInstance(t, dict, "trade is not an object: %r" % (t,))
        for f in TRADE_FIELDS:
            self.assertIn(f, t, "trade lacks %r: %r" % (f, t))
        self.assertRegex(t["trade_id"], TRADE_ID)
        self.assertEqual(t["customer_id"], cid, t)
        if symbol is not None:
            self.assertEqual(t["symbol"], symbol, t)
        if side is not None:
            self.assertEqual(t["side"], side, t)
        if quantity is not None:
            self.assertEqual(t["quantity"], quantity, t)
        self.assertIsInstance(t["quantity"], int, t)
        self.assertIn(t["status"], STATUSES, t)
        self.assertTrue(t["client_order_id"] is None or isinstance(t["client_order_id"], str), t)
        self.assertGreaterEqual(parse_timestamp_ms(t["updated_at"]),
                                parse_timestamp_ms(t["created_at"]), t)
        if t["status"] == "REJECTED":
            self.assertIsInstance(t["reason"], str, "REJECTED without a reason: %r" % (t,))
            self.assertRegex(t["reason"], SNAKE)
        if t["status"] == "FILLED":
            self.assertIsNone(t["reason"], t)
            self.assertIsNotNone(t["filled_price"], "FILLED without filled_price: %r" % (t,))
            self.assertIsNotNone(t["filled_at"], "FILLED without filled_at: %r" % (t,))
            self.assertGreater(money_ticks(t["filled_price"]), 0, t)
            parse_timestamp_ms(t["filled_at"])
        else:
            self.assertIsNone(t["filled_price"], t)
            self.assertIsNone(t["filled_at"], t)
        return t

    def account(self, broker, cid):
        st, a = broker.request("GET", "/v1/account", token=broker.token(cid))
        self.assertEqual(st, 200, "GET /v1/account as %s -> %s %r" % (cid, st, a))
        self.assertEqual(a.get("customer_id"), cid, a)
        self.assertEqual(a.get("currency"), "USD", a)
        cash, reserved, bp = (money_ticks(a["cash"]), money_ticks(a["reserved_cash"]),
                              money_ticks(a["buying_power"]))
        self.assertGreaterEqual(cash, 0, "%s: negative cash %r" % (cid, a))
        self.assertGreaterEqual(reserved, 0, "%s: negative reserved_cash %r" % (cid, a))
        self.assertGreaterEqual(bp, 0, "%s: negative buying_power %r" % (cid, a))
        self.assertEqual(bp, cash - reserved, "%s: buying_power != cash - reserved %r" % (cid, a))
        return {"cash": cash, "reserved_cash": reserved, "buying_power": bp}

    def positions(self, broker, cid):
        """{symbol: (quantity, reserved_quantity, available_quantity)}, zero rows dropped."""
        st, rows = broker.request("GET", "/v1/positions", token=broker.token(cid))
        self.assertEqual(st, 200, "GET /v1/positions as %s -> %s %r" % (cid, st, rows))
        self.assertIsInstance(rows, list, rows)
        out = {}
        for r in rows:
            sym = r["symbol"]
            q, rq, aq = r["quantity"], r["reserved_quantity"], r["available_quantity"]
            for v in (q, rq, aq):
                self.assertIsInstance(v, int, r)
                self.assertGreaterEqual(v, 0, "%s: negative position %r" % (cid, r))
            self.assertEqual(aq, q - rq, "%s: available != quantity - reserved %r" % (cid, r))
            self.assertNotIn(sym, out, "%s: symbol listed twice %r" % (cid, rows))
            if q or rq:
                out[sym] = (q, rq, aq)
        return out

    def assert_settled(self, broker, cid, opening_cash, opening_positions, trades):
        """With every trade of the customer terminal: cash and positions equal the opening values
        moved by exactly the FILLED trades, and nothing is reserved."""
        cash = money_ticks(opening_cash)
        pos = dict(opening_positions)
        for t in trades:
            self.assertIn(t["status"], TERMINAL, t)
            if t["status"] != "FILLED":
                continue
            notional = t["quantity"] * money_ticks(t["filled_price"])
            if t["side"] == "BUY":
                cash -= notional
                pos[t["symbol"]] = pos.get(t["symbol"], 0) + t["quantity"]
            else:
                cash += notional
                pos[t["symbol"]] = pos.get(t["symbol"], 0) - t["quantity"]
        for sym, q in pos.items():
            self.assertGreaterEqual(q, 0, "%s: fills sold more %s than held" % (cid, sym))
        acct = self.account(broker, cid)
        self.assertEqual(acct["cash"], cash,
                         "%s: cash %s, expected %s from %d trades"
                         % (cid, format_ticks(acct["cash"]), format_ticks(cash), len(trades)))
        self.assertEqual(acct["reserved_cash"], 0, "%s: cash still reserved %r" % (cid, acct))
        got = self.positions(broker, cid)
        expected = {s: (q, 0, q) for s, q in pos.items() if q}
        self.assertEqual(got, expected, "%s: positions (qty, reserved, available)" % cid)

    def assert_replay_matches(self, broker, digest, customers, open_trades=0):
        """brokerd is stopped: broker-replay verifies the journal and reproduces the digest."""
        rc, out, stdout, stderr = harness.run_replay(broker.data_dir)
        self.assertEqual(rc, 0, "broker-replay exited %d\nstdout: %s\nstderr: %s"
                         % (rc, stdout[-2000:], stderr[-2000:]))
        self.assertIsInstance(out, dict, "broker-replay printed no JSON line: %r" % stdout)
        self.assertEqual(out.get("sequence"), digest["sequence"], (out, digest))
        self.assertEqual(out.get("digest"), digest["digest"], (out, digest))
        self.assertEqual(out.get("customers"), customers, out)
        self.assertEqual(out.get("open_trades"), open_trades, out)
        return out


class CoreTest(BrokerTestCase):

    # ------------------------------------------------------------------------------------------
    @dump_logs_on_failure
    def test_settlement_matches_fills_exactly_despite_rejects_and_duplicate_callbacks(self):
        b = self.start_broker(["--sim-reject-rate", "0.1", "--sim-duplicate-rate", "0.5",
                               "--sim-latency-ms", "2", "--sim-seed", "20240501"])
        n_customers, n_threads, per_thread = 8, 8, 38  # ~300 trades
        opening_cash = "1000000.0000"
        opening_pos = {"AAPL": 200, "MSFT": 100}
        cids = ["settle-%d" % i for i in range(n_customers)]
        for cid in cids:
            self.open_customer(b, cid, opening_cash, opening_pos)
            b.token(cid)

        lock = threading.Lock()
        placed = {cid: [] for cid in cids}   # cid -> [201 trade json]
        failures = []

        def worker(t):
            rng = random.Random(1000 + t)
            mine = [cids[t % n_customers], cids[(t + 1) % n_customers]]
            # Each customer is served by two threads; each may sell half of the opening shares,
            # so no SELL can exceed what the customer holds, whatever the interleaving.
            budget = {cid: {s: q // 2 for s, q in opening_pos.items()} for cid in mine}
            for i in range(per_thread):
                cid = mine[i % 2]
                qty = rng.randint(1, 5)
                sellable = [s for s, q in budget[cid].items() if q >= qty]
                if sellable and rng.random() < 0.5:
                    side, sym = "SELL", rng.choice(sellable)
                    budget[cid][sym] -= qty
                else:
                    side, sym = "BUY", rng.choice(SYMBOLS)
                st, body = self.place(b, cid, sym, side, qty)
                with lock:
                    if st != 201:
                        failures.append("POST %s %d %s as %s -> %s %r"
                                        % (side, qty, sym, cid, st, body))
                        continue
                    placed[cid].append((sym, side, qty, body))

        errors = run_threads([functools.partial(worker, t) for t in range(n_threads)],
                             timeout=60)
        self.assertEqual(errors, [])
        self.assertEqual(failures, [])

        owned, seen = [], set()
        for cid in cids:
            for sym, side, qty, body in placed[cid]:
                self.check_trade(body, cid, sym, side, qty)
                self.assertNotIn(body["trade_id"], seen, "trade id handed out twice")
                seen.add(body["trade_id"])
                owned.append((cid, body["trade_id"]))
                if body["status"] == "REJECTED":
                    self.assertNotIn(body["reason"], ("insufficient_funds", "insufficient_shares"),
                                     "bulk trade refused at placement: %r" % body)
        self.assertEqual(len(owned), n_threads * per_thread)

        final = harness.wait_terminal(b, owned, timeout=60)
        by_cust = {cid: [] for cid in cids}
        for cid, tid in owned:
            by_cust[cid].append(final[tid])
        counts = {"FILLED": 0, "REJECTED": 0, "CANCELED": 0}
        fills = {"BUY": 0, "SELL": 0}
        last_price = {}
        for cid in cids:
            requested = {body["trade_id"]: (sym, side, qty)
                         for sym, side, qty, body in placed[cid]}
            trades = sorted(by_cust[cid], key=lambda t: t["trade_id"])
            for t in trades:
                self.check_trade(t, cid, *requested[t["trade_id"]])
                counts[t["status"]] += 1
                if t["status"] == "FILLED":
                    fills[t["side"]] += 1
                    last_price[t["symbol"]] = money_ticks(t["filled_price"])
                if t["status"] == "REJECTED":
                    self.assertNotIn(t["reason"], ("insufficient_funds", "insufficient_shares"), t)
            # Invariant 2: one trade at a time at the exchange, in placement order, so the fill
            # times of a customer's trades never go backwards in trade id (creation) order.
            filled_at = [(t["trade_id"], parse_timestamp_ms(t["filled_at"]))
                         for t in trades if t["status"] == "FILLED"]
            for (id1, t1), (id2, t2) in zip(filled_at, filled_at[1:]):
                self.assertLessEqual(t1, t2, "%s: trade %s filled after later trade %s"
                                     % (cid, id1, id2))
            self.assert_settled(b, cid, opening_cash, opening_pos, trades)
        self.assertEqual(counts["CANCELED"], 0, counts)
        self.assertGreater(counts["FILLED"], len(owned) // 2, counts)
        self.assertGreater(fills["BUY"], 0, fills)
        self.assertGreater(fills["SELL"], 0, fills)

        # Opening the same customer again is idempotent; a different opening conflicts.
        poor = "settle-poor"
        self.open_customer(b, poor, "10000.0000", {"AAPL": 5}, expect=201)
        self.open_customer(b, poor, "10000.0000", {"AAPL": 5}, expect=200)
        self.open_customer(b, poor, "20000.0000", {"AAPL": 5}, expect=409)
        before = (self.account(b, poor), self.positions(b, poor))
        self.assertEqual(before[0]["cash"], money_ticks("10000.0000"))
        self.assertEqual(before[1], {"AAPL": (5, 0, 5)})

        # A BUY it cannot afford (notional ~$1,000,000 > $10,000 cash, well below the
        # $50,000,000 notional limit) is a journaled REJECTED trade; nothing moves.
        price = last_price.get("AAPL")
        qty = 1000 if not price else min(1_000_000, max(1000, -(-10_000_000_000 // price)))
        st, t = self.place(b, poor, "AAPL", "BUY", qty)
        self.assertEqual(st, 201, (st, t))
        self.check_trade(t, poor, "AAPL", "BUY", qty)
        self.assertEqual((t["status"], t["reason"]), ("REJECTED", "insufficient_funds"), t)
        # Selling more than held: REJECTED insufficient_shares.
        st, t2 = self.place(b, poor, "AAPL", "SELL", 6)
        self.assertEqual(st, 201, (st, t2))
        self.check_trade(t2, poor, "AAPL", "SELL", 6)
        self.assertEqual((t2["status"], t2["reason"]), ("REJECTED", "insufficient_shares"), t2)
        for tr in (t, t2):
            st, again = b.request("GET", "/v1/trades/" + tr["trade_id"], token=b.token(poor))
            self.assertEqual(st, 200, (st, again))
            self.assertEqual((again["status"], again["reason"]), (tr["status"], tr["reason"]))
        self.assertEqual((self.account(b, poor), self.positions(b, poor)), before)

        # Replay reproduces the live state exactly.
        digest = b.stable_digest()
        self.assertIsInstance(digest.get("sequence"), int, digest)
        self.assertGreater(digest["sequence"], 0, digest)
        self.assertRegex(digest.get("digest", ""), HEX)
        self.assertEqual(b.stop(), 0, "brokerd exit code after SIGTERM")
        self.assert_replay_matches(b, digest, customers=n_customers + 1)
        half = digest["sequence"] // 2
        if half > 0:
            rc, out, stdout, stderr = harness.run_replay(b.data_dir, until=half)
            self.assertEqual(rc, 0, "broker-replay --until %d: %s %s" % (half, stdout, stderr))
            self.assertIsInstance(out, dict, stdout)
            self.assertEqual(out.get("sequence"), half, out)

    # ------------------------------------------------------------------------------------------
    @dump_logs_on_failure
    def test_the_watchdog_asks_about_a_stuck_trade_less_often_the_longer_it_stays_stuck(self):
        # The simulated exchange takes a minute to fill; the watchdog finds the trade stuck after
        # 200 ms and asks at once, then after 200, 400, 800 and 1600 ms (the bound, 8 x 200).
        # Asking every round (100 ms apart) would be over 30 asks in these 3.5 s.
        b = self.start_broker(["--sim-latency-ms", "60000", "--sim-reject-rate", "0",
                               "--sim-duplicate-rate", "0", "--watchdog-ms", "200"])
        self.open_customer(b, "stuck", "1000.0000")
        st, t = b.request("POST", "/v1/trades", {"symbol": "AAPL", "side": "BUY", "quantity": 1},
                          token=b.token("stuck"))
        self.assertEqual(st, 201, t)
        time.sleep(3.5)
        log = ""
        for path in (b.stdout_path, b.stderr_path):
            with open(path, encoding="utf-8", errors="replace") as f:
                log += f.read()
        asks = len(re.findall(r"watchdog: asked the exchange about 1 (?:of 1 stuck )?trades", log))
        self.assertGreaterEqual(asks, 3, log[-3000:])
        self.assertLessEqual(asks, 7, log[-3000:])
        st, t = b.request("GET", "/v1/trades/" + t["trade_id"], token=b.token("stuck"))
        self.assertEqual((st, t["status"]), (200, "IN_PROGRESS"), t)

    # ------------------------------------------------------------------------------------------
    def test_bad_arguments_get_one_line_and_a_non_zero_exit(self):
        # The command-line contract: a one-line reason on bad arguments, and --help still works.
        with tempfile.TemporaryDirectory(prefix="broker-args-") as tmp:
            data = os.path.join(tmp, "data")
            secret = "s" * 32
            base = ["--data-dir", data, "--listen", "127.0.0.1:1"]

            def brokerd(*more):  # with a valid JWT secret, so that `more` is what is refused
                return ("brokerd", base + ["--jwt-secret", secret] + list(more))

            cases = [
                ("brokerd", base + ["--no-such-flag"]),
                brokerd("--holidays", os.path.join(tmp, "missing.txt")),
                brokerd("--sim-reject-rate", "2"),
                # NaN passes a plain range check (every comparison with it is false), and a
                # plain unsigned read takes -1 as 2^64 - 1.
                brokerd("--sim-reject-rate", "nan"),
                brokerd("--rate-limit-per-s", "nan"),
                brokerd("--snapshot-every-events", "-1"),
                brokerd("--snapshot-every-events", "99999999999999999999999"),
                brokerd("--sim-seed", "-1"),
                # A host name that does not resolve (RFC 2606 keeps .invalid unresolvable).
                brokerd("--exchange", "http://exchange.invalid:9100", "--exchange-secret", secret),
                ("brokerd", base + ["--jwt-secret", secret[:31]]),
                brokerd("--exchange", "http://127.0.0.1:1", "--exchange-secret", secret,
                        "--callback-url", "notaurl"),
                ("broker-replay", ["--no-such-flag"]),
                ("broker-replay", ["--data-dir", data, "--until", "abc"]),
                ("broker-replay", ["--data-dir", tmp, "--until", "-1"]),
                ("broker-replay", ["--data-dir", tmp, "--until", "0"]),
                ("broker-replay", ["--data-dir", tmp, "--until", "18446744073709551616"]),
                ("brokerctl", ["token", "--no-such-flag"]),
                ("brokerctl", ["tokn", "--sub", "a"]),
                ("brokerctl", []),
            ]
            if os.access(harness.binary("exchange-sim"), os.X_OK):
                cases.append(("exchange-sim", ["--no-such-flag"]))
            for name, args in cases:
                p = subprocess.run([harness.binary(name)] + args, capture_output=True, text=True,
                                   timeout=30)
                what = "%s %s -> %d, stdout %r, stderr %r" % (name, " ".join(args), p.returncode,
                                                             p.stdout, p.stderr)
                self.assertNotEqual(p.returncode, 0, what)
                self.assertEqual(p.stdout, "", what)
                self.assertEqual(len(p.stderr.splitlines()), 1, what)
                self.assertTrue(p.stderr.strip(), what)
                self.assertFalse(os.path.exists(data), "%s created its data dir" % what)
            # A guessable JWT secret is refused (RFC 7518 3.2: 256 bits for HS256); 32 bytes pass
            # that check and fail on the next bad argument instead.
            def brokerd_stderr(secret_arg, *more):
                return subprocess.run([harness.binary("brokerd"), "--data-dir", data, "--listen",
                                       "127.0.0.1:1", "--jwt-secret", secret_arg] + list(more),
                                      capture_output=True, text=True, timeout=30).stderr
            self.assertIn("needs at least 32", brokerd_stderr(secret[:31]))
            # brokerctl will not sign with a secret brokerd would refuse.
            p = subprocess.run([harness.binary("brokerctl"), "token", "--secret", secret[:31],
                                "--sub", "a"], capture_output=True, text=True, timeout=30)
            self.assertEqual((p.returncode, p.stdout), (2, ""), p.stderr)
            self.assertIn("needs at least 32", p.stderr)
            # A misspelt verb is named, with the verbs there are.
            p = subprocess.run([harness.binary("brokerctl"), "tokn", "--sub", "a"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual((p.returncode, p.stdout), (2, ""), p.stderr)
            self.assertIn("unknown subcommand 'tokn' (known: token)", p.stderr)
            self.assertIn("--exchange: cannot resolve 'exchange.invalid'", brokerd_stderr(
                secret, "--exchange", "http://exchange.invalid:9100", "--exchange-secret", secret))
            self.assertIn("--rate-limit-per-s: Value nan not in range", brokerd_stderr(
                secret, "--rate-limit-per-s", "nan"))
            # Flags that would be ignored are refused, not dropped without a word.
            self.assertIn("--callback-url is for a networked --exchange", brokerd_stderr(
                secret, "--callback-url", "http://127.0.0.1:1/v1/exchange/callbacks"))
            holidays = os.path.join(tmp, "holidays.txt")
            with open(holidays, "w") as f:
                f.write("2031-07-03 early_close\n")
            self.assertIn("--holidays only applies with --market-hours nyse", brokerd_stderr(
                secret, "--market-hours", "always", "--holidays", holidays))
            self.assertFalse(os.path.exists(data), "a refused start created its data dir")
            self.assertIn("holidays", brokerd_stderr(secret, "--holidays",
                                                     os.path.join(tmp, "missing.txt")))
            self.assertIn("--callback-url", brokerd_stderr(
                secret, "--exchange", "http://127.0.0.1:1", "--exchange-secret", secret,
                "--callback-url", "http://127.0.0.1:1"))
            # So is a guessable exchange secret, networked or embedded: it signs fills.
            for exchange in (["--exchange", "http://127.0.0.1:1"], []):
                self.assertIn("the exchange secret is 31 bytes; HMAC-SHA256 callbacks need at "
                              "least 32", brokerd_stderr(secret, "--exchange-secret", secret[:31],
                                                         *exchange))
            for until in ("-1", "0", "18446744073709551616"):
                p = subprocess.run([harness.binary("broker-replay"), "--data-dir", tmp, "--until",
                                    until], capture_output=True, text=True, timeout=30)
                self.assertIn("--until '%s' is not a sequence" % until, p.stderr)
            for name in ("brokerd", "broker-replay", "brokerctl"):
                p = subprocess.run([harness.binary(name), "--help"], capture_output=True,
                                   text=True, timeout=30)
                self.assertEqual(p.returncode, 0, "%s --help: %r" % (name, p.stderr))
                self.assertIn("--", p.stdout, "%s --help printed no options" % name)

    # ------------------------------------------------------------------------------------------
    @dump_logs_on_failure
    def test_auth_is_required_and_customers_see_only_their_own_trades(self):
        b = self.start_broker(["--sim-latency-ms", "1", "--sim-seed", "7"])
        a, other = "auth-a", "auth-b"
        self.open_customer(b, a, "50000.0000", {"AAPL": 10})
        self.open_customer(b, other, "50000.0000")

        st, _ = b.request("GET", "/healthz")
        self.assertEqual(st, 200)

        def assert_error(st, body, statuses, what):
            self.assertIn(st, statuses, "%s -> %s %r" % (what, st, body))
            self.assertIsInstance(body, dict, "%s: error body is not JSON: %r" % (what, body))
            self.assertRegex(body.get("code", ""), SNAKE, body)
            self.assertIsInstance(body.get("message"), str, body)

        st, body = b.request("GET", "/v1/account")
        assert_error(st, body, (401,), "no token")
        st, body = b.request("POST", "/v1/trades", {"symbol": "AAPL", "side": "BUY", "quantity": 1})
        assert_error(st, body, (401,), "POST without token")
        st, body = b.request("GET", "/v1/account", token="garbage")
        assert_error(st, body, (401,), "garbage token")
        st, body = b.request("GET", "/v1/account", headers={"Authorization": "Basic YTpi"})
        assert_error(st, body, (401,), "Basic auth")
        wrong = harness.mint_token("not-the-secret-but-just-as-long-as-one", a)
        st, body = b.request("GET", "/v1/account", token=wrong)
        assert_error(st, body, (401,), "token signed with another secret")
        now = int(time.time())
        expired = craft_jwt(b.jwt_secret, {"sub": a, "iat": now - 7200, "exp": now - 3600})
        st, body = b.request("GET", "/v1/account", token=expired)
        assert_error(st, body, (401,), "expired token")
        unsigned = craft_jwt(b.jwt_secret, {"sub": a, "exp": now + 3600}, alg="none")
        st, body = b.request("GET", "/v1/account", token=unsigned)
        assert_error(st, body, (401,), "alg=none token")

        # Isolation: B cannot see A's trade; A can.
        st, t = self.place(b, a, "AAPL", "BUY", 1)
        self.assertEqual(st, 201, (st, t))
        self.check_trade(t, a, "AAPL", "BUY", 1)
        st, body = b.request("GET", "/v1/trades/" + t["trade_id"], token=b.token(other))
        assert_error(st, body, (404,), "B reading A's trade")
        st, mine = b.request("GET", "/v1/trades/" + t["trade_id"], token=b.token(a))
        self.assertEqual(st, 200, (st, mine))
        self.check_trade(mine, a, "AAPL", "BUY", 1)
        st, body = b.request("GET", "/v1/trades/ffffffffffffffff", token=b.token(a))
        assert_error(st, body, (404,), "unknown trade id")
        st, body = b.request("GET", "/v1/trades/not-a-trade-id", token=b.token(a))
        assert_error(st, body, (400, 404), "malformed trade id")

        # Unknown symbol.
        st, body = self.place(b, a, "ZZZZ", "BUY", 1)
        assert_error(st, body, (422,), "unknown symbol")
        self.assertEqual(body["code"], "unknown_symbol", body)

        # Admin calls need the admin role.
        st, body = b.request("GET", "/admin/v1/digest", token=b.token(a))
        assert_error(st, body, (401, 403), "customer token on /admin/v1/digest")
        st, body = b.request("PUT", "/admin/v1/customers/auth-c", {"cash": "1.0000"},
                             token=b.token(a))
        assert_error(st, body, (401, 403), "customer token opening a customer")
        st, body = b.request("GET", "/admin/v1/digest")
        assert_error(st, body, (401,), "no token on /admin/v1/digest")
        b.digest()  # the admin token works

        harness.wait_terminal(b, [(a, t["trade_id"])], timeout=30)
        self.assertEqual(b.stop(), 0, "brokerd exit code after SIGTERM")

    # ------------------------------------------------------------------------------------------
    @dump_logs_on_failure
    def test_metrics_count_commits_and_show_where_memory_goes(self):
        b = self.start_broker(["--sim-latency-ms", "1", "--sim-seed", "11"])

        def metrics():
            return self.read_metrics(b)

        before = metrics()
        self.open_customer(b, "metrics-a", "10000.0000")
        trades = []
        for _ in range(5):
            st, body = self.place(b, "metrics-a", "AAPL", "BUY", 1)
            self.assertEqual(st, 201, body)
            trades.append(("metrics-a", body["trade_id"]))
        harness.wait_terminal(b, trades, timeout=30)
        after = metrics()
        # The embedded exchange's reports are counted like the networked one's callbacks: each
        # trade settled by one (filled or rejected at the exchange); repeats apart.
        name = "broker_exchange_callbacks_applied_total"
        self.assertEqual(after[name] - before[name], 5)
        # Opening the account, five placements and their settlements are all journaled.
        self.assertGreater(after["broker_journal_sequence"], before["broker_journal_sequence"] + 10)
        self.assertGreater(after["broker_journal_commits_total"],
                           before["broker_journal_commits_total"])
        # Every commit's time is in the histogram, and the count equals the commits counted
        # (nothing commits while the trades are all settled).
        name = "broker_journal_commit_seconds"
        count, took = self.check_histogram(after, name)
        self.assertEqual(count, after["broker_journal_commits_total"])
        self.assertGreater(took, 0)
        self.assertLess(took, count * 1.0, "over 1 s a commit")
        # Each request's time in the engine path, by stage: every request passes all three, so
        # the three counts agree and grew by at least the six requests made (one opening, five
        # placements). A request waits for at most a round or two, none near a second. An IO
        # thread adds a reply's three stages one after the other, and the node's own watchdog
        # queries go on, so a scrape can fall between two adds: read again until they agree.
        def stage_counts(values):
            return [values.get('broker_request_stage_seconds_count{stage="%s"}' % stage)
                    for stage in ("queued", "round", "handoff")]

        for _ in range(20):
            if len(set(stage_counts(after))) == 1:
                break
            time.sleep(0.05)
            after = metrics()
        counted = {}
        for stage in ("queued", "round", "handoff"):
            count, took = self.check_histogram(after, "broker_request_stage_seconds",
                                               'stage="%s"' % stage)
            was = before.get('broker_request_stage_seconds_count{stage="%s"}' % stage, 0)
            self.assertGreaterEqual(count - was, 6, stage)
            self.assertLess(took, count * 1.0, stage)
            counted[stage] = count
        self.assertEqual(len(set(counted.values())), 1, counted)
        # Every round holds a commit, which takes time: the rounds' total cannot be zero.
        self.assertGreater(after['broker_request_stage_seconds_sum{stage="round"}'], 0)
        for part in ("journal_memtables", "journal_table_readers", "journal_block_cache",
                     "heap_in_use", "heap_free"):
            self.assertIn('broker_memory_bytes{part="%s"}' % part, after)
        # The memtables hold what was just written; the heap holds at least the engine state
        # (glibc's figures: under AddressSanitizer its own allocator serves malloc and they are 0).
        self.assertGreater(after['broker_memory_bytes{part="journal_memtables"}'],
                           before['broker_memory_bytes{part="journal_memtables"}'])
        if not harness.built_with_asan():
            self.assertGreater(after['broker_memory_bytes{part="heap_in_use"}'], 100_000)
        # After a restart the journal's sequence is what recovery found, before anything new.
        self.assertEqual(b.stop(), 0, "brokerd exit code after SIGTERM")
        b.start(port=b.port)
        self.assertEqual(metrics()["broker_journal_sequence"], after["broker_journal_sequence"])

    # ------------------------------------------------------------------------------------------
    @dump_logs_on_failure
    def test_metrics_count_closed_trades_by_status(self):
        def closed(b):
            m = self.read_metrics(b)
            return {s: m['broker_trades_closed_total{status="%s"}' % s]
                    for s in ("FILLED", "REJECTED", "CANCELED")}

        # Fills and the exchange's rejections: each trade counts once, under the status GET shows.
        b = self.start_broker(["--sim-latency-ms", "1", "--sim-reject-rate", "0.4",
                               "--sim-seed", "5"])
        self.assertEqual(closed(b), {"FILLED": 0, "REJECTED": 0, "CANCELED": 0})
        self.open_customer(b, "closed-a", "100000.0000", {"AAPL": 10})
        trades = []
        for i in range(12):
            st, body = self.place(b, "closed-a", "AAPL", ("BUY", "SELL")[i % 2], 1)
            self.assertEqual(st, 201, body)
            trades.append(("closed-a", body["trade_id"]))
        # Refused at placement (more than the account can pay): closed as REJECTED at once.
        st, body = self.place(b, "closed-a", "AAPL", "BUY", 10_000)
        self.assertEqual((st, body.get("status")), (201, "REJECTED"), body)
        trades.append(("closed-a", body["trade_id"]))
        final = harness.wait_terminal(b, trades, timeout=30)
        want = {"FILLED": 0, "REJECTED": 0, "CANCELED": 0}
        for t in final.values():
            want[t["status"]] += 1
        self.assertGreater(want["FILLED"], 0, want)
        self.assertGreater(want["REJECTED"], 1, want)  # the refusal and an exchange rejection
        self.assertEqual(closed(b), want)

        # A cancel: the exchange holds the first trade, so the second waits, PLACED, and is
        # canceled; neither a held trade nor a refused cancel counts.
        b = self.start_broker(["--sim-latency-ms", "60000", "--sim-reject-rate", "0"],
                              name="held")
        self.open_customer(b, "closed-b", "100000.0000")
        first = self.place(b, "closed-b", "AAPL", "BUY", 1)[1]
        second = self.place(b, "closed-b", "AAPL", "BUY", 1)[1]
        self.assertEqual((first["status"], second["status"]), ("PLACED", "PLACED"))
        tok = b.token("closed-b")
        st, body = b.request("DELETE", "/v1/trades/" + first["trade_id"], token=tok)
        self.assertEqual(st, 422, body)
        st, body = b.request("DELETE", "/v1/trades/" + second["trade_id"], token=tok)
        self.assertEqual((st, body.get("status")), (200, "CANCELED"), body)
        self.assertEqual(closed(b), {"FILLED": 0, "REJECTED": 0, "CANCELED": 1})
        # A counter counts from the process's start: after a restart it begins again at zero.
        self.assertEqual(b.stop(), 0)
        b.start(port=b.port)
        self.assertEqual(closed(b), {"FILLED": 0, "REJECTED": 0, "CANCELED": 0})

    # ------------------------------------------------------------------------------------------
    @dump_logs_on_failure
    def test_paced_rounds_share_commits_and_lose_nothing(self):
        interval_s = 0.1
        b = self.start_broker(["--round-interval-us", str(int(interval_s * 1e6)),
                               "--sim-latency-ms", "1", "--sim-reject-rate", "0"])
        customers = ["paced-%d" % i for i in range(20)]
        for cid in customers:
            self.open_customer(b, cid, "1000.0000")
        start = time.monotonic()
        before = self.read_metrics(b)["broker_journal_commits_total"]
        results = {}

        def place(cid):
            results[cid] = self.place(b, cid, "AAPL", "BUY", 1)

        threads = [threading.Thread(target=place, args=(cid,)) for cid in customers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
            self.assertFalse(t.is_alive(), "a placement still unanswered after 30 s")
        trades = []
        for cid in customers:
            st, body = results[cid]
            self.assertEqual(st, 201, (cid, body))
            trades.append((cid, body["trade_id"]))
        harness.wait_terminal(b, trades, timeout=30)
        after = self.read_metrics(b)["broker_journal_commits_total"]
        elapsed = time.monotonic() - start
        # Rounds start at least interval_s apart and each commits at most once, so however slow
        # the machine, the 20 placements and 20 fills shared commits: at most one per interval.
        self.assertGreater(after, before)
        self.assertLessEqual(after - before, elapsed / interval_s + 1,
                             "%d commits in %.2f s" % (after - before, elapsed))
        for cid in customers:
            st, acct = b.request("GET", "/v1/account", token=b.token(cid))
            self.assertEqual(st, 200)
            self.assertEqual(acct["reserved_cash"], "0.0000", acct)
            self.assertLess(money_ticks(acct["cash"]), money_ticks("1000.0000"), acct)
        self.assertEqual(b.stop(), 0, "brokerd exit code after SIGTERM")

    # ------------------------------------------------------------------------------------------
    @dump_logs_on_failure
    def test_engine_and_http_threads_ask_for_short_scheduler_slices(self):
        b = self.start_broker([])
        task_dir = "/proc/%d/task" % b.proc.pid

        def read_slices():
            out = {}
            for tid in os.listdir(task_dir):
                try:
                    with open(os.path.join(task_dir, tid, "comm")) as f:
                        name = f.read().strip()
                    with open(os.path.join(task_dir, tid, "sched")) as f:
                        sched = f.read()
                except OSError:
                    continue
                m = re.search(r"^se\.slice\s*:\s*(\d+)", sched, re.M)
                if m:
                    out[name] = int(m.group(1))
            return out

        # /healthz can be answered by io-0 before io-1 has named itself and asked for its
        # slice: wait (bounded) until every thread looked at has started.
        wanted = {"engine", "io-0", "io-1", "exchange-sim"}
        deadline = time.monotonic() + 5
        slices = read_slices()
        while not wanted <= set(slices) and time.monotonic() < deadline and "engine" in slices:
            time.sleep(0.05)
            slices = read_slices()
        if "engine" not in slices:
            self.skipTest("this kernel shows no per-thread slice (se.slice came with Linux 6.12)")
        self.assertEqual(slices["engine"], 100000, slices)
        self.assertEqual(slices["io-0"], 100000, slices)
        self.assertEqual(slices["io-1"], 100000, slices)
        # Only those: the exchange and RocksDB's threads keep the default slice.
        self.assertNotEqual(slices["exchange-sim"], 100000, slices)

    # ------------------------------------------------------------------------------------------
    @dump_logs_on_failure
    def test_a_damaged_write_ahead_log_stops_the_start_and_a_torn_tail_does_not(self):
        # A crash image (kill -9 after acknowledged trades) whose write-ahead log is then damaged:
        # one flipped bit with acknowledged batches behind it must stop brokerd and broker-replay
        # with a reason, never open without those trades (and hand their ids out again); a
        # damaged last batch, as a write torn by a power cut leaves it, is recovered around.
        b = self.start_broker(["--sim-latency-ms", "1"])
        cids = ["wal-%d" % i for i in range(5)]
        for cid in cids:
            self.open_customer(b, cid, "1000000.0000", {"AAPL": 1000})
        for i in range(300):
            st, body = b.request("POST", "/v1/trades",
                                 {"symbol": "AAPL", "side": "BUY" if i % 2 else "SELL",
                                  "quantity": 1}, token=b.token(cids[i % len(cids)]))
            self.assertEqual(st, 201, body)
        b.kill9()

        def wal_of(data_dir):
            names = [n for n in os.listdir(data_dir) if re.fullmatch(r"\d{6}\.log", n)]
            self.assertEqual(len(names), 1, os.listdir(data_dir))
            path = os.path.join(data_dir, names[0])
            with open(path, "rb") as f:
                data = bytearray(f.read())
            return path, data, len(data.rstrip(b"\0"))  # zeros written ahead follow the end

        def crash_copy(name, change):
            copy = harness.Broker(self.workdir.path, name=name, args=["--sim-latency-ms", "1"])
            self.brokers.append(copy)
            shutil.rmtree(copy.data_dir)
            shutil.copytree(b.data_dir, copy.data_dir)
            path, data, end = wal_of(copy.data_dir)
            self.assertGreater(end, 4 * 32768, "too little write-ahead log to damage its middle")
            change(data, end)
            with open(path, "wb") as f:
                f.write(data)
            return copy

        def flip_middle(data, end):
            data[end // 2] ^= 0x01

        def tear_last(data, end):
            data[end - 16:end] = bytes(16)

        damaged = crash_copy("damaged", flip_middle)
        rc, _, out, err = harness.run_replay(damaged.data_dir)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("write-ahead log is damaged after record", err)
        self.assertIn("lie behind the damage", err)
        p = subprocess.run([harness.binary("brokerd"), "--data-dir", damaged.data_dir, "--listen",
                            "127.0.0.1:%d" % harness.free_port(), "--jwt-secret", b.jwt_secret],
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(p.returncode, 0, p.stderr)
        self.assertIn("write-ahead log is damaged after record", p.stderr)

        rc, whole, _, err = harness.run_replay(b.data_dir)
        self.assertEqual(rc, 0, err)
        self.assertNotIn("warning", err)
        torn = crash_copy("torn", tear_last)
        rc, replayed, out, err = harness.run_replay(torn.data_dir)
        self.assertEqual(rc, 0, err)
        self.assertIn("torn by a crash", err)
        self.assertLess(replayed["sequence"], whole["sequence"])
        torn.start()
        with open(torn.stderr_path) as f:
            log = f.read()
        self.assertIn("torn by a crash", log)
        recovered = re.search(r"recovered (\d+) events", log)
        self.assertTrue(recovered, log[-2000:])
        self.assertEqual(int(recovered.group(1)), replayed["sequence"])
        # The node goes on from there.
        st, body = torn.request("POST", "/v1/trades", {"symbol": "AAPL", "side": "BUY",
                                                       "quantity": 1}, token=torn.token(cids[0]))
        self.assertEqual(st, 201, body)

    # ------------------------------------------------------------------------------------------
    @dump_logs_on_failure
    def test_kill_nine_loses_nothing_acknowledged(self):
        b = self.start_broker(["--sim-latency-ms", "20", "--sim-seed", "99"])
        n_customers, n_threads = 20, 10
        # Each customer places a trade every 10 ms, twice what the exchange drains (one at a
        # time, 20 ms each), so at the kill every customer has a queue of PLACED trades behind an
        # IN_PROGRESS one; the queue stays bounded (~40) and drains within a second or two.
        burst_s, kill_at_s, cadence_s = 1.5, 0.75, 0.010
        opening_cash = "1000000.0000"
        opening_pos = {"AAPL": 300, "MSFT": 300}
        cids = ["crash-%02d" % i for i in range(n_customers)]
        for cid in cids:
            self.open_customer(b, cid, opening_cash, opening_pos)
            b.token(cid)

        lock = threading.Lock()
        killed = threading.Event()
        acked = {}           # trade_id -> (cid, request body, 201 trade json)
        failures = []
        unacked = [0]

        def worker(t, t0):
            rng = random.Random(5000 + t)
            mine = [cids[t], cids[t + n_threads]]
            budget = {cid: dict(opening_pos) for cid in mine}
            next_at = {cid: t0 for cid in mine}
            i = 0
            while time.monotonic() - t0 < burst_s:
                cid = mine[i % 2]
                i += 1
                delay = next_at[cid] - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at[cid] = max(next_at[cid] + cadence_s, time.monotonic())
                qty = rng.randint(1, 5)
                sellable = [s for s, q in budget[cid].items() if q >= qty]
                if sellable and rng.random() < 0.5:
                    side, sym = "SELL", rng.choice(sellable)
                    budget[cid][sym] -= qty
                else:
                    side, sym = "BUY", rng.choice(SYMBOLS)
                req = {"symbol": sym, "side": side, "quantity": qty}
                was_killed = killed.is_set()
                try:
                    st, body = b.request("POST", "/v1/trades", req, token=b.token(cid),
                                         timeout=5.0)
                except harness.HttpError as exc:
                    # Expected once brokerd is killed: not acknowledged, not a failure.
                    with lock:
                        unacked[0] += 1
                        if not killed.is_set():
                            failures.append("request failed before the kill: %s" % exc)
                    return
                with lock:
                    if st == 201:
                        acked[body["trade_id"]] = (cid, req, body)
                    elif not was_killed:
                        failures.append("POST %r as %s -> %s %r" % (req, cid, st, body))

        acked_before_kill = []
        t0 = time.monotonic()

        def killer():
            time.sleep(max(0.0, t0 + kill_at_s - time.monotonic()))
            with lock:
                acked_before_kill.append(len(acked))
            killed.set()
            b.kill9()

        errors = run_threads([functools.partial(worker, t, t0) for t in range(n_threads)]
                             + [killer], timeout=30)
        self.assertEqual(errors, [])
        self.assertEqual(failures, [])
        self.assertFalse(b.alive(), "brokerd survived kill -9?")
        self.assertTrue(acked_before_kill and acked_before_kill[0] > 0,
                        "no trade was acknowledged before the kill")
        sys.stderr.write("[kill-9] %d trades acknowledged, %d requests cut off\n"
                         % (len(acked), unacked[0]))

        # Restart on the same data dir (the same port if it is free again).
        b.start(port=b.port)

        # Every acknowledged trade is there, owned by its customer, as it was placed.
        # account() and positions() assert non-negative balances, even with trades in flight.
        for cid in cids:
            self.account(b, cid)
            self.positions(b, cid)
        owned_by = {}
        ack_items = sorted(acked.items())
        open_after_restart = [0]

        def verify_acked(part):
            for tid, (cid, req, body) in ack_items[part::n_threads]:
                st, t = b.request("GET", "/v1/trades/" + tid, token=b.token(cid))
                with lock:
                    if st != 200:
                        failures.append("acknowledged trade %s of %s lost: %s %r"
                                        % (tid, cid, st, t))
                        continue
                    if (t.get("customer_id"), t.get("symbol"), t.get("side"),
                            t.get("quantity")) != (cid, req["symbol"], req["side"],
                                                   req["quantity"]):
                        failures.append("trade %s changed: acked %r, now %r" % (tid, body, t))
                    if t.get("status") not in TERMINAL:
                        open_after_restart[0] += 1
                    if body["status"] == "REJECTED" and (t.get("status"), t.get("reason")) != (
                            "REJECTED", body["reason"]):
                        failures.append("rejected trade %s changed: %r -> %r" % (tid, body, t))

        errors = run_threads([functools.partial(verify_acked, p) for p in range(n_threads)],
                             timeout=60)
        self.assertEqual(errors, [])
        self.assertEqual(failures, [])
        for tid, (cid, req, body) in ack_items:
            owned_by[tid] = cid
        sys.stderr.write("[kill-9] %d acknowledged trades still open after the restart\n"
                         % open_after_restart[0])

        # Trades journaled whose 201 was lost in the crash: trade ids come from one counter, so
        # a fresh trade's id bounds every id in the journal; each id below it that we were not
        # told about is probed with every customer's token (another's trade is a 404).
        probe = "crash-probe"
        self.open_customer(b, probe, "0.0000")
        st, pt = self.place(b, probe, "AAPL", "BUY", 1)
        self.assertEqual(st, 201, (st, pt))
        self.check_trade(pt, probe, "AAPL", "BUY", 1)
        self.assertEqual((pt["status"], pt["reason"]), ("REJECTED", "insufficient_funds"), pt)
        bound = int(pt["trade_id"], 16)
        self.assertNotIn(pt["trade_id"], acked, "restart reused an acknowledged trade id")
        max_acked = max(int(tid, 16) for tid in acked)
        self.assertGreater(bound, max_acked, "trade ids went backwards after the restart")
        self.assertLess(bound - len(acked), 5000,
                        "trade ids are not a dense per-node counter (next id %s)" % pt["trade_id"])
        unknown = ["%016x" % n for n in range(1, bound) if "%016x" % n not in acked]
        gaps = []
        for tid in unknown:
            for cid in cids:
                st, t = b.request("GET", "/v1/trades/" + tid, token=b.token(cid))
                if st == 200:
                    self.check_trade(t, cid)
                    owned_by[tid] = cid
                    break
                self.assertEqual(st, 404, "GET /v1/trades/%s as %s -> %s %r" % (tid, cid, st, t))
            else:
                gaps.append(tid)
        sys.stderr.write("[kill-9] trade ids 1..%d: %d acknowledged, %d journaled without a "
                         "201, %d unused\n" % (bound - 1, len(acked), len(unknown) - len(gaps),
                                                len(gaps)))

        # Everything in flight at the crash finishes after the restart.
        final = harness.wait_terminal(b, [(cid, tid) for tid, cid in owned_by.items()],
                                      timeout=30)
        by_cust = {cid: [] for cid in cids}
        for tid, cid in owned_by.items():
            t = final[tid]
            self.check_trade(t, cid)
            if tid in acked:
                _, req, _ = acked[tid]
                self.check_trade(t, cid, req["symbol"], req["side"], req["quantity"])
            by_cust[cid].append(t)
        for cid in cids:
            self.assert_settled(b, cid, opening_cash, opening_pos, by_cust[cid])

        digest = b.stable_digest()
        self.assertEqual(b.stop(), 0, "brokerd exit code after SIGTERM")
        self.assert_replay_matches(b, digest, customers=n_customers + 1)


if __name__ == "__main__":
    harness.strip_bin_dir_arg(sys.argv)
    unittest.main(argv=sys.argv)
