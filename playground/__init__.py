"""GPT Playground's web UI: one module per tab, the job registry, the chart builders. No model math here."""
