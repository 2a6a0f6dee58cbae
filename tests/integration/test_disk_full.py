#!/usr/bin/python3
"""brokerd on a disk that fills up: the free-disk watermark, and the fatal path below it.

Run:  python3 tests/integration/test_disk_full.py --bin-dir build [-v]
      (as root: each test mounts its own 64 MiB tmpfs and always unmounts it; without the right
      to mount, the tests are skipped with a message. BROKER_KEEP_TMP=1 keeps the work dirs.)

  * With --min-free-disk-mb 16, a filler file that leaves less than 16 MiB free makes new
    placements answer 503 {"code":"storage_full"} and brokerd log "disk nearly full"; trades in
    flight are not lost; once the filler is removed, placements succeed again within seconds and
    brokerd logs "disk space is back"; every acknowledged trade is there, settled exactly, and
    broker-replay reproduces the live digest after a SIGTERM.
  * With --min-free-disk-mb 0 and a completely full disk, a journal write fails: brokerd must stop
    (exit non-zero, log "journal write failed") rather than acknowledge anything it could not
    make durable; once space is back, a restart recovers every acknowledged trade and
    broker-replay verifies the journal.

brokerd's logs go to the work dir on the ordinary disk, never to the tmpfs, so that they can be
read while the tmpfs is full. Everything listens and connects on 127.0.0.1 only; every loop is
bounded in count and time.
"""

import errno
import os
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import sanitizer_reports  # noqa: E402
from harness import TERMINAL  # noqa: E402
from test_core import BrokerTestCase, dump_logs_on_failure  # noqa: E402

MIB = 1 << 20
TMPFS_SIZE_MB = 64
WATERMARK_MB = 16
FIXED_FIELDS = ("trade_id", "customer_id", "client_order_id", "symbol", "side", "quantity",
                "created_at")
BANNER = "=== [test harness]"
PROBE = "disk-probe"  # no cash: its BUY is REJECTED at once; its trade id bounds all ids


def setUpModule():
    harness.check_binaries()


def free_bytes(path):
    s = os.statvfs(path)
    return s.f_bavail * s.f_frsize


