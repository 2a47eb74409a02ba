"""What the user asks: the model (model, its presets in models/, Hugging Face configs in
hf_config), the training precisions (precision), process groups in Megatron rank order
(parallel). Imports only tpsim.base."""
