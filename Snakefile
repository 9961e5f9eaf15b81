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
        VALIDATION_SUMMARY,
        expand(
            "results/metrics/{model}/{condition}.json",
            model=MODELS,
            condition=CONDITIONS,
        ),
        REPORT,
