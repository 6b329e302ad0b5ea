"""Pipeline stages, one package each (config, Beam-free cores, stage wiring)."""
