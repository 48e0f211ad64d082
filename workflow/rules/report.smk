# The report's own figures (snakemake --report): a preview panel per shard kind, training curves.


rule preview_panels:
    input:
        unpack(preview_shards),
    output:
        **{
            kind: report_item(
                preview_path("{ds}", kind),
                [preview_path(ds, kind) for ds in enabled_datasets()],
                caption="../report/preview.rst",
                category=category,
                subcategory="shard previews",
                labels={"dataset": "{ds}", "shard": kind, "split": split},
            )
            for kind, (split, category) in PREVIEW_KINDS.items()
        },
    log:
        f"{R}/logs/preview_panels/{{ds}}.log",
    benchmark:
        f"{R}/benchmarks/preview_panels/{{ds}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=retry_mem(2000),
        runtime=10,
    params:
        code=code_digest("preview-panels"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline preview-panels"
        " --shards {input.frames} {input.synth} {input.seg_teacher} {input.depth_teacher} {input.gt_depth}"
        " --frames {input.frames} {input.frames} {input.frames} {input.frames} {input.test_frames}"
        " --outs {output.frames} {output.synth} {output.seg_teacher} {output.depth_teacher} {output.gt_depth}"
        " > {log} 2>&1"


rule student_curves:
    input:
        f"{R}/train/{{ds}}/{{variant}}/tensorboard",
    output:
        report_item(
            student_curves_path("{ds}", "{variant}"),
            [
                student_curves_path(ds, v)
                for ds in train_datasets()
                for v in variants()
            ],
            caption="../report/student_curves.rst",
            category="student",
            subcategory="training curves",
            labels={"dataset": "{ds}", "variant": "{variant}"},
        ),
    log:
        f"{R}/logs/student_curves/{{ds}}_{{variant}}.log",
    benchmark:
        f"{R}/benchmarks/student_curves/{{ds}}_{{variant}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=retry_mem(2000),
        runtime=10,
    params:
        title=lambda w: f"student {w.ds}, variant {w.variant}: epoch means of the loss terms (eq. 18)",
        code=code_digest("curves"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline curves --log-dir {input} --title '{params.title}'"
        " --out {output} > {log} 2>&1"


rule teacher_curves:
    input:
        f"{R}/{{ds}}/{{teacher}}/tensorboard",
    output:
        report_item(
            teacher_curves_path("{teacher}", "{ds}"),
            [
                teacher_curves_path(t, ds)
                for t in trained_teachers()
                for ds in enabled_datasets()
            ],
            caption="../report/teacher_curves.rst",
            category="teachers",
            subcategory="training curves",
            labels={"teacher": "{teacher}", "dataset": "{ds}"},
        ),
    log:
        f"{R}/logs/teacher_curves/{{teacher}}_{{ds}}.log",
    benchmark:
        f"{R}/benchmarks/teacher_curves/{{teacher}}_{{ds}}.tsv"
    wildcard_constraints:
        teacher="cyclegan|depth_teacher",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=retry_mem(2000),
        runtime=10,
    params:
        title=lambda w: f"{w.teacher} teacher, {w.ds}: epoch means of the loss terms",
        code=code_digest("curves"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline curves --log-dir {input} --title '{params.title}'"
        " --out {output} > {log} 2>&1"
