//! The pipeline compiler: Azure Pipelines YAML to a spanned tree, the document model, template expansion and the plan, with diagnostics. Pure: strings in, plan plus diagnostics out.
