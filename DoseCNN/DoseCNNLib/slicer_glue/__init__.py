"""The DoseCNN Slicer module's pure-Python half: the Logic's request (its keywords and checks), child command lines
and the time-point manifest, batch arguments, results to nodes, self-test data. Nothing here imports Slicer (the
module file passes its nodes in)."""
