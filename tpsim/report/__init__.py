"""Results as text and JSON: predict and infer (render, step), the search (search), Chrome
traces (trace), the topology field reference (schema_docs)."""
