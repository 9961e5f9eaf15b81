# report: the robustness tables, curves and tidy results over the whole grid.


rule report:
    input:
        scores=expand(
            "results/scores/{model}/{condition}.csv",
            model=MODELS,
            condition=CONDITIONS,
        ),
        code=code(
            "data/__init__.py",
            "data/store.py",
            "corruption/__init__.py",
            "corruption/conditions.py",
            "corruption/masks.py",
            "evaluation/__init__.py",
            "evaluation/plots.py",
            "evaluation/report.py",
            "evaluation/robustness.py",
            "tracking",
        ),
    output:
        directory(REPORT),
        f"results/robustness/{DATASET}.json",
    log:
        "logs/report.log",
    conda:
        "../envs/robustmer.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=lambda w: {
            "dataset": DATASET,
            "models": config["models"],
            "conditions": config["corrupt"]["conditions"],
            "seeds": config["train"]["seeds"],
            "report": config["report"],
            "mlflow": config["mlflow"],
        },
    shell:
        "robustmer report > {log} 2>&1"
