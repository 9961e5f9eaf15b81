# acquire -> extract -> validate: from the corpus to a validated feature store.


rule acquire:
    input:
        code=code("data/acquire.py", "data/builtin"),
    output:
        directory(RAW),
    params:
        settings=lambda w: {
            "seed": config["seed"],
            "dataset": DATASET,
            "acquire": config["acquire"],
        },
    log:
        "logs/acquire.log",
    conda:
        "../envs/robustmer.yaml"
    shell:
        "robustmer acquire > {log} 2>&1"


rule extract:
    input:
        raw=RAW,
        code=code("features", "data/store.py"),
    output:
        directory(FEATURES),
    params:
        settings=lambda w: {"device": config["device"], "extract": config["extract"]},
    threads: config["extract"]["workers"]
    log:
        "logs/extract.log",
    conda:
        "../envs/robustmer.yaml"
    shell:
        "robustmer extract > {log} 2>&1"


rule validate:
    input:
        features=FEATURES,
        code=code("validation"),
    output:
        summary=VALIDATION_SUMMARY,
        docs=directory(DATA_DOCS),
    params:
        settings=lambda w: config["validate"],
    log:
        "logs/validate.log",
    conda:
        "../envs/robustmer.yaml"
    shell:
        "robustmer validate > {log} 2>&1"
