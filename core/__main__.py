"""`python -m core ...`: the command line (core.cli), its stderr without TensorFlow's C++ start-up lines."""

from core.settings import filter_native_stderr

filter_native_stderr()

from core.cli import main  # noqa: E402 - after the filter, so nothing the CLI imports writes around it.

if __name__ == "__main__":
    raise SystemExit(main())
