"""Drawing the report: figures and the colour palette."""
