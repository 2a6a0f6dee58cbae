#!/usr/bin/python3
"""Process-level tests of exchange-sim, the simulated networked exchange.

Run:  python3 tests/integration/test_exchange_sim.py --bin-dir build [-v] [TestCase.test_name]
      (or set BROKER_BIN_DIR; BROKER_KEEP_TMP=1 keeps the work dirs.)

The real binary on a loopback port, driven over HTTP by the standard library, with a small
callback receiver that checks every X-Exchange-Signature with the hmac module. The tests speak only
the contract: the exchange protocol of DESIGN.md and the exchange-sim command line.
"""

import functools
import hashlib
import hmac
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HOST, money_ticks, parse_timestamp_ms  # noqa: E402

SECRET = "exchange-sim-test-secret-5a8e0c3d71f4"
ORDER_FIELDS = ("order_id", "status", "quantity", "fill_price", "reason", "exec_id", "executed_at")
CALLBACK_FIELDS = ("order_id", "exec_id", "status", "quantity", "fill_price", "reason",
                   "executed_at")
LISTENING = re.compile(r"exchange-sim listening on 127\.0\.0\.1:(\d+)")


def sim_binary():
    return os.path.join(harness.bin_dir(), "exchange", "exchange-sim")


def setUpModule():
    if not os.access(sim_binary(), os.X_OK):
        raise RuntimeError("missing binary %s (pass --bin-dir BUILD_DIR)" % sim_binary())


# --- the callback receiver -------------------------------------------------------------------------

def signature_ok(secret, header, body, now, tolerance=300):
    """Verifies 't=<secs>,v1=<hex>' as DESIGN.md defines it: HMAC-SHA256(secret, t + "." + body)."""
    m = re.fullmatch(r"t=([1-9][0-9]{0,11}),v1=([0-9a-f]{64})((?:,[^,=\s]+=[^,\s]*)*)", header or "")
    if not m:
        return False
    t = m.group(1)
    expected = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, m.group(2)) and abs(now - int(t)) <= tolerance


class Receiver:
    """A callback endpoint on 127.0.0.1 (HTTP/1.1, keep-alive). Every POST is recorded with whether
    its signature verified. By default the first attempt of each order's callback gets a 500 and
    later ones a 200; `down` answers 500 to everything, `always_ok` 200 to everything."""

    def __init__(self, secret=SECRET, fail_first=True):
        self.secret = secret
        self.fail_first = fail_first
        self.down = False
        self.lock = threading.Lock()
        self.deliveries = {}  # order_id -> [(answered status, body text, monotonic time)]
        self.bad_signatures = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status = receiver._record(self.path, self.headers.get("X-Exchange-Signature"), body)
                payload = b'{"ok":true}' if status == 200 else b'{"code":"try_again"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://%s:%d/v1/exchange/callbacks" % (HOST, self.port)

    def _record(self, path, header, body):
        now = time.time()
        with self.lock:
            if path != "/v1/exchange/callbacks" or not signature_ok(self.secret, header, body, now):
                self.bad_signatures.append((path, header, body))
                return 401
            order_id = json.loads(body)["order_id"]
            seen = self.deliveries.setdefault(order_id, [])
            if self.down or (self.fail_first and not seen):
                status = 500
            else:
                status = 200
            seen.append((status, body.decode(), time.monotonic()))
            return status

    def snapshot(self):
        with self.lock:
            return {k: list(v) for k, v in self.deliveries.items()}

    def acked(self):
        with self.lock:
            return {k for k, v in self.deliveries.items() if any(s == 200 for s, _, _ in v)}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --- exchange-sim processes ------------------------------------------------------------------------

