"""One module per pipeline stage: reads its inputs, calls the methods, returns its artifact."""
