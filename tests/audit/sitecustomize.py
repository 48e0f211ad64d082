"""Audit hook for the DAG test: with PIPELINE_AUDIT_DIR set, every `python -m pipeline VERB` process
records the files it opens and the package modules it imports, as JSON, when it exits."""
import os
import sys

_DIR = os.environ.get("PIPELINE_AUDIT_DIR")
_ARGV = list(getattr(sys, "orig_argv", sys.argv))

if _DIR and "pipeline" in _ARGV and "-m" in _ARGV:
    import atexit
    import json

    _opened: dict[str, str] = {}
    _imported: set[str] = set()

    def _hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
            _opened[os.path.abspath(path)] = _opened.get(os.path.abspath(path), "") + mode
        elif event == "import" and args and isinstance(args[0], str) and args[0].startswith("pipeline"):
            _imported.add(args[0])

    def _dump():
        record = {"argv": _ARGV, "cwd": os.getcwd(), "opened": _opened, "imported": sorted(_imported)}
        with open(os.path.join(_DIR, f"{os.getpid()}.json"), "w") as f:
            json.dump(record, f)

    sys.addaudithook(_hook)
    atexit.register(_dump)
