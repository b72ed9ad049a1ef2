"""What every CLI command shares: the user-error type and a progress bar on stderr."""

from __future__ import annotations

import sys

from tessera.errors import InputError

UsageError = InputError  # bad input from the user: printed as one line, exit code 2


def progress(desc: str):
    from tqdm import tqdm

    bar = tqdm(total=None, desc=desc, file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update
