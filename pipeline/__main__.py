"""`python -m pipeline VERB ...` (see pipeline.cli), with Python's cyclic garbage collector set for a
short-lived process that imports torch, torchvision and transformers. Speed only: no output depends
on when garbage is collected.

- `gc.set_threshold(50_000, 20, 20)` (Python's default: 700, 10, 10). Importing those libraries
  allocates millions of long-lived objects; with the default, a full collection that walks all of
  them again runs every 70,000 net allocations once the heap has grown by a quarter. Cyclic garbage is
  still collected (after 50,000 net allocations instead of 700): the demo's students peaked at the
  same memory as before (2,170 MB).
- `gc.freeze()` before exiting: the interpreter's shutdown would otherwise run full collections over
  the whole heap (perf: `gc_collect_main`) to free memory the OS frees anyway. Everything else of the
  shutdown still runs (atexit handlers, joining threads, closing files that are not in cycles); every
  verb has closed and renamed its outputs before it returns.

`python -m benchmarks.startup` measures it: a demo-size Mask2Former pseudo-label job 10.8 -> 8.8
CPU-seconds. Tests call `pipeline.cli.main` in-process and keep Python's defaults.
"""
import gc

gc.set_threshold(50_000, 20, 20)

from pipeline.cli import main  # noqa: E402  (after the threshold: the imports are what it is for)

status = main()
gc.freeze()
raise SystemExit(status)
