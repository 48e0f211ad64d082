# DepthSegNet24 pipeline. Targets:
#   snakemake --cores 2 frames        splits, frames and ground-truth shards of every enabled dataset
#   snakemake --cores 2 teachers      CycleGAN translations, Mask2Former and Monodepth2 pseudo-labels
#   snakemake --cores 2 train         one student per dataset (variant `full`)
#   snakemake --cores 2 train_ablation  every variant of train.variants (Table 5)
#   snakemake --cores 2 eval_tables   evaluate and write the paper's tables (default target)
#   snakemake --report results/report.html   the HTML report of what has been made (README: Report)
# Overlay the paper's settings: --configfile workflow/configs/paper.yaml

from snakemake.utils import min_version

min_version("9")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    ds="nuscenes|robotcar",
    split="|".join(SPLITS),
    variant="[A-Za-z0-9_]+",
    part=r"\d+",


include: "workflow/rules/data.smk"
include: "workflow/rules/synth.smk"
include: "workflow/rules/teachers.smk"
include: "workflow/rules/parts.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/provenance.smk"
include: "workflow/rules/report.smk"


onsuccess:
    drop_rescheduling_timers()


onerror:
    drop_rescheduling_timers()


rule all:
    default_target: True
    input:
        tables_outputs(),
        f"{R}/tables/provenance.md",
        report_outputs(),


rule frames:
    input:
        frames_outputs(),


rule teachers:
    input:
        teacher_outputs(),


rule train:
    input:
        [checkpoint_path(ds, "full") for ds in train_datasets()],


rule train_ablation:
    input:
        [checkpoint_path(ds, v) for ds in train_datasets() for v in variants()],


rule eval_tables:
    input:
        tables_outputs(),
        f"{R}/tables/provenance.md",
        report_outputs(),
