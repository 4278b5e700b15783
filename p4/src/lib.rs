//! The p4lb P4 program (p4lb.p4) and its P4Info, with the names and IDs the rest of p4lb binds to.
