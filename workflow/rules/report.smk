# report: tables and plots over every model's metrics.


rule report:
    input:
        metrics=expand("results/metrics/{model}.json", model=MODELS),
        code=code("evaluation/report.py", "evaluation/plots.py"),
    output:
        directory("results/report"),
    log:
        "logs/report.log",
    conda:
        "../envs/robustmer.yaml"
    params:
        settings=lambda w: config["models"],
    shell:
        "robustmer report > {log} 2>&1"
