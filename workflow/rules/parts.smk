# Stages split over several jobs (config key jobs_per_split): rule assemble_parts joins the parts of a
# split into its store, hard-linking their shard files (no data is copied or read) and writing the attrs
# from the parts' digests. With every jobs_per_split value 1 the rule does not exist: each stage
# writes its store itself.


if parted_stages():

    localrules:
        assemble_parts,

    rule assemble_parts:
        input:
            parts_of,
        output:
            directory(f"{R}/{{ds}}/{{stage}}/{{split}}.zarr"),
        log:
            f"{R}/logs/assemble_parts/{{ds}}_{{stage}}_{{split}}.log",
        benchmark:
            f"{R}/benchmarks/assemble_parts/{{ds}}_{{stage}}_{{split}}.tsv"
        wildcard_constraints:
            stage="|".join(parted_stages()),
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=retry_mem(2000),
            runtime=30,
        params:
            code=code_digest("assemble"),
        shell:
            "python -m pipeline assemble --parts {input} --out {output} > {log} 2>&1"
