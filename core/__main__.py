"""`python -m core ...`: the command line (core.cli), its stderr without TensorFlow's C++ start-up lines."""

import gc

from core.settings import filter_native_stderr

filter_native_stderr()

from core.cli import main  # noqa: E402 - after the filter, so nothing the CLI imports writes around it.

if __name__ == "__main__":
    code = main()
    # Nothing is collected from here on: the exit frees the memory anyway, and the interpreter's last
    # collection of a TensorFlow process's many objects would only spend CPU.
    gc.freeze()
    raise SystemExit(code)
