"""The short fault campaign: scripts/chaos with 3 faults on a small job on a
fresh 3-host test bed (real launch, scheduler, servers, workers, sshd,
network namespaces). Needs root and network namespaces (tags: multihost,
no-sandbox); skips, quoting the reason, where they are missing."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class ChaosTest(unittest.TestCase):

    def test_three_faults_job_completes_with_the_reference_weights(self):
        if os.geteuid() != 0:
            self.skipTest("the test bed needs root (network namespaces)")
        if not os.path.exists("/usr/share/datasets/fashion-mnist"):
            self.skipTest("Debian's dataset-fashion-mnist is not installed")
        out = tempfile.mkdtemp(prefix="chaos.",
                               dir=os.environ.get("TEST_TMPDIR"))
        argv = [sys.executable, os.path.join(ROOT, "scripts", "chaos"), "--seed", "3",
                "--faults", "3", "--kinds", "worker,server,scheduler,stop",
                "--hosts", "3", "--slots", "0", "--train_examples", "1920",
                "--val_examples", "500", "--epochs", "2",
                "--checkpoint_every", "4", "--heartbeat_timeout_s", "3",
                "--bin", ROOT, "--out", out]
        r = subprocess.run(argv, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=600)
        if r.returncode == 77:
            self.skipTest(r.stdout.strip().splitlines()[-1])
        self.assertEqual(r.returncode, 0, r.stdout[-6000:])
        with open(os.path.join(out, "chaos.json")) as f:
            res = json.load(f)
        self.assertTrue(res["ok"], res.get("why"))
        self.assertEqual(res["chaos"]["exit"], 0)
        self.assertEqual(len(res["faults"]), 3)
        kinds = set()
        for fault in res["faults"]:
            kinds.add(fault["kind"])
            self.assertNotIn("error", fault)
            self.assertGreater(fault["recovered_s"], 0)
            self.assertGreaterEqual(fault["recovered_s"],
                                    fault["detected_s"])
            self.assertLessEqual(fault["steps_lost"], 4 + 1)
            self.assertIn("restart", fault["restart_line"])
        self.assertEqual(len(kinds), 3)
        self.assertTrue(res["params_equal"])
        self.assertEqual(res["left"], [])
        self.assertIsNotNone(res["accuracy_chaos"])
        self.assertEqual(res["accuracy_chaos"], res["accuracy_reference"])
        with open(os.path.join(out, "chaos.md")) as f:
            self.assertIn("| # | fault | target |", f.read())


if __name__ == "__main__":
    unittest.main()
