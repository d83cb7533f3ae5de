from dlp.domain.model import FAIL, P_EXPORT, P_PIPELINES, PASS, UNKNOWN, Registry
from dlp.domain.rules.base import LEARN_DLP, LEARN_TRANSFER, Rule, Verdict, register


@register
class ExportPipelines(Rule):
    id = "DLP.ACR.ExportPipelines"
    severity = "high"
    synopsis = "No export pipeline may exist: it moves artifacts out, and it stops exports from being disabled."
    recommendation = ("Delete the registry's export pipelines (az acr export-pipeline delete, from the acrtransfer extension), "
                      "then disable exports. "
                      "The responder never deletes a pipeline itself.")
    links = (LEARN_DLP, LEARN_TRANSFER)
    skus = ("Premium",)
    reads = (P_EXPORT, P_PIPELINES)

    def check(self, registry: Registry) -> Verdict:
        if registry.export_pipelines:      # first: a template may declare pipelines next to disabled exports
            return Verdict(FAIL, f"export pipeline(s) {', '.join(registry.export_pipelines)} exist; none may exist")
        if registry.exports_disabled:
            return Verdict(PASS, "exportPolicy.status is disabled, so no export pipeline can exist")
        if registry.export_pipelines is None:
            return Verdict(UNKNOWN, "export pipelines were not listed (offline input without exportPipelines resources)")
        return Verdict(PASS, "no export pipeline exists")
