"""Study protocols as data: the model, the YAML loader and the rule language."""
