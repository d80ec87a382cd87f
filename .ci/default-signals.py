"""Run a command with SIGINT and SIGTERM back at their default dispositions.

A job started in the background (`nohup ... &`, some CI runners) inherits SIGINT as *ignored*,
and a non-interactive bash cannot undo that (`trap - INT` is refused for a signal ignored on
entry). Python then never installs its KeyboardInterrupt handler, so tests that send SIGINT to a
child (tests/test_publish.py) would see it ignored. .ci/run starts pytest through this file, so
the suite behaves the same in the foreground and in the background.

    python .ci/default-signals.py PROGRAM [ARGS...]
"""

import os
import signal
import sys

for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, signal.SIG_DFL)  # kept across exec: the program starts as from a terminal
if len(sys.argv) < 2:
    sys.exit("usage: default-signals.py PROGRAM [ARGS...]")
os.execvp(sys.argv[1], sys.argv[1:])
