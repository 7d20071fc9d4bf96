"""Tests of scripts/plot_timeline on hand-written Chrome traces: rows and
their names, event classes, B/E pairs, nesting, long names, a window,
thousands of events, and the errors."""

import json
import os
import re
import tempfile
import unittest

from plot_test_util import check_images, run, script

PLOT_TIMELINE = script("plot_timeline")


LONG = "push key 7 " + "resnetv1_stage4_unit3_conv2_weight_" * 8


def meta(pid, tid, what, name):
    return {"ph": "M", "name": what, "pid": pid, "tid": tid, "args": {"name": name}}


def x(name, ts, dur, pid, tid, **args):
    return {"ph": "X", "name": name, "ts": ts, "dur": dur, "pid": pid, "tid": tid, "args": args}


# Worker 0 (pid 1): compute thread with forward (two nested layers) and
# backward; a comm thread with a push of a very long name and a pull. Server
# 0 (pid 2): sum, update, reply (the reply as a B/E pair). One event of an
# unnamed thread, and a counter event that is not drawn.
HAND_TRACE = {
    "traceEvents": [
        meta(1, 0, "process_name", "worker 0"),
        meta(1, 10, "thread_name", "compute"),
        meta(1, 11, "thread_name", "comm"),
        meta(2, 0, "process_name", "server 0"),
        meta(2, 20, "thread_name", "io \"main\" thread with a name far too long to show in full"),
        x("forward", 1000, 3000, 1, 10, step=0),
        x("conv1 forward", 1000, 1000, 1, 10),
        x("fc forward", 2500, 1000, 1, 10),
        x("backward", 4000, 5000, 1, 10),
        x(LONG, 5000, 3000, 1, 11),
        x("PullWeights", 9000, 500, 1, 11),
        x("data: decode", 0, 900, 1, 12),
        x("sum", 5200, 100, 2, 20),
        x("optimizer update", 9600, 300, 2, 20),
        {"ph": "B", "name": "reply", "ts": 9950, "pid": 2, "tid": 20},
        {"ph": "E", "ts": 10000, "pid": 2, "tid": 20},
        {"ph": "C", "name": "queue", "ts": 5000, "pid": 2, "tid": 20, "args": {"n": 3}},
        x("something else", 100, 50, 2, 20),
    ],
    "displayTimeUnit": "ms",
}


class PlotTimelineTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))

    def write(self, name, doc):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(doc if isinstance(doc, str) else json.dumps(doc))
        return path

    def run_plot(self, *args):
        return run(PLOT_TIMELINE, args)

    def counts(self, out):
        """{label: events} of the summary's rows and classes."""
        got = {}
        for line in out.splitlines()[1:]:
            m = re.match(r"^(.*?)\s+(\d+)\s+[\d.]+$", line)
            if m:
                got[m.group(1)] = int(m.group(2))
        return got

    def test_hand_written_trace(self):
        trace = self.write("trace.json", HAND_TRACE)
        prefix = os.path.join(self.dir, "tl")
        rc, out, err = self.run_plot(trace, "--out", prefix)
        self.assertEqual(rc, 0, err)
        self.assertIn("trace.json: 11 events on 4 rows, ts 0..10000 us (10.000 ms)", out)
        got = self.counts(out)
        self.assertEqual(got["worker 0 / compute"], 4)
        self.assertEqual(got["worker 0 / comm"], 2)
        self.assertEqual(got["worker 0 / tid 12"], 1)  # no thread_name
        # The long thread name is cut to 40 characters.
        self.assertEqual(got['server 0 / io "main" thread with a na...'], 4)
        for cls, n in [("forward", 3), ("backward", 1), ("push", 1), ("pull", 1), ("sum", 1),
                       ("update", 1), ("reply", 1), ("data", 1), ("other", 1)]:
            self.assertEqual(got[cls], n, cls)
        # Rows in pid, tid order.
        self.assertLess(out.index("worker 0 / compute"), out.index("worker 0 / comm"))
        self.assertLess(out.index("worker 0 / tid 12"), out.index("server 0 /"))
        root = check_images(self, prefix)
        text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
        self.assertIn("worker 0 / compute", text)
        self.assertIn("forward (3)", text)
        # The long event name is written, shortened, inside its box.
        self.assertIn("push key 7 resnetv1", text)
        self.assertNotIn(LONG, text)

    def test_window_and_array_format(self):
        # Chrome's JSON array format, without the closing bracket.
        events = json.dumps(HAND_TRACE["traceEvents"])
        trace = self.write("array.json", events.rstrip("]") + ",\n")
        prefix = os.path.join(self.dir, "window")
        rc, out, err = self.run_plot(trace, "--out", prefix, "--from_us", "4500", "--to_us", "9200")
        self.assertEqual(rc, 0, err)
        self.assertIn("ts 4500..9200 us (4.700 ms)", out)
        got = self.counts(out)
        self.assertEqual(got["backward"], 1)
        self.assertEqual(got["pull"], 1)
        self.assertNotIn("forward", got)
        self.assertNotIn("reply", got)
        check_images(self, prefix)

    def test_thousands_of_events(self):
        events = [meta(p, 1, "process_name", "worker %d" % p) for p in range(4)]
        ts = 0
        for step in range(1500):
            for p in range(4):
                events.append(x("forward", ts, 40, p, 1))
                events.append(x("backward", ts + 45, 60, p, 1))
                events.append(x("push %d" % (step % 7), ts + 50, 5, p, 2))
            ts += 110
        trace = self.write("many.json", {"traceEvents": events})
        prefix = os.path.join(self.dir, "many")
        rc, out, err = self.run_plot(trace, "--out", prefix)
        self.assertEqual(rc, 0, err)
        m = re.search(r"(\d+) events on 8 rows.*drawn as (\d+) boxes", out)
        self.assertIsNotNone(m, out)
        self.assertEqual(int(m.group(1)), 18000)
        self.assertLess(int(m.group(2)), 18000)  # sub-pixel neighbours merged
        check_images(self, prefix)
        self.assertLess(os.path.getsize(prefix + ".svg"), 5 * 1024 * 1024)

    def test_errors(self):
        out = os.path.join(self.dir, "x")
        missing = os.path.join(self.dir, "missing.json")
        rc, _, err = self.run_plot(missing, "--out", out)
        self.assertEqual(rc, 1)
        self.assertIn("missing.json: No such file or directory", err)

        bad = self.write("bad.json", '{"traceEvents": [\n  {"ph": "X",, }\n]}')
        rc, _, err = self.run_plot(bad, "--out", out)
        self.assertEqual(rc, 1)
        self.assertIn("bad.json:2:", err)
        self.assertIn("not JSON", err)

        rc, _, err = self.run_plot(self.write("obj.json", {"events": []}), "--out", out)
        self.assertEqual(rc, 1)
        self.assertIn("no \"traceEvents\" list", err)

        only_meta = {"traceEvents": HAND_TRACE["traceEvents"][:5] + [
            {"ph": "X", "ts": "soon"}, {"ph": "X", "ts": 1, "dur": 1, "pid": [1]}]}
        rc, _, err = self.run_plot(self.write("meta.json", only_meta), "--out", out)
        self.assertEqual(rc, 1)
        self.assertIn("no complete events ('ph' \"X\", or \"B\"/\"E\" pairs) among its 7 events", err)
        self.assertIn("2 malformed events skipped; the first: ", err)
        self.assertIn("meta.json: event 5: 'ts' or 'dur' is not a number", err)

        trace = self.write("trace.json", HAND_TRACE)
        rc, _, err = self.run_plot(trace, "--out", out, "--from_us", "50000", "--to_us", "60000")
        self.assertEqual(rc, 1)
        self.assertIn("no events between --from_us 50000 and --to_us 60000", err)
        rc, _, err = self.run_plot(trace, "--out", out, "--from_us", "5", "--to_us", "5")
        self.assertEqual(rc, 2)
        self.assertFalse(os.path.exists(out + ".png"))

        rc, text, _ = self.run_plot("--help")
        self.assertEqual(rc, 0)
        self.assertIn("--from_us A", text)


if __name__ == "__main__":
    unittest.main()