class Sim:
    """One exchange-sim on a data dir; logs to files in the work dir."""

    def __init__(self, workdir, name="sim", args=()):
        self.data_dir = os.path.join(workdir, name + "-data")
        self.stderr_path = os.path.join(workdir, name + ".stderr.log")
        self.args = list(args)
        self.proc = None
        self.port = None
        self.generation = 0

    def start(self, port=0, expect_healthy=True, timeout=15.0):
        """Starts exchange-sim and waits for its 'listening' line; returns the port."""
        self.generation += 1
        cmd = [sim_binary(), "--listen", "%s:%d" % (HOST, port), "--secret", SECRET,
               "--data-dir", self.data_dir] + self.args
        with open(self.stderr_path, "ab") as err:
            err.write(("\n=== [test] start #%d: %s ===\n" % (self.generation, " ".join(cmd))).encode())
            # Out of Python's buffer before the child writes: otherwise a quick "listening" line
            # lands before the banner, below `offset`, and is never found.
            err.flush()
            offset = err.tell()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.stderr_path, "rb") as f:
                f.seek(offset)
                m = LISTENING.search(f.read().decode(errors="replace"))
            if m:
                self.port = int(m.group(1))
                if expect_healthy:
                    status, _ = self.request("GET", "/healthz")
                    if status != 200:
                        raise AssertionError("GET /healthz -> %s" % status)
                return self.port
            if self.proc.poll() is not None:
                raise AssertionError("exchange-sim exited with %s\n%s"
                                     % (self.proc.returncode, self.log_tail()))
            time.sleep(0.02)
        self.kill9()
        raise AssertionError("exchange-sim did not listen within %.0f s\n%s"
                             % (timeout, self.log_tail()))

    def request(self, method, path, body=None, **kw):
        return harness.http_request(self.port, method, path, body=body,
                                    generation=("sim", self.generation), **kw)

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        harness.close_thread_connections()

    def stop(self):
        """SIGTERM; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise AssertionError("exchange-sim ignored SIGTERM\n" + self.log_tail())
        harness.close_thread_connections()
        return self.proc.returncode

    def log_tail(self, lines=40):
        try:
            with open(self.stderr_path, "rb") as f:
                data = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "----- exchange-sim stderr -----\n" + "\n".join(data[-lines:])


def run_sim(args, timeout=10):
    p = subprocess.run([sim_binary()] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, text=True)
    return p.returncode, p.stdout, p.stderr


def wait_for(predicate, timeout, what, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def keep_on_failure(fn):
    @functools.wraps(fn)
    def wrapper(self, *a, **kw):
        try:
            return fn(self, *a, **kw)
        except BaseException:
            self.failed = True
            for s in self.sims:
                sys.stderr.write("\n" + s.log_tail() + "\n")
            sys.stderr.write("[test] work dir kept: %s\n" % self.workdir.path)
            raise
    return wrapper


class ExchangeSimTest(unittest.TestCase):
    def setUp(self):
        self.workdir = harness.WorkDir(prefix="exchange-sim-it-")
        self.sims = []
        self.receivers = []
        self.failed = False

    def tearDown(self):
        for s in self.sims:
            s.kill9()
        for r in self.receivers:
            r.close()
        self.workdir.cleanup(keep=self.failed)

    def sim(self, args=()):
        s = Sim(self.workdir.path, name="sim%d" % len(self.sims), args=args)
        self.sims.append(s)
        return s

    def receiver(self, **kw):
        r = Receiver(**kw)
        self.receivers.append(r)
        return r

    def order(self, i, receiver, side="BUY", symbol="AAPL", quantity=None, limit=None):
        body = {"order_id": "%016x" % (0x5e000000 + i), "symbol": symbol, "side": side,
                "quantity": quantity or (i % 7) + 1, "callback_url": receiver.url}
        if limit is not None:
            body["limit_price"] = limit
        return body

    def check_order_json(self, body, order):
        self.assertIsInstance(body, dict)
        self.assertEqual(set(body), set(ORDER_FIELDS), body)
        self.assertEqual(body["order_id"], order["order_id"])
        self.assertEqual(body["quantity"], order["quantity"])
        self.assertIn(body["status"], ("ACCEPTED", "FILLED", "REJECTED"))
        if body["status"] == "ACCEPTED":
            for k in ("fill_price", "reason", "exec_id", "executed_at"):
                self.assertIsNone(body[k], body)
        else:
            self.assertIsInstance(body["exec_id"], str)
            parse_timestamp_ms(body["executed_at"])
            if body["status"] == "FILLED":
                self.assertGreater(money_ticks(body["fill_price"]), 0)
                self.assertIsNone(body["reason"])
            else:
                self.assertIsNone(body["fill_price"])
                self.assertRegex(body["reason"], r"^[a-z][a-z0-9_]*$")

    # --- the main scenario: signed callbacks, retries, kill -9 and recovery ------------------------

    @keep_on_failure
    def test_orders_survive_kill9_and_every_callback_is_delivered_once_executed_once(self):
        rx = self.receiver()
        # Executions spread over [0, 5 s], so that a kill a moment after the posts finds some
        # orders executed and some not, even where each POST's fsync is slow.
        sim = self.sim(["--latency-ms", "2500", "--latency-dist", "uniform", "--seed", "7",
                        "--quote-interval-ms", "20"])
        sim.start()

        orders = []
        for i in range(50):
            if i % 10 == 3:
                orders.append(self.order(i, rx, limit="1.0000"))  # far below any quote
            elif i % 10 == 6:
                orders.append(self.order(i, rx, symbol="ZZZZ"))   # well-formed but not listed
            elif i % 10 == 8:
                orders.append(self.order(i, rx, side="SELL", symbol="MSFT"))
            else:
                orders.append(self.order(i, rx, limit="100000.0000"))  # a collared market buy
        by_id = {o["order_id"]: o for o in orders}
        for o in orders:
            status, body = sim.request("POST", "/v1/orders", o)
            self.assertEqual(status, 202, body)
            self.check_order_json(body, o)
        # One re-post: the same answer, never a second order.
        status, again = sim.request("POST", "/v1/orders", orders[0])
        self.assertEqual(status, 202, again)
        self.check_order_json(again, orders[0])
        # The same id for another order is refused.
        status, body = sim.request("POST", "/v1/orders", dict(orders[0], quantity=999))
        self.assertEqual(status, 422, body)
        self.assertEqual(body["code"], "order_id_conflict")

        # Some callbacks are acknowledged (each after a first 500), then the receiver goes down so
        # that callbacks are certainly still owed when the exchange is killed.
        wait_for(lambda: len(rx.acked()) >= 3, 10, "three acknowledged callbacks")
        rx.down = True
        wait_for(lambda: any(k not in rx.acked() for k in rx.snapshot()), 10,
                 "a callback owed while the receiver is down")
        before = {}
        for o in orders:
            status, body = sim.request("GET", "/v1/orders/" + o["order_id"])
            self.assertEqual(status, 200, body)
            self.check_order_json(body, o)
            before[o["order_id"]] = body
        sim.kill9()
        acked_before_kill = rx.acked()
        owed_at_kill = set(rx.snapshot()) - acked_before_kill
        unexecuted_at_kill = {k for k, b in before.items() if b["status"] == "ACCEPTED"}
        self.assertTrue(owed_at_kill, "no callback was owed at the kill")
        self.assertTrue(unexecuted_at_kill, "every order had executed before the kill")

        # Restart on the same port and data dir.
        rx.down = False
        sim.start(port=sim.port)
        for o in orders:
            status, body = sim.request("GET", "/v1/orders/" + o["order_id"])
            self.assertEqual(status, 200, "order %s forgotten: %r" % (o["order_id"], body))
            self.check_order_json(body, o)
        wait_for(lambda: len(rx.acked()) == len(orders), 30, "a callback for every order")

        deliveries = rx.snapshot()
        self.assertEqual(rx.bad_signatures, [])
        self.assertEqual(set(deliveries), set(by_id))
        for order_id, got in deliveries.items():
            # Retried: the first attempt of every callback was answered 500.
            self.assertEqual(got[0][0], 500, order_id)
            self.assertGreaterEqual(len(got), 2, order_id)
            # Executed once: every delivery, before and after the restart, is the same report.
            bodies = {b for _, b, _ in got}
            self.assertEqual(len(bodies), 1, "order %s reported differently: %s" % (order_id, bodies))
            report = json.loads(bodies.pop())
            self.assertEqual(set(report), set(CALLBACK_FIELDS), report)
            self.assertEqual(report["quantity"], by_id[order_id]["quantity"])
            # The status query agrees with the callback.
            status, state = sim.request("GET", "/v1/orders/" + order_id)
            self.assertEqual(status, 200)
            for k in ("status", "quantity", "fill_price", "reason", "exec_id", "executed_at"):
                self.assertEqual(state[k], report[k], (order_id, k))
            # What was executed before the kill is what it is now.
            if before[order_id]["status"] != "ACCEPTED":
                self.assertEqual(before[order_id], state, order_id)

        # The venue's rules.
        for o in orders:
            state = sim.request("GET", "/v1/orders/" + o["order_id"])[1]
            if o["symbol"] == "ZZZZ":
                self.assertEqual((state["status"], state["reason"]), ("REJECTED", "unknown_symbol"))
            elif o.get("limit_price") == "1.0000":
                self.assertEqual((state["status"], state["reason"]),
                                 ("REJECTED", "limit_not_marketable"))
            else:
                self.assertEqual(state["status"], "FILLED", state)

        # Re-posting after the restart still answers the recorded state.
        status, body = sim.request("POST", "/v1/orders", orders[0])
        self.assertEqual(status, 202)
        self.assertEqual(body, sim.request("GET", "/v1/orders/" + orders[0]["order_id"])[1])
        self.assertEqual(sim.stop(), 0)

    # --- fault knobs -------------------------------------------------------------------------------

    @keep_on_failure
    def test_fault_knobs_reject_with_the_given_reasons_and_deliver_duplicates(self):
        rx = self.receiver(fail_first=False)
        sim = self.sim(["--latency-ms", "5", "--reject-rate", "1", "--reject-reasons",
                        "halted,price_band", "--duplicate-rate", "1", "--drop-rate", "0.3",
                        "--delay-rate", "0.3", "--delay-ms", "200", "--reorder-rate", "0.3",
                        "--seed", "11"])
        sim.start()
        orders = [self.order(i, rx, limit="100000.0000") for i in range(20)]
        for o in orders:
            status, body = sim.request("POST", "/v1/orders", o)
            self.assertEqual(status, 202, body)
        # Every callback arrives at least twice (the duplicate knob), always the same report.
        wait_for(lambda: all(len(v) >= 2 for v in rx.snapshot().values())
                 and len(rx.snapshot()) == len(orders), 20, "duplicated callbacks")
        self.assertEqual(rx.bad_signatures, [])
        reasons = set()
        for order_id, got in rx.snapshot().items():
            self.assertEqual(len({b for _, b, _ in got}), 1, order_id)
            report = json.loads(got[0][1])
            self.assertEqual(report["status"], "REJECTED")
            self.assertIsNone(report["fill_price"])
            reasons.add(report["reason"])
        self.assertLessEqual(reasons, {"halted", "price_band"})
        self.assertEqual(sim.stop(), 0)

    @keep_on_failure
    def test_an_outage_in_503_mode_answers_every_request_with_unavailable(self):
        rx = self.receiver()
        sim = self.sim(["--outage", "0:1.5"])
        sim.start(expect_healthy=False)
        status, body = sim.request("GET", "/healthz")
        self.assertEqual(status, 503)
        self.assertEqual(body["code"], "unavailable")
        status, body = sim.request("POST", "/v1/orders", self.order(1, rx))
        self.assertEqual((status, body["code"]), (503, "unavailable"))
        wait_for(lambda: sim.request("GET", "/healthz")[0] == 200, 5, "the end of the outage")
        status, body = sim.request("POST", "/v1/orders", self.order(1, rx))
        self.assertEqual(status, 202, body)

    @keep_on_failure
    def test_an_outage_in_refuse_mode_closes_the_listener_and_reopens_it(self):
        sim = self.sim(["--outage", "1:1", "--outage-mode", "refuse"])
        # Taken before the launch: the outage clock starts later, when the service is built, so
        # refusals cannot begin before t0 + 1 s however slowly the process starts.
        t0 = time.monotonic()
        sim.start()

        def reachable():
            try:
                return harness.http_request(sim.port, "GET", "/healthz", generation=time.time(),
                                            timeout=1.0)[0] == 200
            except harness.HttpError:
                return False

        wait_for(lambda: not reachable(), 3, "connections to be refused")
        self.assertGreater(time.monotonic() - t0, 0.8)
        wait_for(reachable, 5, "the listener to reopen")
        self.assertEqual(sim.stop(), 0)

    # --- the command line and the order log --------------------------------------------------------

    def test_bad_arguments_exit_2_with_one_line(self):
        for args, reason in (
                (["--secret", SECRET, "--data-dir", "/tmp/x"], "--listen"),
                (["--listen", "nope", "--secret", SECRET, "--data-dir", "/tmp/x"], "--listen"),
                (["--listen", "127.0.0.1:0", "--secret", SECRET, "--data-dir", "/tmp/x",
                  "--reject-rate", "1.5"], "--reject-rate"),
                # NaN passes a plain range check, since every comparison with it is false.
                (["--listen", "127.0.0.1:0", "--secret", SECRET, "--data-dir", "/tmp/x",
                  "--reject-rate", "nan"], "--reject-rate"),
                (["--listen", "127.0.0.1:0", "--secret", SECRET, "--data-dir", "/tmp/x",
                  "--drop-rate", "nan"], "--drop-rate"),
                (["--listen", "127.0.0.1:0", "--secret", SECRET, "--data-dir", "/tmp/x",
                  "--seed", "-1"], "--seed"),
                (["--listen", "127.0.0.1:0", "--secret", SECRET, "--data-dir", "/tmp/x",
                  "--outage", "soon"], "--outage"),
                (["--listen", "127.0.0.1:0", "--secret", SECRET, "--data-dir", "/tmp/x",
                  "--outage-mode", "maybe"], "--outage-mode"),
                # A guessable callback secret lets anyone sign fills: 31 bytes are refused.
                (["--listen", "127.0.0.1:0", "--secret", "s" * 31, "--data-dir", "/tmp/x"],
                 "--secret is 31 bytes; HMAC-SHA256 callbacks need at least 32")):
            code, out, err = run_sim(args)
            self.assertEqual(code, 2, (args, err))
            self.assertEqual(len(err.strip().splitlines()), 1, (args, err))
            self.assertTrue(err.startswith("exchange-sim: "), err)
            self.assertIn(reason, err)
        code, out, err = run_sim(["--help"])
        self.assertEqual(code, 0)
        for flag in ("--listen", "--secret", "--data-dir", "--seed", "--latency-ms",
                     "--latency-dist", "--reject-rate", "--reject-reasons", "--duplicate-rate",
                     "--delay-rate", "--delay-ms", "--reorder-rate", "--drop-rate", "--outage",
                     "--outage-mode", "--quote-interval-ms"):
            self.assertIn(flag, out)

    @keep_on_failure
    def test_a_torn_tail_is_truncated_and_corruption_stops_the_start(self):
        rx = self.receiver(fail_first=False)
        sim = self.sim(["--latency-ms", "5"])
        sim.start()
        orders = [self.order(i, rx) for i in range(5)]
        for o in orders:
            self.assertEqual(sim.request("POST", "/v1/orders", o)[0], 202)
        wait_for(lambda: len(rx.acked()) == len(orders), 10, "callbacks")
        self.assertEqual(sim.stop(), 0)
        log_path = os.path.join(sim.data_dir, "orders.log")
        with open(log_path, "rb") as f:
            clean = f.read()

        # A torn append: the start of a frame header and a few body bytes.
        with open(log_path, "ab") as f:
            f.write(b"\x00\x00\x00\x30\x12\x34\x56\x78\x01\x01\x00")
        sim.start()
        for o in orders:
            status, body = sim.request("GET", "/v1/orders/" + o["order_id"])
            self.assertEqual(status, 200, body)
        self.assertEqual(sim.stop(), 0)
        with open(log_path, "rb") as f:
            self.assertEqual(f.read()[:len(clean)], clean)

        # A flipped byte in the middle of the log: refused with a reason, exit 1.
        damaged = bytearray(clean)
        damaged[len(damaged) // 2] ^= 0x55
        with open(log_path, "wb") as f:
            f.write(damaged)
        code, _, err = run_sim(["--listen", "127.0.0.1:0", "--secret", SECRET,
                                "--data-dir", sim.data_dir])
        self.assertEqual(code, 1, err)
        self.assertIn("order log", err)


class SignatureCheckerTest(unittest.TestCase):
    """The receiver's checker must be able to fail, or the tests above prove nothing."""

    def test_the_checker_refuses_tampered_bodies_and_other_secrets(self):
        body = b'{"order_id":"0000000000000001"}'
        t = str(int(time.time()))
        mac = hmac.new(SECRET.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
        header = "t=%s,v1=%s" % (t, mac)
        self.assertTrue(signature_ok(SECRET, header, body, time.time()))
        self.assertFalse(signature_ok(SECRET, header, body + b" ", time.time()))
        self.assertFalse(signature_ok("other", header, body, time.time()))
        self.assertFalse(signature_ok(SECRET, header, body, time.time() + 3600))
        self.assertFalse(signature_ok(SECRET, None, body, time.time()))


if __name__ == "__main__":
    unittest.main(argv=harness.strip_bin_dir_arg(sys.argv))
