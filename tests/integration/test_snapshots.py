#!/usr/bin/python3
"""Process-level test of engine-state snapshots: brokerd recovers from a snapshot after kill -9
and after a clean stop, to the state broker-replay rebuilds from record 1.

Run:  python3 tests/integration/test_snapshots.py --bin-dir build [-v]

  1. brokerd with --snapshot-every-events 200; customers place trades until several snapshots
     were stored; once every trade is terminal the digest is read and brokerd is killed with -9;
  2. broker-replay --check-snapshots: the journal verifies from record 1 and every stored
     snapshot equals the state replayed to its sequence;
  3. restart: the log says it recovered from a snapshot, and the live digest equals
     broker-replay's;
  4. SIGTERM stores a snapshot at the tip: the next start applies 0 events after it, with the
     same digest; a corrupted newest snapshot makes brokerd fall back to the older one.
"""

import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from test_core import BrokerTestCase, dump_logs_on_failure  # noqa: E402

EVERY = 200
ARGS = ["--snapshot-every-events", str(EVERY), "--sim-latency-ms", "1", "--sim-reject-rate", "0.1"]
FROM_SNAPSHOT = re.compile(r"recovery: from the snapshot at sequence (\d+), then (\d+) events")
STORED = re.compile(r"snapshot at sequence (\d+) stored")


def log_text(broker):
    with open(broker.stderr_path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def last_start(broker):
    """The log of the most recent start only."""
    return log_text(broker).split("=== [test harness]")[-1]


def check_snapshots(data_dir):
    cmd = [harness.binary("broker-replay"), "--data-dir", data_dir, "--check-snapshots"]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


class SnapshotTest(BrokerTestCase):

    def place_and_settle(self, b, cids, rounds):
        owned = []
        for r in range(rounds):
            for cid in cids:
                st, t = self.place(b, cid, "AAPL" if r % 2 == 0 else "MSFT",
                                   "BUY" if r % 3 else "SELL", 1 + r % 4)
                self.assertIn(st, (201,), t)
                owned.append((cid, t["trade_id"]))
        harness.wait_terminal(b, owned, timeout=60)

    def assert_replay_digest(self, b, digest):
        code, out, err = check_snapshots(b.data_dir)
        self.assertEqual(code, 0, "broker-replay --check-snapshots failed:\n" + err)
        self.assertIn("matches the replayed state", err)
        self.assertNotIn("differs", err)
        self.assertIn('"digest":"%s"' % digest["digest"], out)
        self.assertIn('"sequence":%d' % digest["sequence"], out)

    @dump_logs_on_failure
    def test_recovery_from_snapshots_after_kill_and_clean_stop(self):
        b = self.start_broker(args=ARGS)
        cids = ["snap-%d" % i for i in range(8)]
        for cid in cids:
            self.open_customer(b, cid, "1000000.0000", {"AAPL": 1000, "MSFT": 1000})
        self.place_and_settle(b, cids, 40)
        digest = b.stable_digest()
        stored = [int(s) for s in STORED.findall(log_text(b))]
        self.assertGreaterEqual(len(stored), 3, "snapshots stored: %r" % stored)
        # A snapshot starts after the batch that crosses EVERY events, so it can land on the
        # very last event. Recovery must then apply events after it: one more trade (a handful
        # of events, far fewer than EVERY) moves the tip past the newest snapshot.
        if digest["sequence"] == stored[-1]:
            self.place_and_settle(b, cids[:1], 1)
            digest = b.stable_digest()
            stored = [int(s) for s in STORED.findall(log_text(b))]
        self.assertGreater(digest["sequence"], stored[-1])

        b.kill9()
        self.assert_replay_digest(b, digest)

        b.start()
        m = FROM_SNAPSHOT.search(last_start(b))
        self.assertIsNotNone(m, "no recovery from a snapshot in the log:\n" + b.log_tail())
        self.assertEqual(int(m.group(1)), stored[-1])
        self.assertEqual(int(m.group(1)) + int(m.group(2)), digest["sequence"])
        self.assertEqual(b.stable_digest(), digest)

        # More trades, then a clean stop: its snapshot is at the tip.
        self.place_and_settle(b, cids, 10)
        digest = b.stable_digest()
        self.assertEqual(b.stop(), 0)
        self.assert_replay_digest(b, digest)
        b.start()
        m = FROM_SNAPSHOT.search(last_start(b))
        self.assertIsNotNone(m, b.log_tail())
        self.assertEqual((int(m.group(1)), int(m.group(2))), (digest["sequence"], 0))
        self.assertEqual(b.stable_digest(), digest)
        self.assertEqual(b.stop(), 0)

        # A damaged newest snapshot: brokerd warns and starts from the older one.
        corrupt_newest_snapshot(b.data_dir)
        code, _, err = check_snapshots(b.data_dir)
        self.assertNotEqual(code, 0, "broker-replay accepted a damaged snapshot:\n" + err)
        b.start()
        log = last_start(b)
        self.assertRegex(log, r"recovery: snapshot at %d refused" % digest["sequence"])
        m = FROM_SNAPSHOT.search(log)
        self.assertIsNotNone(m, b.log_tail())
        self.assertLess(int(m.group(1)), digest["sequence"])
        self.assertEqual(b.stable_digest(), digest)
        self.assertEqual(b.stop(), 0)


def corrupt_newest_snapshot(data_dir):
    """Flips a byte in the middle of the newest snapshot, through the same RocksDB files."""
    helper = os.path.join(harness.bin_dir(), "tests", "snapshot_corrupter")
    p = subprocess.run([helper, data_dir], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError("snapshot-corrupter failed: %s %s" % (p.stdout, p.stderr))


if __name__ == "__main__":
    harness.strip_bin_dir_arg(sys.argv)
    unittest.main(argv=sys.argv)
