"""The DoseCNN Slicer module's pure-Python half: choices and child command lines, batch arguments, results to
nodes, self-test data. Nothing here imports Slicer (the module file passes its nodes in)."""
