# acquire -> extract -> validate: from the corpus to a validated feature store.


rule acquire:
    input:
        code=code("acquire"),
    output:
        directory(RAW),
    log:
        "logs/acquire/{dataset}.log",
    conda:
        "../envs/robustmer.yaml"
    threads: config["extract"]["workers"]
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        settings=lambda w: {
            "seed": config["seed"],
            "protocol": config["protocol"],
            "acquire": config["acquire"],
        },
    shell:
        "robustmer acquire {wildcards.dataset} > {log} 2>&1"


rule extract:
    input:
        raw=RAW,
        code=code("extract"),
    output:
        directory(FEATURES),
    log:
        "logs/extract/{dataset}.log",
    conda:
        "../envs/robustmer.yaml"
    threads: config["extract"]["workers"]
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        # What changes the store; workers and the per-item cache (data/cache/features/, not an
        # output, so a rerun reads it back) do not, as in dvc.yaml.
        settings=lambda w: {
            "device": config["device"],
            "extract": {
                k: v
                for k, v in config["extract"].items()
                if k not in ("workers", "cache", "cache_dir")
            },
        },
    shell:
        "robustmer extract --dataset {wildcards.dataset} > {log} 2>&1"


rule validate:
    input:
        features=FEATURES,
        code=code("validate"),
    output:
        summary=VALIDATION_SUMMARY,
        docs=directory(DATA_DOCS),
    log:
        "logs/validate/{dataset}.log",
    conda:
        "../envs/robustmer.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        settings=lambda w: config["validate"],
    shell:
        "robustmer validate --dataset {wildcards.dataset} > {log} 2>&1"
