"""One layer as data: typed ops (ops), templates of their structure (template), the layer's
sizes (dims), its linears, attention, MLP and ends (linears, graph, embedding), activation
recomputation (recompute) and the serving layer (infer_graph)."""
