# report: the robustness tables, curves and tidy results over the whole grid.


rule report:
    input:
        scores=lambda w: expand(
            "results/{dataset}/scores/{model}/{condition}.csv",
            dataset=w.dataset,
            model=MODELS,
            condition=CONDITIONS,
        ),
        code=code("report"),
    output:
        directory(REPORT),
        "results/{dataset}/robustness.json",
    log:
        "logs/report/{dataset}.log",
    conda:
        "../envs/robustmer.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=lambda w: {
            "models": config["models"],
            "conditions": config["corrupt"]["conditions"],
            "seeds": config["train"]["seeds"],
            "report": config["report"],
            "protocol": config["protocol"],
            "mlflow": config["mlflow"],
        },
    shell:
        "robustmer report --dataset {wildcards.dataset} > {log} 2>&1"


# cross_corpus: models of one dataset scored on another through shared classes (docs/datasets.md).
rule cross_corpus:
    input:
        train=lambda w: f"data/features/{CROSS[w.cross]['train']}",
        test=lambda w: f"data/features/{CROSS[w.cross]['test']}",
        conditions=lambda w: [
            f"data/corrupted/{CROSS[w.cross]['test']}/{c}"
            for c in CROSS[w.cross].get("conditions", ["clean"])
        ],
        models=lambda w: [
            f"models/{CROSS[w.cross]['train']}/{m}" for m in CROSS[w.cross]["models"]
        ],
        code=code("cross_corpus"),
    output:
        directory("results/cross_corpus/{cross}"),
        metrics="results/cross_corpus/{cross}.json",
    log:
        "logs/cross_corpus/{cross}.log",
    conda:
        "../envs/robustmer.yaml"
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
            "models": {m: config["models"][m] for m in CROSS[w.cross]["models"]},
            "mlflow": config["mlflow"],
            "label_maps": config["cross_corpus"]["label_maps"],
            "evaluation": CROSS[w.cross],
        },
    shell:
        "robustmer cross-corpus {wildcards.cross} > {log} 2>&1"
