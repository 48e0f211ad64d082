# Stage 4: the student (DepthSegNet24), one per dataset. One process, or torchrun DDP with train.gpus > 1
# (srun + torchrun on train.nodes > 1 nodes, SLURM).


rule train_student:
    input:
        unpack(train_shards),
        pretrained=imagenet_weights(),
    output:
        checkpoint=f"{R}/train/{{ds}}/{{variant}}/checkpoints/last.pt",
        # the TensorBoard event files (training curves); a re-run of a killed job restarts them at the
        # resumed step (Snakemake clears outputs before a job runs; the resumable state is not an output)
        tensorboard=directory(f"{R}/train/{{ds}}/{{variant}}/tensorboard"),
    log:
        f"{R}/logs/train/{{ds}}_{{variant}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{ds}}_{{variant}}.tsv"
    priority: chain_priority(15)  # RobotCar's first
    conda:
        ENV
    threads: student_threads()
    resources:
        # one task (torchrun) holding all N GPUs, not N tasks; train.nodes > 1: one such task per node
        **student_resources(),
        mem_mb=retry_mem(24000),
        runtime=72 * 60,
    params:
        shards=lambda w: json.dumps({w.ds: train_shards(w)}),
        settings=train_settings,
        state_dir=lambda w: state_dir("train_student", w.ds, w.variant),
        launcher=launcher,
        device=config["device"],
        code=code_digest("train"),
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} -m pipeline train --shards '{params.shards}'"
        " --out {output.checkpoint} --log-dir {output.tensorboard} --state-dir {params.state_dir}"
        " --settings '{params.settings}' --device {params.device} > {log} 2>&1"
