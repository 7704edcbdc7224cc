"""Device simulators for test rigs: real protocols over pseudo-terminals and TCP."""
