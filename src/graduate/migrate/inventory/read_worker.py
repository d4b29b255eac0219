"""`python -m graduate.migrate.inventory.read_worker`: one process of a parallel inventory.

Its standard input is a pickled list of `source.SourceFile`; it writes to its standard
output the pickled list of what `source.read` made of each file, in the same order.
`source.read_all` starts it and is the only one to talk to it.
"""

from __future__ import annotations

import pickle
import sys

from graduate.migrate.inventory.source import read


def main() -> None:
    sources = pickle.load(sys.stdin.buffer)
    pickle.dump([read(source) for source in sources], sys.stdout.buffer,
                protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
