"""What scripts/plot_log and scripts/plot_timeline share: gnuplot quoting,
one script drawn into PREFIX.png and PREFIX.svg, and stdout to a reader that
may leave. Python 3 standard library; gnuplot from Debian's gnuplot-nox
(scripts/setup)."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile


def gp_string(text):
    """`text` as a gnuplot double-quoted string (one line)."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", " ").replace("\r", " ") + '"'


def terminals(prefix, width, height, font):
    """[(terminal, output path)]: PREFIX.png (cairo) and PREFIX.svg."""
    size = "size %d,%d" % (width, height)
    return [
        ("pngcairo %s font '%s'" % (size, font), prefix + ".png"),
        ("svg %s dynamic font '%s'" % (size, font), prefix + ".svg"),
    ]


def render(script, prefix, width, height, font="sans,10"):
    """Runs `script` (no terminal, no output) once per terminal of
    terminals(). Raises RuntimeError naming the file when gnuplot is missing
    or fails, OSError when the folder cannot be written."""
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        raise RuntimeError("gnuplot is not installed (scripts/setup installs gnuplot-nox)")
    directory = os.path.dirname(os.path.abspath(prefix))
    if not os.path.isdir(directory):
        raise RuntimeError("cannot write %s.png: no folder %s" % (prefix, directory))
    for term, path in terminals(prefix, width, height, font):
        full = "set terminal %s\nset output %s\n%sunset output\n" % (term, gp_string(path), script)
        with tempfile.NamedTemporaryFile("w", suffix=".gp", dir=directory, delete=False) as f:
            f.write(full)
            tmp = f.name
        try:
            r = subprocess.run([gnuplot, tmp], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               universal_newlines=True)
        finally:
            os.unlink(tmp)
        if r.returncode != 0 or not os.path.isfile(path) or os.path.getsize(path) == 0:
            raise RuntimeError("gnuplot failed writing %s (exit %d): %s"
                               % (path, r.returncode, r.stderr.strip()[-2000:]))


@contextlib.contextmanager
def reader_may_leave():
    """Prints to stdout inside the block; when the reader has gone (`| head`)
    the rest of stdout is dropped and the program goes on to draw."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
