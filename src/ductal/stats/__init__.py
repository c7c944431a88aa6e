"""Pure statistics on arrays and DataFrames; results agree with R and name their method."""
