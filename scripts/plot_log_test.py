"""Tests of scripts/plot_log on canned logs the test writes itself: a launch
log of two workers (glog lines, other roles, time split), MXNet's own log
formats, a worker's bare log; the table, the CSV, the PNG and SVG, and the
errors."""

import csv
import os
import tempfile
import unittest

from plot_test_util import check_images, run, script

PLOT_LOG = script("plot_log")



# `launch` output: two workers interleaved, the scheduler's and a server's
# lines (one of them an Epoch-looking line that must be ignored), glog lines,
# the worker's epoch size; epoch 2 of worker 1 has no Batch lines, so its
# speed is images / Time cost = 10 * 64 / 0.5 = 1280.
LAUNCH_LOG = """\
launch: job: 1 scheduler at 127.0.0.1:51873, 1 server(s), 2 worker(s), launcher local
[scheduler 0 127.0.0.1] I20261205 13:42:48.892554 21182 scheduler.cc:82] scheduler listening on 127.0.0.1:51873
[server 0 127.0.0.1] Epoch[0] Train-accuracy=0.999999
[worker 0 127.0.0.1] I20261205 13:42:49.332309 21192 trainer.cc:215] worker 0 of 2: 640 records in its part of --data_train, 10 batches of 64 per epoch on 1 device(s)
[worker 1 127.0.0.1] I20261205 13:42:49.372350 21206 trainer.cc:215] worker 1 of 2: 640 records in its part of --data_train, 10 batches of 64 per epoch on 1 device(s)
[worker 0 127.0.0.1] Epoch[0] Batch [0-5]\tSpeed: 1000.00 samples/sec\taccuracy=0.500000
[worker 1 127.0.0.1] Epoch[0] Batch [0-5]\tSpeed: 1100.00 samples/sec\taccuracy=0.510000
[worker 0 127.0.0.1] Epoch[0] Batch [5-10]\tSpeed: 2000.00 samples/sec\taccuracy=0.600000
[worker 1 127.0.0.1] Epoch[0] Batch [5-10]\tSpeed: 2100.00 samples/sec\taccuracy=0.610000
[worker 0 127.0.0.1] Epoch[0] Train-accuracy=0.550000
[worker 0 127.0.0.1] Epoch[0] Time cost=0.400
[worker 0 127.0.0.1] Epoch[0] Time split: data 1% compute 80% wait-pull 10% wait-push 4% other 5%
[worker 0 127.0.0.1] Epoch[0] skipped 0 corrupt records
[worker 1 127.0.0.1] Epoch[0] Train-accuracy=0.560000
[worker 1 127.0.0.1] Epoch[0] Time cost=0.410
[worker 0 127.0.0.1] Saved checkpoint to "out/x-0001.params"
[worker 0 127.0.0.1] Epoch[0] Validation-accuracy=0.700000
[worker 1 127.0.0.1] Epoch[0] Validation-accuracy=0.700000
[worker 0 127.0.0.1] Epoch[1] Batch [0-5]\tSpeed: 3000.00 samples/sec\taccuracy=0.800000
[worker 0 127.0.0.1] Epoch[1] Train-accuracy=0.800000
[worker 0 127.0.0.1] Epoch[1] Time cost=0.300
[worker 0 127.0.0.1] Epoch[1] Time split: data 2% compute 70% wait-pull 20% wait-push 3% optimizer 1% other 4%
[worker 1 127.0.0.1] Epoch[1] Batch [0-5]\tSpeed: 3100.00 samples/sec\taccuracy=0.810000
[worker 1 127.0.0.1] Epoch[1] Train-accuracy=0.810000
[worker 1 127.0.0.1] Epoch[1] Time cost=0.310
[worker 0 127.0.0.1] Epoch[1] Validation-accuracy=0.750000
[worker 1 127.0.0.1] Epoch[1] Validation-accuracy=0.750000
[worker 1 127.0.0.1] Epoch[2] Train-accuracy=0.850000
[worker 1 127.0.0.1] Epoch[2] Time cost=0.500
[worker 1 127.0.0.1] Epoch[2] Validation-accuracy=nan-ish
[scheduler 0 127.0.0.1] I20261205 13:43:40.000000 21182 scheduler.cc:160] scheduler: job finished
"""

