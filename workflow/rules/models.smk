# train -> evaluate, one job per model in params.yaml `models`.


rule train:
    input:
        features=FEATURES,
        validated=VALIDATION_SUMMARY,
        code=code("models", "training", "tracking"),
    output:
        directory("models/{model}"),
    log:
        "logs/train/{model}.log",
    conda:
        "../envs/robustmer.yaml"
    threads: config["train"]["num_threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        settings=lambda w: {
            "seed": config["seed"],
            "device": config["device"],
            "cv": config["cv"],
            "train": config["train"],
            "model": config["models"][w.model],
            "mlflow": config["mlflow"],
        },
    shell:
        "robustmer train {wildcards.model} > {log} 2>&1"


rule evaluate:
    input:
        features=FEATURES,
        model="models/{model}",
        code=code("evaluation", "models", "training", "tracking"),
    output:
        metrics="results/metrics/{model}.json",
        predictions="results/predictions/{model}.csv",
        confusion="results/plots/{model}_confusion.png",
        confusion_table="results/plots/{model}_confusion.csv",
    log:
        "logs/evaluate/{model}.log",
    conda:
        "../envs/robustmer.yaml"
    params:
        settings=lambda w: {
            "seed": config["seed"],
            "device": config["device"],
            "cv": config["cv"],
            "model": config["models"][w.model],
            "mlflow": config["mlflow"],
        },
    shell:
        "robustmer evaluate {wildcards.model} > {log} 2>&1"
