//! p4lb's software P4Runtime target: executes the p4lb.p4 pipeline between Linux interfaces.
