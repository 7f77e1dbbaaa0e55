"""What the frameworks do differently, shown: the traps measured, naive ports, side-by-side
layers, generated source, and the seeds checker with the architecture reading behind it."""
