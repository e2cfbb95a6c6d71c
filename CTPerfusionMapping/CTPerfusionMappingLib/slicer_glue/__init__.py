"""The CTPerfusionMapping Slicer module's pure-Python half: the Logic's request (its keywords and checks), the child's
command line, batch arguments, and the lung segments of the results. Nothing here imports Slicer (the module file
passes its nodes in)."""
