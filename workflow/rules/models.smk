# corrupt (one job per condition), tune, pretrain and train (one per model), evaluate (one per
# model x condition).


rule corrupt:
    input:
        raw=RAW,
        features=FEATURES,
        validated=VALIDATION_SUMMARY,
        code=code("corrupt"),
    output:
        directory(f"{CORRUPTED}/{{condition}}"),
    log:
        "logs/corrupt/{dataset}/{condition}.log",
    conda:
        "../envs/robustmer.yaml"
    threads: config["corrupt"]["workers"]
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        settings=lambda w: {
            "seed": config["seed"],
            "device": config["device"],
            "extract": config["extract"],
            "workers": config["corrupt"]["workers"],
            "condition": config["corrupt"]["conditions"][w.condition],
        },
    shell:
        "robustmer corrupt {wildcards.condition} --dataset {wildcards.dataset} > {log} 2>&1"


rule tune:
    input:
        features=FEATURES,
        validated=VALIDATION_SUMMARY,
        code=code("tune"),
    output:
        tuned="tuned/{dataset}/{model}.yaml",
        study=directory("models/{dataset}/{model}.tune"),
    log:
        "logs/tune/{dataset}/{model}.log",
    conda:
        "../envs/robustmer.yaml"
    threads: lambda w: threads_of(w.model)
    resources:
        mem_mb=4000,
        runtime=720,
        gpu=lambda w: local_gpus(),
    params:
        settings=lambda w: {
            "seed": config["seed"],
            "protocol": config["protocol"],
            "device": config["device"],
            "cv": config["cv"],
            "train": config["train"],
            "model": config["models"][w.model],
            "tune": config["tune"],
            "mlflow": config["mlflow"],
        },
    shell:
        "robustmer tune {wildcards.model} --dataset {wildcards.dataset} > {log} 2>&1"


rule pretrain:
    input:
        features=FEATURES,
        validated=VALIDATION_SUMMARY,
        tuned="tuned/{dataset}/{model}.yaml",
        code=code("pretrain"),
    output:
        directory("models/{dataset}/{model}.pretrain"),
    log:
        "logs/pretrain/{dataset}/{model}.log",
    conda:
        "../envs/robustmer.yaml"
    threads: lambda w: threads_of(w.model, "pretrain")
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=lambda w: local_gpus(),
    params:
        settings=lambda w: {
            "seed": config["seed"],
            "protocol": config["protocol"],
            "device": config["device"],
            "cv": config["cv"],
            "train": config["train"],
            "model": config["models"][w.model],
            "mlflow": config["mlflow"],
        },
    shell:
        "robustmer pretrain {wildcards.model} --dataset {wildcards.dataset} > {log} 2>&1"


rule train:
    input:
        features=FEATURES,
        validated=VALIDATION_SUMMARY,
        pretrained="models/{dataset}/{model}.pretrain",
        tuned="tuned/{dataset}/{model}.yaml",
        code=code("train"),
    output:
        directory("models/{dataset}/{model}"),
    log:
        "logs/train/{dataset}/{model}.log",
    conda:
        "../envs/robustmer.yaml"
    threads: lambda w: threads_of(w.model)
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=lambda w: local_gpus(),
    params:
        settings=lambda w: {
            "seed": config["seed"],
            "protocol": config["protocol"],
            "device": config["device"],
            "cv": config["cv"],
            "train": config["train"],
            "model": config["models"][w.model],
            "mlflow": config["mlflow"],
        },
    shell:
        "robustmer train {wildcards.model} --dataset {wildcards.dataset} > {log} 2>&1"


rule evaluate:
    input:
        features=FEATURES,
        condition=f"{CORRUPTED}/{{condition}}",
        model="models/{dataset}/{model}",
        code=code("evaluate"),
    output:
        metrics="results/{dataset}/metrics/{model}/{condition}.json",
        scores="results/{dataset}/scores/{model}/{condition}.csv",
        predictions="results/{dataset}/predictions/{condition}/{model}.csv",
        confusion="results/{dataset}/plots/{condition}/{model}_confusion.png",
        confusion_table="results/{dataset}/plots/{condition}/{model}_confusion.csv",
    log:
        "logs/evaluate/{dataset}/{model}/{condition}.log",
    conda:
        "../envs/robustmer.yaml"
    # The cell's (seed, fold) units predict in train.workers processes, as training does.
    threads: lambda w: threads_of(w.model)
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=lambda w: {
            "seed": config["seed"],
            "protocol": config["protocol"],
            "device": config["device"],
            "cv": config["cv"],
            "train": config["train"],
            "model": config["models"][w.model],
            "mlflow": config["mlflow"],
        },
    shell:
        "robustmer evaluate {wildcards.model} {wildcards.condition} --dataset {wildcards.dataset} "
        "> {log} 2>&1"
