# Stage 5: evaluation (depth protocol per dataset, eval.protocol; confusion-matrix mIoU), efficiency, the paper's tables.


rule evaluate:
    input:
        checkpoint=f"{R}/train/{{ds}}/{{variant}}/checkpoints/last.pt",
        frames=f"{R}/{{ds}}/frames/{{split}}.zarr",
        gt=f"{R}/{{ds}}/gt_depth/{{split}}.zarr",
        seg_teacher=f"{R}/{{ds}}/seg_teacher/{{split}}.zarr",
    output:
        metrics=f"{R}/eval/{{variant}}/{{ds}}_{{split}}.json",
        predictions=f"{R}/eval/{{variant}}/{{ds}}_{{split}}.h5",
    log:
        f"{R}/logs/evaluate/{{variant}}_{{ds}}_{{split}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{variant}}_{{ds}}_{{split}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources(1),
        mem_mb=retry_mem(8000),
        runtime=120,
    params:
        max_depth=lambda w: ds_cfg(w.ds)["max_depth"],
        protocol=lambda w: config["eval"]["protocol"][w.ds],
        batch_size=config["eval"]["batch_size"],
        device=config["device"],
        code=code_digest("evaluate"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline evaluate --checkpoint {input.checkpoint} --frames {input.frames} --gt {input.gt}"
        " --seg-teacher {input.seg_teacher} --dataset {wildcards.ds} --split {wildcards.split}"
        " --max-depth {params.max_depth} --protocol {params.protocol} --batch-size {params.batch_size}"
        " --device {params.device} --out {output.metrics} --predictions {output.predictions} > {log} 2>&1"


rule evaluate_depth_teacher:
    input:
        weights=depth_weights,
        frames=f"{R}/{{ds}}/frames/{{split}}.zarr",
        gt=f"{R}/{{ds}}/gt_depth/{{split}}.zarr",
    output:
        f"{R}/eval/teachers/depth_{{ds}}_{{split}}.json",
    log:
        f"{R}/logs/evaluate_depth_teacher/{{ds}}_{{split}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate_depth_teacher/{{ds}}_{{split}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources(1),
        mem_mb=retry_mem(8000),
        runtime=60,
    params:
        c=config["depth_teacher"],
        max_depth=lambda w: ds_cfg(w.ds)["max_depth"],
        protocol=lambda w: config["eval"]["protocol"][w.ds],
        batch_size=config["eval"]["batch_size"],
        device=config["device"],
        code=code_digest("evaluate-depth-teacher"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline evaluate-depth-teacher --weights {input.weights} --frames {input.frames}"
        " --gt {input.gt} --dataset {wildcards.ds} --split {wildcards.split} --max-depth {params.max_depth}"
        " --teacher-min-depth {params.c[min_depth]} --teacher-max-depth {params.c[max_depth]}"
        " --protocol {params.protocol} --batch-size {params.batch_size} --device {params.device}"
        " --out {output} > {log} 2>&1"


rule efficiency:
    input:
        checkpoint=lambda w: checkpoint_path(train_datasets()[0], main_variant()),
    output:
        f"{R}/eval/efficiency.json",
    log:
        f"{R}/logs/efficiency.log",
    benchmark:
        f"{R}/benchmarks/efficiency.tsv"
    conda:
        ENV
    threads: local_threads(2)  # 1 on 2 cores: it runs beside the other student instead of after both
    resources:
        **gpu_resources(1),
        mem_mb=retry_mem(8000),
        runtime=30,
    params:
        width=config["model"]["width"],
        height=config["model"]["height"],
        device=config["device"],
        code=code_digest("efficiency"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline efficiency --checkpoint {input.checkpoint} --width {params.width}"
        " --height {params.height} --device {params.device} --out {output} > {log} 2>&1"


rule eval_tables_files:
    input:
        metrics=[metrics_path(v, ds, s) for v in variants() for ds, s in eval_cases(v)],
        predictions=[
            metrics_path(v, ds, s)[: -len(".json")] + ".h5"
            for v in variants()
            for ds, s in eval_cases(v)
        ],
        frames=[
            f"{R}/{ds}/frames/{s}.zarr" for v in variants() for ds, s in eval_cases(v)
        ],
        efficiency=f"{R}/eval/efficiency.json",
        teacher=[
            f"{R}/eval/teachers/depth_{ds}_{split}.json"
            for ds in train_datasets()
            for split in TEST_SPLITS
        ],
    output:
        md=f"{R}/tables/tables.md",
        csv=f"{R}/tables/tables.csv",
        tex=f"{R}/tables/tables.tex",
        html=tables_report_item(f"{R}/tables/tables.html", "../report/tables.rst"),
        figures=figure_report_items(),
    log:
        f"{R}/logs/eval_tables.log",
    benchmark:
        f"{R}/benchmarks/eval_tables.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=retry_mem(4000),
        runtime=30,
    params:
        code=code_digest("eval-tables"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline eval-tables --metrics {input.metrics} --predictions {input.predictions}"
        " --frames {input.frames} --efficiency {input.efficiency} --teacher-metrics {input.teacher}"
        " --md {output.md} --csv {output.csv} --tex {output.tex} --html {output.html} --figures {output.figures}"
        " > {log} 2>&1"
