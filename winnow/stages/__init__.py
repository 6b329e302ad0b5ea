"""One package per pipeline stage: config, Beam-free cores, and the stage wiring."""