def fill(path, leave_bytes, fs_dir):
    """Appends zeros to `path` until at most `leave_bytes` are free on fs_dir's filesystem (0:
    until the filesystem refuses to take more). Returns the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(4 * TMPFS_SIZE_MB + 64):  # bounded: 1 MiB or less a step
            want = free_bytes(fs_dir) - leave_bytes
            if want <= 0 and leave_bytes > 0:
                break
            chunk = min(MIB, want) if want > 0 else MIB
            try:
                n = os.write(fd, b"\0" * chunk)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    break
                raise
            written += n
            if n == 0:
                break
        os.fsync(fd)
    finally:
        os.close(fd)
    return written


class DiskFullTest(BrokerTestCase):

    def setUp(self):
        super().setUp()
        self.mnt = None
        why = self._mount_tmpfs()
        if why:
            self.workdir.cleanup()
            self.skipTest(why)

    def _mount_tmpfs(self):
        """Mounts a small tmpfs under the work dir; returns why not when mounting is not
        permitted (not root, or root without the right to mount, as in some containers)."""
        mount = shutil.which("mount") or "/bin/mount"
        if os.geteuid() != 0:
            return ("disk-full tests need root to mount a %d MiB tmpfs (euid %d); run them as "
                    "root, as CI does" % (TMPFS_SIZE_MB, os.geteuid()))
        if not os.access(mount, os.X_OK):
            return "disk-full tests need the mount command (not found)"
        mnt = os.path.join(self.workdir.path, "tmpfs")
        os.makedirs(mnt)
        p = subprocess.run([mount, "-t", "tmpfs", "-o", "size=%dm,mode=0700" % TMPFS_SIZE_MB,
                            "tmpfs", mnt], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30)
        if p.returncode != 0:
            msg = (p.stderr or p.stdout).strip()
            if any(s in msg.lower() for s in ("permission denied", "not permitted",
                                              "must be superuser", "only root")):
                return ("mounting a tmpfs is not permitted here (%s); run as root with the "
                        "right to mount, as CI does" % msg.splitlines()[0])
            self.workdir.cleanup()
            raise AssertionError("mount -t tmpfs %s failed (%d): %s" % (mnt, p.returncode, msg))
        self.mnt = mnt
        return None

    def tearDown(self):
        for b in self.brokers:
            b.kill9()
        harness.close_thread_connections()
        if self.mnt is not None:
            if self._failed:
                # The journal vanishes with the tmpfs: keep a copy (without the filler).
                shutil.copytree(self.mnt, os.path.join(self.workdir.path, "tmpfs-copy"),
                                ignore=shutil.ignore_patterns("filler*"), dirs_exist_ok=True)
            self._unmount()
        self.workdir.cleanup(keep=self._failed)

    def _unmount(self):
        umount = shutil.which("umount") or "/bin/umount"
        last = ""
        for _ in range(20):
            p = subprocess.run([umount, self.mnt], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=30)
            if p.returncode == 0:
                self.mnt = None
                return
            last = p.stderr.strip()
            time.sleep(0.25)
        # Still busy after 5 s: detach it lazily so that nothing stays mounted.
        subprocess.run([umount, "-l", self.mnt], stdin=subprocess.DEVNULL, timeout=30)
        sys.stderr.write("[disk-full] umount %s was busy (%s); detached lazily\n"
                         % (self.mnt, last))
        self.mnt = None

    # --- helpers ------------------------------------------------------------------------------

    def start_on_tmpfs(self, args):
        """A brokerd whose data dir is on the tmpfs and whose logs are in the work dir."""
        b = harness.Broker(self.workdir.path, name="node", args=args)
        b.data_dir = os.path.join(self.mnt, "data")
        os.makedirs(b.data_dir, exist_ok=True)
        self.brokers.append(b)
        b.start()
        return b

    def log_since_start(self, b):
        with open(b.stderr_path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        return text[text.rfind(BANNER):]

    def wait_log(self, b, needle, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if needle in self.log_since_start(b):
                return
            if time.monotonic() > deadline:
                self.fail("brokerd did not log %r within %.0f s" % (needle, timeout))
            time.sleep(0.05)

    def place_ok(self, b, acked, cid, req, expect=201):
        st, body = b.request("POST", "/v1/trades", req, token=b.token(cid))
        self.assertEqual(st, expect, "POST %r as %s -> %s %r" % (req, cid, st, body))
        self.check_trade(body, cid, req["symbol"], req["side"], req["quantity"])
        acked[body["trade_id"]] = (cid, req, body)
        return body

    def request_for(self, i, cid):
        req = {"symbol": ("AAPL", "MSFT", "KO")[i % 3], "side": ("BUY", "SELL")[i % 2],
               "quantity": 1 + i % 4}
        if i % 3 == 0:
            req["client_order_id"] = "%s-%d" % (cid, i)
        return req

    def verify_and_settle(self, b, acked, cids, opening_cash, opening_pos):
        """Every acknowledged trade is there as acknowledged; every trade id the node handed out
        is enumerated (a probe trade bounds the dense ids; ids nobody was told about are probed
        with every customer); once all are terminal, money and shares moved by exactly the
        FILLED ones. Returns (the number of trades journaled without an answer, {trade_id:
        terminal trade})."""
        for tid, (cid, req, body) in sorted(acked.items()):
            st, t = b.request("GET", "/v1/trades/" + tid, token=b.token(cid))
            self.assertEqual(st, 200, "acknowledged trade %s of %s lost: %s %r" % (tid, cid, st, t))
            self.assertEqual([t.get(f) for f in FIXED_FIELDS], [body.get(f) for f in FIXED_FIELDS],
                             "trade %s changed" % tid)
            if body["status"] in TERMINAL:
                self.assertEqual((t["status"], t["reason"]), (body["status"], body["reason"]), t)
        st, pt = self.place(b, PROBE, "AAPL", "BUY", 1)
        self.assertEqual(st, 201, (st, pt))
        self.assertEqual((pt["status"], pt["reason"]), ("REJECTED", "insufficient_funds"), pt)
        self.assertNotIn(pt["trade_id"], acked, "the node reused an acknowledged trade id")
        owner = {pt["trade_id"]: PROBE}
        unanswered = 0
        for n in range(1, int(pt["trade_id"], 16)):
            tid = "%016x" % n
            if tid in acked:
                owner[tid] = acked[tid][0]
                continue
            for cid in cids + [PROBE]:
                st, t = b.request("GET", "/v1/trades/" + tid, token=b.token(cid))
                if st == 200:
                    self.check_trade(t, cid)
                    owner[tid] = cid
                    unanswered += 1
                    break
                self.assertEqual(st, 404, "GET /v1/trades/%s as %s -> %s %r" % (tid, cid, st, t))
        final = harness.wait_terminal(b, [(cid, tid) for tid, cid in owner.items()], timeout=60)
        for cid in cids:
            self.assert_settled(b, cid, opening_cash, opening_pos,
                                [t for t in final.values() if t["customer_id"] == cid])
        return unanswered, final

    # --- tests --------------------------------------------------------------------------------

    @dump_logs_on_failure
    def test_watermark_refuses_new_work_and_recovers_when_space_returns(self):
        # 200 ms at the exchange, one trade of a customer at a time: trades placed just before
        # the disk fills are still in flight while it is full.
        b = self.start_on_tmpfs(["--min-free-disk-mb", str(WATERMARK_MB),
                                 "--sim-latency-ms", "200", "--sim-duplicate-rate", "0.3",
                                 "--sim-seed", "4242"])
        cids = ["disk-%d" % i for i in range(6)]
        opening_cash, opening_pos = "1000000.0000", {"AAPL": 500, "MSFT": 500, "KO": 500}
        for cid in cids:
            self.open_customer(b, cid, opening_cash, opening_pos)
        self.open_customer(b, PROBE, "0.0000")
        acked = {}
        i = 0
        for _ in range(4):
            for cid in cids:
                i += 1
                self.place_ok(b, acked, cid, self.request_for(i, cid))
        before_fill = set(acked)

        # Fill the tmpfs, leaving less than the watermark free.
        filler = os.path.join(self.mnt, "filler")
        before = free_bytes(self.mnt)
        self.assertGreater(before, (WATERMARK_MB + 8) * MIB, "the tmpfs is already nearly full")
        fill(filler, 8 * MIB, self.mnt)
        full_at_ms = int(time.time() * 1000)
        left = free_bytes(self.mnt)
        self.assertLess(left, WATERMARK_MB * MIB, "the filler left %d bytes free" % left)
        t_full = time.monotonic()

        # brokerd notices (it checks every 250 ms and before each commit) and refuses new work.
        # A placement that raced the check was accepted and acknowledged: it counts.
        raced = 0
        refused = None
        for _ in range(400):
            i += 1
            cid = cids[i % len(cids)]
            req = self.request_for(i, cid)
            st, body = b.request("POST", "/v1/trades", req, token=b.token(cid))
            if st == 201:
                self.check_trade(body, cid, req["symbol"], req["side"], req["quantity"])
                acked[body["trade_id"]] = (cid, req, body)
                raced += 1
            else:
                refused = (st, body)
                refused_after = time.monotonic() - t_full
                break
            if time.monotonic() - t_full > 10:
                break
            time.sleep(0.02)
        self.assertIsNotNone(refused, "placements still succeed 10 s after the disk filled")
        self.assertEqual(refused[0], 503, refused)
        self.assertIsInstance(refused[1], dict, refused)
        self.assertEqual(refused[1].get("code"), "storage_full", refused)
        self.assertIsInstance(refused[1].get("message"), str, refused)
        self.wait_log(b, "disk nearly full", 5)
        # While the disk stays full, every new placement is refused, also with a
        # client_order_id, and nothing of it is created (checked by the dense ids below).
        for k in range(5):
            cid = cids[k]
            req = self.request_for(3 * (1000 + k), cid)  # i % 3 == 0: with a client_order_id
            st, body = b.request("POST", "/v1/trades", req, token=b.token(cid))
            self.assertEqual((st, (body or {}).get("code")), (503, "storage_full"), body)
        # Reads go through the engine's queue too; note what they answer, for the record.
        tid0, (cid0, _, _) = sorted(acked.items())[0]
        read_st, read_body = b.request("GET", "/v1/trades/" + tid0, token=b.token(cid0))
        # Keep the disk full for a while: callbacks of trades in flight are refused meanwhile
        # and must be delivered later.
        time.sleep(1.5)
        self.assertTrue(b.alive(), "brokerd died while the disk was nearly full")

        # Space returns: within a few seconds placements succeed again.
        os.unlink(filler)
        t_back = time.monotonic()
        back = None
        for _ in range(400):
            i += 1
            cid = cids[i % len(cids)]
            req = self.request_for(i, cid)
            st, body = b.request("POST", "/v1/trades", req, token=b.token(cid))
            if st == 201:
                self.check_trade(body, cid, req["symbol"], req["side"], req["quantity"])
                acked[body["trade_id"]] = (cid, req, body)
                back = time.monotonic() - t_back
                break
            self.assertEqual((st, (body or {}).get("code")), (503, "storage_full"), body)
            if time.monotonic() - t_back > 10:
                break
            time.sleep(0.02)
        self.assertIsNotNone(back, "placements still refused 10 s after the space returned")
        self.wait_log(b, "disk space is back", 5)
        for k in range(len(cids)):
            i += 1
            self.place_ok(b, acked, cids[k], self.request_for(i, cids[k]))
        # A client_order_id placed before the disk filled still names its trade.
        coid_tid, (coid_cid, coid_req, _) = next(
            (tid, a) for tid, a in sorted(acked.items()) if a[1].get("client_order_id"))
        again = self.place_ok(b, acked, coid_cid, coid_req, expect=200)
        self.assertEqual(again["trade_id"], coid_tid, again)

        unanswered, final = self.verify_and_settle(b, acked, cids, opening_cash, opening_pos)
        self.assertEqual(unanswered, 0, "a refused (503) placement created a trade")
        # Trades acknowledged before the disk filled that finished only after it filled: they
        # were in flight while it was full, and were not lost.
        in_flight = [tid for tid in before_fill
                     if harness.parse_timestamp_ms(final[tid]["updated_at"]) >= full_at_ms]
        self.assertGreater(len(in_flight), 0, "no trade was in flight while the disk was full")
        digest = b.stable_digest()
        self.assertEqual(b.stop(), 0, "brokerd exit code after SIGTERM")
        self.assert_replay_matches(b, digest, customers=len(cids) + 1)
        self.assertEqual(sanitizer_reports(b.stderr_path), [], "sanitizer reports in brokerd's log")
        sys.stderr.write(
            "[disk-full] watermark: %d trades acknowledged (%d of them in flight when the disk "
            "filled, finished after it; %d accepted before brokerd noticed); full -> 503 "
            "storage_full after %.2f s; GET of a trade while full -> %s %s; back -> 201 after "
            "%.2f s; replay digest equal at "
            "sequence %d\n" % (len(acked), len(in_flight), raced, refused_after, read_st,
                               read_body.get("code", "") if isinstance(read_body, dict) else "",
                               back, digest["sequence"]))

    @dump_logs_on_failure
    def test_full_disk_below_watermark_zero_stops_instead_of_acknowledging(self):
        # RocksDB preallocates its write-ahead log (about 1.1 x the 16 MiB memtable) when the log
        # is first written; writes into preallocated space succeed even on a full filesystem. So
        # that the first write past the end of the disk fails, the disk is nearly full (1 MiB
        # left) before brokerd starts: the preallocation fails (RocksDB carries on without it).
        prefill = os.path.join(self.mnt, "filler-before-start")
        fill(prefill, 1 * MIB, self.mnt)
        b = self.start_on_tmpfs(["--min-free-disk-mb", "0", "--sim-latency-ms", "50",
                                 "--sim-seed", "99"])
        cids = ["fatal-%d" % i for i in range(3)]
        opening_cash, opening_pos = "1000000.0000", {"AAPL": 500, "MSFT": 500, "KO": 500}
        for cid in cids:
            self.open_customer(b, cid, opening_cash, opening_pos)
        self.open_customer(b, PROBE, "0.0000")
        acked = {}
        i = 0
        for _ in range(10):
            for cid in cids:
                i += 1
                self.place_ok(b, acked, cid, self.request_for(i, cid))
        before_full = len(acked)

        # Now completely full.
        fill(os.path.join(self.mnt, "filler"), 0, self.mnt)
        self.assertLess(free_bytes(self.mnt), 64 * 1024, "the tmpfs is not full")

        # Keep placing: whatever is acknowledged must be durable; the first journal write that
        # fails must stop brokerd.
        died = None
        t0 = time.monotonic()
        for _ in range(20_000):
            i += 1
            cid = cids[i % len(cids)]
            req = self.request_for(i, cid)
            try:
                st, body = b.request("POST", "/v1/trades", req, token=b.token(cid), timeout=15)
            except harness.HttpError as exc:
                died = str(exc)
                break
            self.assertEqual(st, 201, "POST %r as %s on a full disk -> %s %r" % (req, cid, st,
                                                                                  body))
            self.check_trade(body, cid, req["symbol"], req["side"], req["quantity"])
            acked[body["trade_id"]] = (cid, req, body)
            if time.monotonic() - t0 > 60:
                break
        self.assertIsNotNone(died, "brokerd kept acknowledging on a full disk (%d trades in %.0f "
                             "s)" % (len(acked) - before_full, time.monotonic() - t0))
        try:
            code = b.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.fail("brokerd stopped answering on a full disk but did not exit")
        self.assertNotEqual(code, 0, "brokerd exited 0 after a failed journal write")
        crash_log = self.log_since_start(b)
        # Either brokerd's own line, or Debian's RocksDB (built with assertions) aborting inside
        # the failed WAL write before brokerd sees the error: both stop the process before
        # anything unwritten is acknowledged, which is what matters, and both name the cause.
        logged = ("journal write failed" in crash_log or
                  "AssertFalseAndGetStatusForPrevError" in crash_log)

        # Space returns: a restart recovers everything acknowledged; replay is clean.
        for name in ("filler", "filler-before-start"):
            os.unlink(os.path.join(self.mnt, name))
        b.start()
        unanswered, _ = self.verify_and_settle(b, acked, cids, opening_cash, opening_pos)
        digest = b.stable_digest()
        self.assertEqual(b.stop(), 0, "brokerd exit code after SIGTERM")
        self.assert_replay_matches(b, digest, customers=len(cids) + 1)
        self.assertEqual(sanitizer_reports(b.stderr_path), [], "sanitizer reports in brokerd's log")
        sys.stderr.write(
            "[disk-full] fatal: %d trades acknowledged (%d after the disk was full), then brokerd "
            "exited %d; %d journaled without an answer; after the restart all present, replay "
            "digest equal at sequence %d; 'journal write failed' logged: %s\n"
            % (len(acked), len(acked) - before_full, code, unanswered, digest["sequence"],
               logged))
        self.assertTrue(logged, "brokerd exited %d on a full disk without saying why (neither "
                        "'journal write failed' nor RocksDB's WAL assertion); its log after the "
                        "start:\n%s" % (code, crash_log[-3000:]))


if __name__ == "__main__":
    harness.strip_bin_dir_arg(sys.argv)
    unittest.main(argv=sys.argv)
