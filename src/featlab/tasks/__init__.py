"""The four LightningModules; each file wires nets, losses and metrics that live elsewhere."""
