"""What scripts/plot_log_test and scripts/plot_timeline_test share: finding
the script, running it, checking the PNG and SVG it wrote."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG_ROOT = "{http://www.w3.org/2000/svg}svg"


def script(name):
    """The script's path: in Bazel's runfiles, else beside this file."""
    srcdir = os.environ.get("TEST_SRCDIR")
    if srcdir:
        path = os.path.join(srcdir, os.environ.get("TEST_WORKSPACE", "pstrain"), "scripts", name)
        if os.path.exists(path):
            return path
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), name)


def run(path, args, stdin=None):
    """Runs the script with this Python; returns (exit code, stdout, stderr)."""
    r = subprocess.run([sys.executable, path] + list(args), input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    return r.returncode, r.stdout, r.stderr


def check_images(test, prefix):
    """Asserts PREFIX.png is a PNG and PREFIX.svg parses as SVG; returns the
    SVG's root element."""
    with open(prefix + ".png", "rb") as f:
        test.assertEqual(f.read(8), PNG_MAGIC)
    test.assertGreater(os.path.getsize(prefix + ".png"), 2000)
    root = ET.parse(prefix + ".svg").getroot()
    test.assertEqual(root.tag, SVG_ROOT)
    return root
