"""Process-level test harness for brokerd (standard library only).

What lives here:
  * where the binaries are (``--bin-dir BUILD_DIR`` or env ``BROKER_BIN_DIR``; the CMake build dir,
    with node/brokerd, tools/brokerctl and replay/broker-replay inside it);
  * ``free_port()``: a free loopback port (bind 127.0.0.1:0);
  * ``Broker``: one brokerd process on a data dir, with stdout/stderr captured to files, started
    and waited for ``GET /healthz`` with a bounded timeout, stopped with SIGTERM or killed with -9,
    and restarted on the same data dir;
  * ``Broker.request()``: HTTP + JSON over one keep-alive ``http.client`` connection per thread;
  * ``mint_token()``: JWTs from ``brokerctl token``;
  * ``wait_terminal()``: polls trades until they are terminal, with a bounded deadline;
  * ``money_ticks()``: decimal money strings to integer ticks of 1/10,000 USD, never via float;
  * ``run_replay()``: ``broker-replay`` on a stopped node's data dir.

Everything listens and connects on 127.0.0.1 only.
"""

import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
TICKS_PER_USD = 10_000
TERMINAL = frozenset({"FILLED", "REJECTED", "CANCELED"})
STATUSES = frozenset({"PLACED", "IN_PROGRESS"}) | TERMINAL

_REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
_bin_dir = None


# --- sanitizer reports in a process log -------------------------------------------------------------

SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "SUMMARY: UndefinedBehaviorSanitizer")


def sanitizer_reports(path):
    """Lines of a sanitizer report (ASan, LSan, UBSan) in a log file; none in a normal build."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if any(s in ln for s in SANITIZER_REPORTS)]


# --- binary locations ------------------------------------------------------------------------------

def strip_bin_dir_arg(argv):
    """Removes ``--bin-dir DIR`` / ``--bin-dir=DIR`` from argv (in place) and records DIR.

    Returns the remaining argv so that it can be handed to unittest.main."""
    global _bin_dir
    rest = [argv[0]] if argv else []
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--bin-dir":
            if i + 1 >= len(argv):
                raise SystemExit("--bin-dir needs a directory")
            _bin_dir = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--bin-dir="):
            _bin_dir = arg[len("--bin-dir="):]
            i += 1
            continue
        rest.append(arg)
        i += 1
    argv[:] = rest
    return argv


def bin_dir():
    """The CMake build dir: --bin-dir, else $BROKER_BIN_DIR, else <repo>/build."""
    d = _bin_dir or os.environ.get("BROKER_BIN_DIR") or os.path.join(_REPO_ROOT, "build")
    return os.path.abspath(d)


def binary(name):
    rel = {"brokerd": ("node", "brokerd"),
           "brokerctl": ("tools", "brokerctl"),
           "broker-replay": ("replay", "broker-replay"),
           "exchange-sim": ("exchange", "exchange-sim"),
           "broker-bench": ("bench", "broker-bench")}[name]
    return os.path.join(bin_dir(), *rel)


def built_with_asan():
    """Whether the binaries use AddressSanitizer's allocator (then glibc's mallinfo2 reports 0)."""
    out = subprocess.run(["ldd", binary("brokerd")], capture_output=True, text=True).stdout
    return "libasan" in out


def check_binaries():
    """Raises RuntimeError naming every missing binary."""
    missing = [binary(n) for n in ("brokerd", "brokerctl", "broker-replay")
               if not os.access(binary(n), os.X_OK)]
    if missing:
        raise RuntimeError("missing binaries (pass --bin-dir BUILD_DIR or set BROKER_BIN_DIR): "
                           + ", ".join(missing))


# --- small helpers ---------------------------------------------------------------------------------

def free_port():
    """A currently free TCP port on 127.0.0.1 (the OS picks it; there is a small race until used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


_MONEY_STRICT = re.compile(r"^(-?)(\d+)\.(\d{4})$")
_MONEY_LOOSE = re.compile(r"^(-?)(\d+)(?:\.(\d{1,4}))?$")


def money_ticks(text, strict=True):
    """'1234.5600' -> 12345600 ticks of 1/10,000 USD, by string arithmetic only (never float).

    strict: exactly four decimals, as the API must render money. A leading '-' is accepted so that a
    negative balance is reported as a failed comparison rather than a parse error."""
    if not isinstance(text, str):
        raise ValueError("money must be a decimal string, got %r" % (text,))
    m = (_MONEY_STRICT if strict else _MONEY_LOOSE).match(text)
    if not m:
        raise ValueError("not a money string: %r" % (text,))
    frac = (m.group(3) or "").ljust(4, "0")
    ticks = int(m.group(2)) * TICKS_PER_USD + int(frac)
    return -ticks if m.group(1) else ticks


def format_ticks(ticks):
    """12345600 -> '1234.5600'."""
    sign = "-" if ticks < 0 else ""
    whole, frac = divmod(abs(ticks), TICKS_PER_USD)
    return "%s%d.%04d" % (sign, whole, frac)


_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|\+00:00)$")


