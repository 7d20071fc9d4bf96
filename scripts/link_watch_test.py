"""Tests of scripts/link_watch: its parsing and counting, and a real watch of
the loopback device while this test sends bytes through it."""

import csv
import importlib.machinery
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
WATCH = os.path.join(HERE, "link_watch")


def load_module():
    loader = importlib.machinery.SourceFileLoader("link_watch", WATCH)
    spec = importlib.util.spec_from_loader("link_watch", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


lw = load_module()


class ParseTest(unittest.TestCase):

    def test_rates(self):
        self.assertEqual(lw.parse_rate("100mbit"), 100e6)
        self.assertEqual(lw.parse_rate("2.5GBIT"), 2.5e9)
        self.assertEqual(lw.parse_rate("64kbit"), 64e3)
        self.assertEqual(lw.parse_rate("800bit"), 800)
        for none in ("none", "0", "0.0", ""):
            self.assertIsNone(lw.parse_rate(none), none)
        for bad in ("fast", "100", "mbit", "1.2.3gbit"):
            with self.assertRaises(ValueError, msg=bad):
                lw.parse_rate(bad)

    def test_devices(self):
        self.assertEqual(lw.parse_dev("pt3h0=h0@1gbit"), ("pt3h0", "h0", 1e9))
        self.assertEqual(lw.parse_dev("eth0"), ("eth0", "eth0", None))
        self.assertEqual(lw.parse_dev("lo=loop"), ("lo", "loop", None))
        for bad in ("", "=x", "../x", "a/b"):
            with self.assertRaises(ValueError, msg=bad):
                lw.parse_dev(bad)


class WindowTest(unittest.TestCase):

    def test_busy_and_idle_shares(self):
        w = lw.Window()
        rate = 100e6  # 12,500 bytes per ms
        for nbytes in (12500, 10000, 9999, 2500, 2499, 0, 12500, 12500):
            w.add(nbytes, 0.001, rate)
        self.assertEqual(w.samples, 8)
        self.assertEqual(w.busy, 4)  # >= 80%: 12500, 10000, 12500, 12500
        self.assertEqual(w.idle, 2)  # < 20%: 2499, 0
        self.assertAlmostEqual(w.mbit(), sum(
            (12500, 10000, 9999, 2500, 2499, 0, 12500, 12500)) * 8 / 0.008 / 1e6)
        self.assertEqual(w.shares(rate), "  50%   25%")
        self.assertEqual(w.shares(None), "    -     -")
        self.assertEqual(lw.Window().mbit(), 0.0)


class LoopbackTest(unittest.TestCase):

    def test_sees_what_is_sent(self):
        total = 64 << 20
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.settimeout(30)
        port = srv.getsockname()[1]
        got = [0]

        def receive():
            conn, _ = srv.accept()
            conn.settimeout(30)
            with conn:
                while got[0] < total:
                    b = conn.recv(1 << 20)
                    if not b:
                        break
                    got[0] += len(b)

        with tempfile.TemporaryDirectory() as tmp:
            samples = os.path.join(tmp, "samples.csv")
            watch = subprocess.Popen(
                [sys.executable, WATCH, "--dev", "lo=loop@1gbit", "--duration",
                 "2", "--interval", "0.5", "--sample_ms", "2", "--samples",
                 samples],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # The header comes after the first sample: from then on every
            # byte counts.
            header = watch.stdout.readline()
            self.assertIn("out Mbit/s", header)
            rx = threading.Thread(target=receive)
            rx.start()
            with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
                chunk = b"x" * (1 << 20)
                for _ in range(total >> 20):
                    c.sendall(chunk)
            rx.join(30)
            srv.close()
            out, err = watch.communicate(timeout=30)
            self.assertEqual(watch.returncode, 0, err)
            self.assertEqual(got[0], total)
            lines = out.splitlines()
            summary = [l for l in lines if l.startswith("all")]
            self.assertEqual(len(summary), 1, out)
            fields = summary[0].split()
            # all loop OUT BUSY IDLE IN BUSY IDLE (N samples, S s): at least
            # the 64 MiB this test sent, over 2 s.
            self.assertGreaterEqual(float(fields[2]), total * 8 / 2.0 / 1e6 * 0.9, out)
            self.assertEqual(fields[2], fields[5], out)  # lo: out = in
            self.assertTrue(fields[3].endswith("%"), out)
            with open(samples) as f:
                rows = list(csv.DictReader(f))
            self.assertGreater(len(rows), 100)
            self.assertEqual({r["label"] for r in rows}, {"loop"})
            counts = [int(r["out_bytes"]) for r in rows]
            self.assertEqual(counts, sorted(counts))
            self.assertGreaterEqual(counts[-1] - counts[0], total)
            times = [int(r["realtime_us"]) for r in rows]
            self.assertEqual(times, sorted(times))
            self.assertGreater(times[-1] - times[0], 1.5e6)

    def test_names_a_missing_device(self):
        r = subprocess.run([sys.executable, WATCH, "--dev", "pstrain_nosuch0",
                            "--duration", "1"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no network device 'pstrain_nosuch0'", r.stderr)

    def test_refuses_a_bad_rate(self):
        r = subprocess.run([sys.executable, WATCH, "--dev", "lo@fast"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("'fast' is not a rate", r.stderr)


if __name__ == "__main__":
    unittest.main()
