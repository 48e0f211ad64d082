"""The paper's Tables 1-5 with the measured rows beside the paper's rows, as Markdown, CSV and LaTeX.

Inputs: the `evaluate` metrics files `results/eval/{variant}/{ds}_{split}.json` (the variant is the
name of the folder holding the file) and the `efficiency` record. Paper rows come from
`pipeline.evaluate.paper` and are marked "(paper)"; measured rows "(measured, this run)". A table
with no measurement keeps the paper rows and says "not measured in this run". Segmentation values
are printed as percentages (the JSON holds fractions).

Every depth row says which protocol produced it (last column, "Protocol"): the paper rows are the
published numbers (Table 1 from ADDS-DepthNet's 40 m table, Table 2 from md4all's), the measured rows
name the `eval.protocol` their metrics file records. Segmentation rows say their reference ("GT labels"
or "teacher top-1").
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.atomic import write_text
from pipeline.evaluate import paper
from pipeline.evaluate.depth import constant_depth_warning

PAPER = " (paper)"
MEASURED = " (measured, this run)"
NOT_MEASURED = "not measured in this run"
MAIN_VARIANT = "full"
TEACHER_ROW = "Monodepth2 day teacher (ours, trained on train_day)"
DEPTH_KEYS = paper.DEPTH_KEYS
DEPTH_HEADERS = ("Abs Rel", "Sq Rel", "RMSE", "RMSE log", "d<1.25", "d<1.25^2", "d<1.25^3")
CONSTANT_ROW = "Constant depth (median-scaled)"
UNTRAINED_ROW = "Untrained network (training's initialisation)"
SPLIT_NAMES = {"test_day": "day", "test_night": "night"}
REFERENCE_NAMES = {"gt": "GT labels", "teacher": "teacher top-1"}
PROTOCOL_NAMES = ("monodepth2", "md4all", "adds")
TABLE1_PAPER_PROTOCOL = "adds (as published, 40 m)"    # Table 1's rows: ADDS-DepthNet's RobotCar table
TABLE2_PAPER_PROTOCOL = "md4all (as published, 80 m)"  # Table 2's rows: md4all's nuScenes table
TABLE5_PAPER_PROTOCOL = "as Table 2"
REQUIRED = {
    "dataset": None, "split": None, "n_frames": None, "seg_reference": None,
    "depth": DEPTH_KEYS, "baseline_constant": DEPTH_KEYS, "seg": ("miou", "iou"),
}


@dataclass
class Table:
    """One table: text/number cells per row, a `kind` per row ("paper" | "measured"), notes below."""
    key: str
    title: str
    columns: list[str]
    digits: list[int | None]  # decimals per column; None = text
    rows: list[list] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, cells: list) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.key}: row has {len(cells)} cells, expected {len(self.columns)}")
        self.rows.append(list(cells))
        self.kinds.append(kind)


# ----------------------------------------------------------------------------- inputs
def _read_json(path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def load_metrics(path) -> dict:
    """Read one `evaluate` metrics file and check its keys; adds `variant` (the folder name) and `path`."""
    record = _read_json(path, "metrics")
    for key, subkeys in REQUIRED.items():
        if key not in record:
            raise KeyError(f"{path}: metrics file lacks key {key!r}")
        for sub in subkeys or ():
            if not isinstance(record[key], dict) or sub not in record[key]:
                raise KeyError(f"{path}: metrics file lacks key '{key}.{sub}'")
    return {**record, "variant": Path(path).parent.name, "path": str(path)}


def load_teacher_metrics(path) -> dict:
    """Read one `evaluate-depth-teacher` file (dataset, split, depth metrics)."""
    record = _read_json(path, "depth teacher metrics")
    for key in ("dataset", "split", "depth"):
        if key not in record:
            raise KeyError(f"{path}: depth teacher metrics file lacks key {key!r}")
    return {**record, "path": str(path)}


def load_efficiency(path) -> dict:
    """Read the `efficiency` record and check the keys Table 4 needs."""
    record = _read_json(path, "efficiency")
    for model in ("ours", "monodepth2"):
        entry = record.get("models", {}).get(model)
        if not isinstance(entry, dict) or "modules" not in entry or "latency_s" not in entry:
            raise KeyError(f"{path}: efficiency file lacks key 'models.{model}.modules' or '.latency_s'")
        if "total" not in entry["modules"]:
            raise KeyError(f"{path}: efficiency file lacks key 'models.{model}.modules.total'")
    for key in ("width", "height"):
        if key not in record:
            raise KeyError(f"{path}: efficiency file lacks key {key!r}")
    return record


def index_metrics(records: list[dict]) -> dict:
    """{(variant, dataset, split): record}; two files for one key is an error naming both."""
    out = {}
    for r in records:
        key = (r["variant"], r["dataset"], r["split"])
        if key in out:
            raise ValueError(f"{out[key]['path']} and {r['path']} both hold {key}")
        out[key] = r
    return out


def main_variant(index: dict) -> str | None:
    """`full` when measured, else the first variant in name order (None without metrics)."""
    variants = sorted({k[0] for k in index})
    return MAIN_VARIANT if MAIN_VARIANT in variants else (variants[0] if variants else None)


def _ours(variant: str | None) -> str:
    return "Ours" if variant == MAIN_VARIANT else f"Ours [{variant}]"


def _pct(value):
    return None if value is None else 100.0 * value


def source_note(r: dict) -> str:
    """Which data and checkpoint produced a measured row."""
    demo = " SYNTHETIC DEMO data (rendered scenes, not the real dataset)," if r.get("synthetic_demo") else ""
    return (f"{r['dataset']} {r['split']} [{r['variant']}]: {r['n_frames']} frames of {r.get('frames', '?')}"
            f" (root {r.get('dataset_root', '?')}),{demo} cap {r.get('max_depth', '?')} m, depth protocol "
            f"{protocol_of(r)}, seg reference {reference_of(r)}, checkpoint {str(r.get('checkpoint_sha256', '?'))[:12]}")


def protocol_of(r: dict | None) -> str | None:
    """The depth protocol a metrics record names (records written before `eval.protocol` existed hold a
    description of Monodepth2's protocol instead of a name)."""
    if r is None:
        return None
    name = r.get("protocol")
    return name if name in PROTOCOL_NAMES else "monodepth2"


def protocols_of(*records) -> str:
    """The protocol(s) of the given records (None ignored), one cell."""
    names = sorted({protocol_of(r) for r in records if r is not None})
    return "/".join(names) if names else "-"


def reference_of(r: dict) -> str:
    """The segmentation reference of a record, in words ("GT labels" or "teacher top-1")."""
    return REFERENCE_NAMES.get(r["seg_reference"], r["seg_reference"])


def untrained_depth(r: dict) -> dict | None:
    """Depth metrics of the untrained network in an evaluate record (absent in older records)."""
    return (r.get("baseline_untrained") or {}).get("depth")


# ----------------------------------------------------------------------------- tables
def table1(index: dict, teachers: dict) -> Table:
    """Depth on Oxford RobotCar (paper Table 1)."""
    t = Table("table1", f"Table 1: depth on Oxford RobotCar (cap {paper.TABLE1_MAX_DEPTH:g} m)",
              ["Split", "Method", *DEPTH_HEADERS, "Protocol"], [None, None] + [3] * 7 + [None])
    v = main_variant(index)
    for split, rows in paper.TABLE1_ROBOTCAR.items():
        for method, values in rows:
            t.add("paper", [SPLIT_NAMES[split], method + PAPER, *values, TABLE1_PAPER_PROTOCOL])
        r = index.get((v, "robotcar", split))
        if r is not None:
            proto = protocol_of(r)
            t.add("measured", [SPLIT_NAMES[split], _ours(v) + MEASURED, *(r["depth"][k] for k in DEPTH_KEYS), proto])
            t.add("measured", [SPLIT_NAMES[split], CONSTANT_ROW + MEASURED,
                               *(r["baseline_constant"][k] for k in DEPTH_KEYS), proto])
            if untrained_depth(r) is not None:
                t.add("measured", [SPLIT_NAMES[split], UNTRAINED_ROW + MEASURED,
                                   *(untrained_depth(r)[k] for k in DEPTH_KEYS), proto])
            t.notes.append(source_note(r))
        tr = teachers.get(("robotcar", split))
        if tr is not None:
            t.add("measured", [SPLIT_NAMES[split], TEACHER_ROW + MEASURED, *(tr["depth"][k] for k in DEPTH_KEYS),
                               protocol_of(tr)])
        t.notes += constant_warnings(r, tr, _ours(v))
    _mark_unmeasured(t)
    return t


def table2(index: dict, teachers: dict) -> Table:
    """Depth on nuScenes, day-clear and night (paper Table 2)."""
    heads = [f"{s} {h}" for s in ("day-clear", "night") for h in ("Abs Rel", "RMSE", "d<1.25")]
    t = Table("table2", f"Table 2: depth on nuScenes (cap {paper.TABLE2_MAX_DEPTH:g} m)",
              ["Method", "Train", *heads, "Protocol"], [None, None] + [3] * 6 + [None])
    for method, train, day, night in paper.TABLE2_NUSCENES:
        t.add("paper", [method + PAPER, train, *day, *night, TABLE2_PAPER_PROTOCOL])
    v = main_variant(index)
    day, night = index.get((v, "nuscenes", "test_day")), index.get((v, "nuscenes", "test_night"))
    rows = ((_ours(v), lambda r: r["depth"]), (CONSTANT_ROW, lambda r: r["baseline_constant"]),
            (UNTRAINED_ROW, untrained_depth))
    for label, get in rows:
        depth = [get(r) if r is not None else None for r in (day, night)]
        if all(d is None for d in depth):
            continue
        cells = [d[k] if d is not None else None for d in depth for k in paper.TABLE2_KEYS]
        t.add("measured", [label + MEASURED, "M", *cells, protocols_of(day, night)])
    tday, tnight = teachers.get(("nuscenes", "test_day")), teachers.get(("nuscenes", "test_night"))
    if tday is not None or tnight is not None:
        cells = [r["depth"][k] if r is not None else None for r in (tday, tnight) for k in paper.TABLE2_KEYS]
        t.add("measured", [TEACHER_ROW + MEASURED, "M (day)", *cells, protocols_of(tday, tnight)])
    t.notes += [source_note(r) for r in (day, night) if r is not None]
    for r, tr in ((day, tday), (night, tnight)):
        t.notes += constant_warnings(r, tr, _ours(v))
    _mark_unmeasured(t)
    return t


def constant_warnings(record: dict | None, teacher: dict | None, ours: str) -> list[str]:
    """Notes for the student (`record`) and the depth teacher (`teacher`) of one split whose Abs Rel is
    not below the constant depth's on the same frames."""
    notes = []
    for r, name in ((record, ours), (teacher, TEACHER_ROW)):
        if r is not None and r.get("baseline_constant"):
            note = constant_depth_warning(name, r["depth"], r["baseline_constant"], f"{r['dataset']} {r['split']}")
            if note:
                notes.append(f"WARNING {note}")
    return notes


def _seg_rows(t: Table, r: dict, classes, v: str) -> None:
    split = SPLIT_NAMES.get(r["split"], r["split"])
    if r.get("teacher_seg"):
        s = r["teacher_seg"]
        t.add("measured", ["Mask2Former teacher" + MEASURED, split, reference_of(r), _pct(s["miou"]),
                           *(_pct(s["iou"].get(c)) for c in classes)])
    s = r["seg"]
    t.add("measured", [_ours(v) + MEASURED, split, reference_of(r), _pct(s["miou"]),
                       *(_pct(s["iou"].get(c)) for c in classes)])
    t.notes.append(source_note(r))


def table3(index: dict, dataset: str) -> Table:
    """Segmentation mIoU and per-class IoU, % (paper Table 3a nuScenes, 3b RobotCar)."""
    if dataset == "nuscenes":
        classes, rows, sub, ref = paper.TABLE3_NUSCENES_CLASSES, paper.TABLE3_NUSCENES, "a", REFERENCE_NAMES["gt"]
        title = "Table 3a: segmentation on nuScenes (paper: against ground-truth labels)"
    else:
        classes, rows, sub, ref = (paper.TABLE3_ROBOTCAR_CLASSES, paper.TABLE3_ROBOTCAR, "b",
                                   REFERENCE_NAMES["teacher"] + " (Mask2Former)")
        title = "Table 3b: segmentation on Oxford RobotCar (paper: against Mask2Former pseudo-labels)"
    t = Table(f"table3{sub}", title, ["Method", "Split", "Reference", "mIoU", *classes],
              [None, None, None, 2] + [2] * len(classes))
    v = main_variant(index)
    for split in ("test_day", "test_night"):
        for method, s, miou, ious in rows:
            if s == split:
                t.add("paper", [method + PAPER, SPLIT_NAMES[split], ref, miou, *ious])
        r = index.get((v, dataset, split))
        if r is not None:
            _seg_rows(t, r, classes, v)
    _mark_unmeasured(t)
    return t


def table3_all_classes(index: dict) -> Table:
    """Measured IoU of all 19 classes, % (student and, with gt labels, teacher)."""
    from pipeline.cityscapes import NAMES

    t = Table("table3c", "Table 3c: measured IoU of all 19 Cityscapes classes (no paper counterpart)",
              ["Dataset", "Method", "Split", "Reference", "mIoU", *NAMES], [None] * 4 + [2] * 20)
    v = main_variant(index)
    for (variant, ds, split), r in sorted(index.items()):
        if variant != v:
            continue
        sub = Table("tmp", "", t.columns[1:], t.digits[1:])
        _seg_rows(sub, r, NAMES, v)
        for kind, cells in zip(sub.kinds, sub.rows):
            t.add(kind, [ds, *cells])
    _mark_unmeasured(t)
    return t


def table4(eff: dict | None) -> Table:
    """Efficiency (paper Table 4): GMACs and parameters per module, time per image."""
    mods = paper.TABLE4_MODULES
    heads = [f"GMACs {m}" for m in (*mods, "total")] + [f"Params(M) {m}" for m in (*mods, "total")]
    t = Table("table4", "Table 4: computational efficiency",
              ["Model", *heads, "Time GPU (s)", "Time CPU (s)"], [None] + [3] * 10 + [4, 4])
    for model, gmacs, params, time_s in paper.TABLE4:
        t.add("paper", [model + PAPER, *gmacs, *params, time_s, None])
    w, h = paper.TABLE4_SIZE
    t.notes.append(f"paper: {w}x{h} input, GMACs counted with thop, time on a GeForce RTX 4090")
    if eff is None:
        _mark_unmeasured(t)
        return t
    for name, label in (("ours", "Ours (depth+semantics)"), ("monodepth2", "Monodepth2 (depth)")):
        entry = eff["models"][name]
        m, lat = entry["modules"], entry["latency_s"]
        for key, conv in (("gmacs_thop", "thop"), ("gmacs_flop_counter", "FlopCounterMode")):
            gmacs = [m[x][key] if x in m else None for x in (*mods, "total")]
            params = [m[x]["params_m"] if x in m else None for x in (*mods, "total")]
            t.add("measured", [f"{label}, {conv}{MEASURED}", *gmacs, *params, lat.get("cuda"), lat.get("cpu")])
    t.notes.append(f"measured: {eff['width']}x{eff['height']} input (GMACs scale with the pixel count), "
                   f"CPU time with {eff.get('cpu_threads', '?')} thread{'' if eff.get('cpu_threads') == 1 else 's'}, GPU time "
                   f"{'on ' + eff['gpu_name'] if eff.get('gpu_name') else 'not measured (no CUDA device)'}; "
                   f"mean of {eff.get('runs', '?')} runs after {eff.get('warmup', '?')} warm-up; "
                   f"checkpoint {str(eff.get('checkpoint_sha256', '?'))[:12]}")
    return t


def table5(index: dict, dataset: str = "nuscenes") -> Table:
    """Ablations (paper Table 5, nuScenes): mIoU (%), Abs Rel, RMSE, d<1.25 by day and night, one row per
    variant trained on `dataset`. The paper ablates on nuScenes only: for RobotCar ("Table 5b") the
    table holds this run's rows alone, the segmentation against the teacher's top-1 as in Table 3b."""
    day = "day-clear" if dataset == "nuscenes" else "day"
    heads = [f"{s} {h}" for s in (day, "night") for h in ("mIoU", "Abs Rel", "RMSE", "d<1.25")]
    names = "RN real night, SN synthetic night, LE light enhancement, PD day depth distillation"
    if dataset == "nuscenes":
        key, title = "table5", f"Table 5: ablations on nuScenes ({names})"
    else:
        key, title = "table5b", f"Table 5b: ablations on Oxford RobotCar (no paper counterpart; {names})"
    t = Table(key, title, ["Variant", *paper.TABLE5_FLAGS, *heads, "Protocol"],
              [None] * 5 + [2, 3, 3, 3, 2, 3, 3, 3, None])
    flags = {name: present for name, present, _, _ in paper.TABLE5_NUSCENES}
    if dataset == "nuscenes":
        for name, present, d, n in paper.TABLE5_NUSCENES:
            t.add("paper", [name + PAPER, *_flag_cells(present), *d, *n, TABLE5_PAPER_PROTOCOL])
        t.notes.append("paper rows: check marks lost in the paper's text; read as leave-one-out in column order "
                       "(see pipeline/evaluate/paper.py)")
    for variant in sorted({k[0] for k in index if k[1] == dataset}):
        cells, recs = [], [index.get((variant, dataset, split)) for split in ("test_day", "test_night")]
        for r in recs:
            cells += ([_pct(r["seg"]["miou"]), r["depth"]["abs_rel"], r["depth"]["rmse"], r["depth"]["a1"]]
                      if r is not None else [None] * 4)
        refs = sorted({reference_of(r) for r in recs if r is not None})
        t.add("measured", [variant + MEASURED, *_flag_cells(flags.get(variant)), *cells,
                           f"depth {protocols_of(*recs)}; seg {'/'.join(refs)}"])
        t.notes += [source_note(r) for s in ("test_day", "test_night")
                    if (r := index.get((variant, dataset, s))) is not None]
    _mark_unmeasured(t)
    return t


def _flag_cells(present) -> list[str]:
    return ["?"] * 4 if present is None else ["x" if f in present else "" for f in paper.TABLE5_FLAGS]


def _mark_unmeasured(t: Table) -> None:
    if "measured" not in t.kinds:
        t.notes.append(NOT_MEASURED)


def build_tables(records: list[dict], efficiency: dict | None, teacher_records: list[dict] = ()) -> list[Table]:
    """All tables, paper rows and measured rows (the depth teacher's rows in Tables 1-2 when given)."""
    index = index_metrics(records)
    teachers = {(r["dataset"], r["split"]): r for r in teacher_records}
    built = [table1(index, teachers), table2(index, teachers), table3(index, "nuscenes"),
             table3(index, "robotcar"), table3_all_classes(index), table4(efficiency), table5(index, "nuscenes")]
    t5b = table5(index, "robotcar")  # no paper rows: only when this run measured RobotCar
    return built + ([t5b] if "measured" in t5b.kinds else [])


# ----------------------------------------------------------------------------- rendering
def fmt(value, digits: int | None) -> str:
    """A cell as text: None -> "-", numbers with `digits` decimals."""
    if value is None:
        return "-"
    if digits is None or isinstance(value, str):
        return str(value)
    return f"{float(value):.{digits}f}"


def to_markdown(tables: list[Table], header: str = "") -> str:
    out = [header] if header else []
    for t in tables:
        out += [f"## {t.title}", "", "| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
        out += ["| " + " | ".join(fmt(v, d) for v, d in zip(row, t.digits)) + " |" for row in t.rows]
        out += [""] + [f"- {n}" for n in t.notes] + [""]
    return "\n".join(out)


def to_csv(tables: list[Table]) -> str:
    """Long format: table, kind, row (its text cells), column, value (numbers unrounded)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "kind", "row", "column", "value"])
    for t in tables:
        for kind, row in zip(t.kinds, t.rows):
            label = " | ".join(str(v) for v, d in zip(row, t.digits) if d is None)
            for col, v, d in zip(t.columns, row, t.digits):
                if d is not None:
                    w.writerow([t.key, kind, label, col, "" if v is None else repr(float(v))])
        if not t.rows or "measured" not in t.kinds:
            w.writerow([t.key, "note", NOT_MEASURED, "", ""])
    return buf.getvalue()


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(c, c) for c in str(text))


def to_latex(tables: list[Table]) -> str:
    """One booktabs `table` per Table; notes as a footnotesize paragraph."""
    out = ["% generated by `python -m pipeline eval-tables`; needs \\usepackage{booktabs}"]
    for t in tables:
        spec = "".join("l" if d is None else "r" for d in t.digits)
        out += ["\\begin{table}[t]", "\\centering", "\\scriptsize", f"\\caption{{{tex_escape(t.title)}}}",
                f"\\label{{tab:{t.key}}}", "\\resizebox{\\linewidth}{!}{%", f"\\begin{{tabular}}{{{spec}}}",
                "\\toprule", " & ".join(tex_escape(c) for c in t.columns) + " \\\\", "\\midrule"]
        out += [" & ".join(tex_escape(fmt(v, d)) for v, d in zip(row, t.digits)) + " \\\\" for row in t.rows]
        out += ["\\bottomrule", "\\end{tabular}}"]
        if t.notes:
            out.append("\\par\\footnotesize " + " \\\\ ".join(tex_escape(n) for n in t.notes))
        out += ["\\end{table}", ""]
    return "\n".join(out)


_HTML_STYLE = """body{font-family:sans-serif;font-size:13px;margin:12px;color:#111}
table{border-collapse:collapse;margin:6px 0 4px}th,td{border:1px solid #bbb;padding:2px 6px}
th{background:#e8eef5}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.measured td{background:#fff4d6}ul.notes{font-size:11px;color:#444;margin-top:2px}"""


def _html_inline(text: str) -> str:
    """One line of the Markdown header as HTML: escaped, **bold** kept."""
    import html
    import re

    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


def to_html(tables: list[Table], header: str = "") -> str:
    """A standalone HTML page (the report's view of the tables): one <table> per Table, measured rows
    shaded (class "measured"), numbers right-aligned, notes below each table."""
    import html

    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8"><title>DepthSegNet24 tables</title>',
           f"<style>{_HTML_STYLE}</style></head><body>"]
    for line in header.splitlines():
        if line.startswith("# "):
            out.append(f"<h1>{_html_inline(line[2:])}</h1>")
        elif line.strip():
            out.append(f"<p>{_html_inline(line)}</p>")
    for t in tables:
        out += [f'<h2 id="{html.escape(t.key)}">{html.escape(t.title)}</h2>', f'<table data-key="{html.escape(t.key)}">',
                "<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in t.columns) + "</tr></thead><tbody>"]
        for kind, row in zip(t.kinds, t.rows):
            cells = "".join(f'<td class="num">{html.escape(fmt(v, d))}</td>' if d is not None
                            else f"<td>{html.escape(fmt(v, d))}</td>" for v, d in zip(row, t.digits))
            out.append(f'<tr class="{html.escape(kind)}">{cells}</tr>')
        out.append("</tbody></table>")
        if t.notes:
            out.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in t.notes) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_tables(tables: list[Table], md, csv_path, tex, header: str = "", html=None) -> dict[str, Path]:
    """The tables as Markdown (`md`), CSV (`csv_path`), LaTeX (`tex`) and, if `html` is given, an HTML
    page, each written atomically."""
    paths = {"md": Path(md), "csv": Path(csv_path), "tex": Path(tex)}
    write_text(paths["md"], to_markdown(tables, header))
    write_text(paths["csv"], to_csv(tables))
    write_text(paths["tex"], to_latex(tables))
    if html is not None:
        paths["html"] = write_text(html, to_html(tables, header))
    return paths


def header_text(records: list[dict]) -> str:
    """Top of tables.md: what the rows mean and whether the data are the synthetic demo."""
    lines = ["# DepthSegNet24: paper tables and this run's measurements", "",
             'Rows marked "(paper)" are the numbers printed in the paper; rows marked "(measured, this run)" '
             "were computed by this pipeline on the data named under each table."]
    if any(r.get("synthetic_demo") for r in records):
        lines.append("**The measured rows come from the embedded SYNTHETIC DEMO (small rendered scenes, tiny "
                     "training budget): they show that the pipeline runs end to end, they are not comparable "
                     "to the paper's numbers.**")
    return "\n".join(lines + [""])
