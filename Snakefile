# The pipeline for Snakemake: the same stages, commands, params.yaml and outputs as dvc.yaml.
# Run: snakemake --cores 2  (the default profile in workflow/profiles/default is picked up).


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        expand(VALIDATION_SUMMARY, dataset=DATASETS),
        expand(
            "results/{dataset}/metrics/{model}/{condition}.json",
            dataset=DATASETS,
            model=MODELS,
            condition=CONDITIONS,
        ),
        expand(REPORT, dataset=DATASETS),
        expand("results/cross_corpus/{cross}.json", cross=CROSS),


# Once, before any job: create the MLflow store and experiment, so parallel jobs only log to it
# (and a bad tracking URI fails here, not after training). See docs/workflows.md.
onstart:
    shell("robustmer track-init")