def parse_timestamp_ms(text):
    """RFC 3339 UTC with milliseconds ('2024-05-01T12:00:00.123Z') -> ms since the epoch."""
    if not isinstance(text, str) or not _TS.match(text):
        raise ValueError("not an RFC 3339 UTC millisecond timestamp: %r" % (text,))
    dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(dt.timestamp()) * 1000 + dt.microsecond // 1000


def mint_token(secret, sub, role=None, ttl=None, timeout=15):
    """A JWT from ``brokerctl token``."""
    cmd = [binary("brokerctl"), "token", "--secret", secret, "--sub", sub]
    if role:
        cmd += ["--role", role]
    if ttl is not None:
        cmd += ["--ttl", str(ttl)]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, text=True)
    if p.returncode != 0:
        raise RuntimeError("brokerctl token failed (%d): %s" % (p.returncode, p.stderr.strip()))
    lines = [ln.strip() for ln in p.stdout.splitlines() if ln.strip()]
    if not lines or lines[-1].count(".") != 2:
        raise RuntimeError("brokerctl token printed no JWT: %r" % (p.stdout,))
    return lines[-1]


def run_replay(data_dir, until=None, timeout=60):
    """Runs broker-replay; returns (exit code, parsed last JSON line or None, stdout, stderr)."""
    cmd = [binary("broker-replay"), "--data-dir", data_dir]
    if until is not None:
        cmd += ["--until", str(until)]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, text=True)
    parsed = None
    for line in reversed(p.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
            break
    return p.returncode, parsed, p.stdout, p.stderr


# --- HTTP ------------------------------------------------------------------------------------------

class HttpError(Exception):
    """The request did not get an HTTP response (connection refused, reset, timeout...)."""


_CONN_ERRORS = (OSError, http.client.HTTPException)
_local = threading.local()


def _thread_conns():
    conns = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = {}
    return conns


def http_request(port, method, path, body=None, token=None, generation=0, timeout=10.0,
                 retry=None, headers=None):
    """One HTTP request on this thread's keep-alive connection to 127.0.0.1:port.

    Returns (status, body) where body is the parsed JSON, None when empty, or the text when it is
    not JSON. Raises HttpError when no response arrived. Idempotent methods are retried once on a
    fresh connection (a kept-alive connection may have been closed by the server); POST is not,
    since the server may have acted on it, but a POST never goes out on a connection idle for more
    than a second."""
    if retry is None:
        retry = method in ("GET", "PUT", "DELETE", "HEAD")
    hdrs = {"Accept": "application/json"}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode() if not isinstance(body, (bytes, str)) else body
        if isinstance(payload, str):
            payload = payload.encode()
        hdrs["Content-Type"] = "application/json"
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    if headers:
        hdrs.update(headers)

    conns = _thread_conns()
    key = (port, generation)
    attempts = 2 if retry else 1
    last_exc = None
    for attempt in range(attempts):
        entry = conns.get(key)
        if entry is not None and not retry and time.monotonic() - entry[1] > 1.0:
            entry[0].close()
            entry = None
        if entry is None:
            entry = [http.client.HTTPConnection(HOST, port, timeout=timeout), time.monotonic()]
            conns[key] = entry
        conn = entry[0]
        try:
            conn.request(method, path, body=payload, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            entry[1] = time.monotonic()
            if resp.will_close:
                conn.close()
                conns.pop(key, None)
        except _CONN_ERRORS as exc:
            conn.close()
            conns.pop(key, None)
            last_exc = exc
            continue
        text = raw.decode("utf-8", errors="replace")
        if not text.strip():
            return resp.status, None
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text
    raise HttpError("%s %s on port %d: %r" % (method, path, port, last_exc))


def close_thread_connections():
    for entry in _thread_conns().values():
        entry[0].close()
    _thread_conns().clear()


# --- brokerd ---------------------------------------------------------------------------------------

class Broker:
    """One brokerd process on a data dir. Logs go to files in the work dir."""

    def __init__(self, workdir, name="node",
                 jwt_secret="integration-test-secret-0f3a9c17e2b4d865", args=(),
                 healthz_timeout=20.0):
        self.workdir = workdir
        self.name = name
        self.data_dir = os.path.join(workdir, name + "-data")
        self.stderr_path = os.path.join(workdir, name + ".stderr.log")
        self.stdout_path = os.path.join(workdir, name + ".stdout.log")
        self.jwt_secret = jwt_secret
        self.args = list(args)
        # Load tests drive each customer faster than the production default allows; tests of
        # the rate limit itself pass their own limit.
        if not any(a.startswith("--rate-limit") for a in self.args):
            self.args += ["--rate-limit-per-s", "0"]
        self.healthz_timeout = healthz_timeout
        self.port = None
        self.proc = None
        self.generation = 0
        self._tokens = {}
        self._token_lock = threading.Lock()
        os.makedirs(self.data_dir, exist_ok=True)

    # process control

    def start(self, port=None, attempts=3):
        """Starts brokerd and waits for /healthz 200. Tries a fresh port if the process dies
        before it is healthy (e.g. the port was taken); returns the port."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("brokerd already running")
        last = None
        for attempt in range(attempts):
            p = port if (port is not None and attempt == 0) else free_port()
            ok, why = self._start_once(p)
            if ok:
                return self.port
            last = why
            if why != "exited":
                break
        raise AssertionError("brokerd did not become healthy (%s)\n%s" % (last, self.log_tail()))

    def _start_once(self, port):
        self.port = port
        self.generation += 1
        cmd = [binary("brokerd"), "--data-dir", self.data_dir, "--listen", "%s:%d" % (HOST, port),
               "--jwt-secret", self.jwt_secret] + self.args
        with open(self.stderr_path, "ab") as err, open(self.stdout_path, "ab") as out:
            banner = ("\n=== [test harness] %s start #%d: %s ===\n"
                      % (time.strftime("%H:%M:%S"), self.generation, " ".join(cmd))).encode()
            err.write(banner)
            err.flush()
            out.write(banner)
            out.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True)
        deadline = time.monotonic() + self.healthz_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False, "exited"
            try:
                c = http.client.HTTPConnection(HOST, port, timeout=1.0)
                try:
                    c.request("GET", "/healthz")
                    r = c.getresponse()
                    r.read()
                    if r.status == 200:
                        return True, None
                finally:
                    c.close()
            except _CONN_ERRORS:
                pass
            time.sleep(0.05)
        self.kill9()
        return False, "no healthy /healthz within %.0f s" % self.healthz_timeout

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=20.0):
        """SIGTERM and wait; returns the exit code. Kills -9 and raises if it does not exit."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise AssertionError("brokerd did not exit within %.0f s of SIGTERM\n%s"
                                     % (timeout, self.log_tail()))
        close_thread_connections()
        return self.proc.returncode

    def kill9(self):
        """SIGKILL this brokerd (by its pid only) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def log_tail(self, lines=60):
        out = []
        for label, path in (("stderr", self.stderr_path), ("stdout", self.stdout_path)):
            try:
                with open(path, "rb") as f:
                    data = f.read().decode("utf-8", errors="replace").splitlines()
            except OSError:
                continue
            n = lines if label == "stderr" else 10
            out.append("----- %s %s (last %d lines) -----" % (self.name, label, n))
            out.extend(data[-n:])
        return "\n".join(out)

    # HTTP

    def request(self, method, path, body=None, token=None, **kw):
        if self.port is None:
            raise HttpError("brokerd not started")
        return http_request(self.port, method, path, body=body, token=token,
                            generation=self.generation, **kw)

    def token(self, sub, role=None):
        key = (sub, role)
        with self._token_lock:
            tok = self._tokens.get(key)
        if tok is None:
            tok = mint_token(self.jwt_secret, sub, role=role)
            with self._token_lock:
                self._tokens[key] = tok
        return tok

    def admin_token(self):
        return self.token("admin", role="admin")

    def open_customer(self, cid, cash, positions=None):
        """PUT /admin/v1/customers/{cid}; returns (status, body)."""
        body = {"cash": cash}
        if positions is not None:
            body["positions"] = positions
        return self.request("PUT", "/admin/v1/customers/" + cid, body, token=self.admin_token())

    def digest(self):
        st, body = self.request("GET", "/admin/v1/digest", token=self.admin_token())
        if st != 200 or not isinstance(body, dict):
            raise AssertionError("GET /admin/v1/digest -> %s %r" % (st, body))
        return body

    def stable_digest(self, settle=0.25, timeout=10.0):
        """The digest once two reads `settle` seconds apart agree (late duplicate callbacks must
        not change state, but give the node a moment to drain)."""
        deadline = time.monotonic() + timeout
        prev = self.digest()
        while True:
            time.sleep(settle)
            cur = self.digest()
            if cur == prev or time.monotonic() > deadline:
                return cur
            prev = cur


def wait_terminal(broker, owned_ids, timeout=60.0, interval=0.05):
    """Polls GET /v1/trades/{id} until every trade is terminal or the deadline passes.

    owned_ids: iterable of (customer_id, trade_id). Returns {trade_id: trade json}. Raises
    AssertionError listing the non-terminal trades at the deadline."""
    pending = {tid: cid for cid, tid in owned_ids}
    done = {}
    deadline = time.monotonic() + timeout
    while pending:
        for tid, cid in list(pending.items()):
            st, body = broker.request("GET", "/v1/trades/" + tid, token=broker.token(cid))
            if st != 200:
                raise AssertionError("GET /v1/trades/%s as %s -> %s %r" % (tid, cid, st, body))
            if body.get("status") in TERMINAL:
                done[tid] = body
                del pending[tid]
        if not pending:
            break
        if time.monotonic() > deadline:
            sample = sorted(pending)[:10]
            raise AssertionError("%d trades not terminal after %.0f s, e.g. %s"
                                 % (len(pending), timeout, sample))
        time.sleep(interval)
    return done


class WorkDir:
    """A temporary directory kept on failure (or when BROKER_KEEP_TMP is set)."""

    def __init__(self, prefix="brokerd-it-"):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def cleanup(self, keep=False):
        if keep or os.environ.get("BROKER_KEEP_TMP"):
            sys.stderr.write("[harness] kept work dir %s\n" % self.path)
            return
        shutil.rmtree(self.path, ignore_errors=True)


# --- exchange-sim ----------------------------------------------------------------------------------

class ExchangeSim:
    """One exchange-sim process (the simulated networked exchange) on a data dir; stderr goes to a
    file in the work dir. Started on a given port (or any free one) and considered ready once it
    prints "exchange-sim listening on HOST:PORT"; killed with -9 and restarted on the same port
    and data dir, so that brokerd's --exchange URL stays valid."""

    LISTENING = re.compile(r"exchange-sim listening on 127\.0\.0\.1:(\d+)")

    def __init__(self, workdir, name="exchange", secret="integration-exchange-secret-7c2e41a9", args=(),
                 listen_timeout=15.0):
        self.workdir = workdir
        self.name = name
        self.secret = secret
        self.data_dir = os.path.join(workdir, name + "-data")
        self.stderr_path = os.path.join(workdir, name + ".stderr.log")
        self.args = list(args)
        self.listen_timeout = listen_timeout
        self.port = None
        self.proc = None
        self.generation = 0
        self.started_wall = None       # time.time() when the current process was spawned
        self.started_monotonic = None  # time.monotonic() likewise (outage windows count from it)

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    def start(self, port=None, attempts=20):
        """Starts exchange-sim and waits for its 'listening' line; returns the port.

        With a port (a restart on the same port) a start that exits at once, e.g. because the port
        is still held, is retried up to `attempts` times, 0.25 s apart; without one, the OS picks
        a free port."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("exchange-sim already running")
        want = self.port if port is None and self.port is not None else port
        last = None
        for _ in range(max(1, attempts)):
            ok, why = self._start_once(want or 0)
            if ok:
                return self.port
            last = why
            if why != "exited" or not want:
                break
            time.sleep(0.25)
        raise AssertionError("exchange-sim did not start (%s)\n%s" % (last, self.log_tail()))

    def _start_once(self, port):
        self.generation += 1
        cmd = [binary("exchange-sim"), "--listen", "%s:%d" % (HOST, port), "--secret", self.secret,
               "--data-dir", self.data_dir] + self.args
        with open(self.stderr_path, "ab") as err:
            err.write(("\n=== [test harness] %s start #%d: %s ===\n"
                       % (time.strftime("%H:%M:%S"), self.generation, " ".join(cmd))).encode())
            err.flush()
            offset = err.tell()
            self.started_wall = time.time()
            self.started_monotonic = time.monotonic()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, start_new_session=True)
        deadline = time.monotonic() + self.listen_timeout
        while time.monotonic() < deadline:
            try:
                with open(self.stderr_path, "rb") as f:
                    f.seek(offset)
                    m = self.LISTENING.search(f.read().decode("utf-8", errors="replace"))
            except OSError:
                m = None
            if m:
                self.port = int(m.group(1))
                return True, None
            if self.proc.poll() is not None:
                return False, "exited"
            time.sleep(0.02)
        self.kill9()
        return False, "no 'listening' line within %.0f s" % self.listen_timeout

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def request(self, method, path, body=None, **kw):
        if self.port is None:
            raise HttpError("exchange-sim not started")
        return http_request(self.port, method, path, body=body,
                            generation=("exchange-sim", self.name, self.generation), **kw)

    def stop(self, timeout=15.0):
        """SIGTERM and wait; returns the exit code. Kills -9 and raises if it does not exit."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise AssertionError("exchange-sim did not exit within %.0f s of SIGTERM\n%s"
                                     % (timeout, self.log_tail()))
        return self.proc.returncode

    def kill9(self):
        """SIGKILL this exchange-sim (by its pid only) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def log_tail(self, lines=40):
        try:
            with open(self.stderr_path, "rb") as f:
                data = f.read().decode("utf-8", errors="replace").splitlines()
        except OSError:
            return "----- %s stderr: none -----" % self.name
        return "\n".join(["----- %s (exchange-sim) stderr (last %d lines) -----" % (self.name, lines)]
                         + data[-lines:])
