"""What a person looks at: matplotlib figures (``plots``) and TensorBoard views
(``tensorboard``: the training-time ``SpikeActivity`` callback and the simulation views)."""
