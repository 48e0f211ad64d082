# The provenance of the paper's tables, for the report: every file they were made from, back to the
# pipeline's inputs (digests, config values, code digests, times), from Snakemake's own records.
# Its output depends on more than its declared inputs: it reads (never writes) Snakemake's records under
# .snakemake/metadata and the digests of every upstream file. They cannot be declared (the chain is known
# only once it ran); when anything upstream re-runs the tables are re-made, so this rule re-runs too.
# A leaf: nothing consumes provenance.md. Local on a cluster: a second's work beside .snakemake.


rule provenance:
    input:
        tables=tables_outputs(),
    output:
        report_item(
            f"{R}/tables/provenance.md",
            caption="../report/provenance.rst",
            category="evaluation",
        ),
    log:
        f"{R}/logs/provenance.log",
    benchmark:
        f"{R}/benchmarks/provenance.tsv"
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=retry_mem(2000),
        runtime=10,
    params:
        code=code_digest("provenance"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline provenance {input.tables} --markdown --out {output}"
        " > {log} 2>&1"