# MXNet's logging.basicConfig default ("INFO:root:"), old-style Batch [N].
MXNET_LOG = """\
INFO:root:start with arguments Namespace(batch_size=64)
INFO:root:Epoch[0] Batch [20]\tSpeed: 500.00 samples/sec\taccuracy=0.300000
INFO:root:Epoch[0] Batch [40]\tSpeed: 700.00 samples/sec\taccuracy=0.400000
INFO:root:Epoch[0] Train-accuracy=0.350000
INFO:root:Epoch[0] Time cost=5.000
INFO:root:Epoch[0] Validation-accuracy=0.450000
INFO:root:Epoch[1] Batch [0-20]\tSpeed: 800.00 samples/sec\taccuracy=0.500000
INFO:root:Epoch[1] Train-accuracy=0.500000
INFO:root:Epoch[1] Time cost=4.000
INFO:root:Epoch[1] Validation-accuracy=0.550000
"""

# MXNet's example/image-classification fit.py: "%(asctime)-15s Node[R] ".
MXNET_FIT_LOG = """\
2017-11-14 12:00:00,123 Node[0] Epoch[0] Batch [20]\tSpeed: 400.00 samples/sec\taccuracy=0.200000
2017-11-14 12:00:00,124 Node[1] Epoch[0] Batch [20]\tSpeed: 410.00 samples/sec\taccuracy=0.210000
2017-11-14 12:00:01,000 Node[1] Epoch[0] Train-accuracy=0.250000
2017-11-14 12:00:01,001 Node[0] Epoch[0] Train-accuracy=0.240000
2017-11-14 12:00:01,002 Node[0] Epoch[0] Validation-accuracy=0.300000
"""


class PlotLogTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def run_plot(self, *args):
        return run(PLOT_LOG, args)

    def table(self, out):
        """The printed table as {(worker, epoch): [train, val, speed, time]}."""
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("worker epoch"), out)
        rows = {}
        for line in lines[1:]:
            f = line.split()
            rows[(int(f[0]), int(f[1]))] = f[2:6]
        return rows

    def test_launch_log_all_workers(self):
        log = self.write("launch.log", LAUNCH_LOG)
        prefix = os.path.join(self.dir, "curves")
        csv_path = os.path.join(self.dir, "curves.csv")
        rc, out, err = self.run_plot(log, "--worker", "all", "--out", prefix, "--csv", csv_path)
        self.assertEqual(rc, 0, err)
        rows = self.table(out)
        self.assertEqual(sorted(rows), [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)])
        self.assertEqual(rows[(0, 0)], ["0.550000", "0.700000", "1500.00", "0.400"])
        self.assertEqual(rows[(1, 0)], ["0.560000", "0.700000", "1600.00", "0.410"])
        self.assertEqual(rows[(0, 1)], ["0.800000", "0.750000", "3000.00", "0.300"])
        # No Batch lines: 10 batches of 64 / 0.5 s. The unreadable
        # validation value is left out, with a warning naming file and line.
        self.assertEqual(rows[(1, 2)], ["0.850000", "-", "1280.00", "0.500"])
        self.assertIn("launch.log:30: cannot read the numbers", err)
        self.assertIn("compute 80", out)
        check_images(self, prefix)
        with open(csv_path) as f:
            records = list(csv.DictReader(f))
        self.assertEqual(len(records), 5)
        self.assertEqual(records[0]["train_accuracy"], "0.550000")
        self.assertEqual(records[0]["samples_per_sec"], "1500.00")
        self.assertEqual(records[0]["compute_pct"], "80")
        self.assertEqual(records[1]["optimizer_pct"], "1")
        self.assertEqual(records[4]["validation_accuracy"], "")

    def test_default_is_the_lowest_worker_and_worker_picks_one(self):
        log = self.write("launch.log", LAUNCH_LOG)
        rc, out, err = self.run_plot(log)
        self.assertEqual(rc, 0, err)
        self.assertEqual(sorted(self.table(out)), [(0, 0), (0, 1)])
        rc, out, err = self.run_plot(log, "--worker", "1")
        self.assertEqual(rc, 0, err)
        self.assertEqual(sorted(self.table(out)), [(1, 0), (1, 1), (1, 2)])

    def test_mxnet_logs(self):
        log = self.write("mxnet.log", MXNET_LOG)
        prefix = os.path.join(self.dir, "mx")
        rc, out, err = self.run_plot(log, "--out", prefix)
        self.assertEqual(rc, 0, err)
        rows = self.table(out)
        self.assertEqual(rows[(0, 0)], ["0.350000", "0.450000", "600.00", "5.000"])
        self.assertEqual(rows[(0, 1)], ["0.500000", "0.550000", "800.00", "4.000"])
        check_images(self, prefix)

        fit = self.write("fit.log", MXNET_FIT_LOG)
        rc, out, err = self.run_plot(fit, "--worker", "all")
        self.assertEqual(rc, 0, err)
        rows = self.table(out)
        self.assertEqual(rows[(0, 0)], ["0.240000", "0.300000", "400.00", "-"])
        self.assertEqual(rows[(1, 0)], ["0.250000", "-", "410.00", "-"])

    def test_a_workers_own_log_from_stdin(self):
        text = "\n".join(line.split("] ", 1)[1] for line in LAUNCH_LOG.splitlines()
                         if line.startswith("[worker 0 "))
        rc, out, err = run(PLOT_LOG, ["-"], stdin=text)
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.table(out)[(0, 1)], ["0.800000", "0.750000", "3000.00", "0.300"])

    def test_only_speed_still_plots(self):
        log = self.write("speed.log", "Epoch[0] Batch [0-5]\tSpeed: 10.00 samples/sec\n")
        prefix = os.path.join(self.dir, "speed")
        rc, out, err = self.run_plot(log, "--out", prefix)
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.table(out)[(0, 0)], ["-", "-", "10.00", "-"])
        check_images(self, prefix)

    def test_errors(self):
        empty = self.write("empty.log", "")
        rc, _, err = self.run_plot(empty, "--out", os.path.join(self.dir, "x"))
        self.assertEqual(rc, 1)
        self.assertIn("empty.log: no 'Epoch[N] ...' lines found", err)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "x.png")))

        noise = self.write("noise.log", "hello\n[server 0 h] Epoch[0] Train-accuracy=0.5\n")
        rc, _, err = self.run_plot(noise)
        self.assertEqual(rc, 1)
        self.assertIn("noise.log: no 'Epoch[N] ...' lines found (2 lines read", err)

        missing = os.path.join(self.dir, "missing.log")
        rc, _, err = self.run_plot(missing)
        self.assertEqual(rc, 1)
        self.assertIn("missing.log: No such file or directory", err)

        log = self.write("launch.log", LAUNCH_LOG)
        rc, _, err = self.run_plot(log, "--worker", "7")
        self.assertEqual(rc, 1)
        self.assertIn("no 'Epoch[N]' lines of worker 7 (workers in the log: 0, 1)", err)
        rc, _, err = self.run_plot(log, "--worker", "x")
        self.assertEqual(rc, 2)
        self.assertIn("--worker x", err)

        # Epoch lines of another metric only.
        other = self.write("other.log", "INFO:root:Epoch[0] Train-top_k_accuracy_5=0.9\n")
        rc, _, err = self.run_plot(other)
        self.assertEqual(rc, 1)
        self.assertIn("other.log: 1 'Epoch[N]' lines, but none with Train-/Validation-accuracy", err)
        self.assertIn("(metrics in the log: top_k_accuracy_5)", err)
        rc, out, err = self.run_plot(log, "--metric", "f1")
        self.assertEqual(rc, 0, err)
        self.assertIn("no Train-/Validation-f1 lines (metrics in the log: accuracy; see --metric)", err)

        rc, out, err = self.run_plot("--help")
        self.assertEqual(rc, 0)
        self.assertIn("--out PREFIX", out)


if __name__ == "__main__":
    unittest.main()
