"""Breaking a running flow at a chosen point: faults, fault points, profiles and the harness."""
